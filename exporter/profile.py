"""Reference profiles: what the training data looked like, saved once as JSON.

A profile holds, per watched feature, everything drift needs later without the training data:
bin edges from the reference alone, the reference share per bin, moments, the missing rate and a
sorted sample for KS. The model's predictions on the reference rows are profiled the same way
(``output``, exported under :data:`OUTPUT`) so output drift uses the same machinery as input drift.
The true labels of those rows, when known, are profiled apart (``labels``): output drift compares
live predictions with predictions, never with labels, whose distribution an imperfect model does
not reproduce.

A profile built with ``segment_by`` also holds ``segments``: per value of a context feature (the
hour of the day, the weekday), the share of each bin of every other feature and of the output on
that value's rows alone. A model with a daily cycle is then compared, each hour, with what that
hour looked like in the reference instead of with the mix of all hours (see
:mod:`exporter.segments` and docs/metrics.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from exporter import stats

# Re-exported: the profile keys categories as the monitor judges them.
from exporter.coerce import category_key as category_key
from exporter.errors import ExporterError
from exporter.text import has_lone_surrogate

#: Version of the JSON layout; bumped when a reader of the old layout would misread the new one.
#: ``labels`` and ``segments`` were added without a bump: each is optional and left out of the file
#: when absent, so a file without them is exactly the layout every reader of version 1 reads (a
#: reader older than them refuses a file that has them, as an unknown field: it never misreads it).
SCHEMA_VERSION = 1
#: Bucket for categories outside the top-K (and classes beyond ``max_classes``).
OTHER = "__other__"
#: Feature name under which the model's output is profiled and exported.
OUTPUT = "__prediction__"
#: How many categories seen in training, beyond the top-K, the profile remembers so that a value
#: never seen in training can be told from a rare one. Past this the vocabulary is marked
#: incomplete and unseen values simply go to ``__other__``.
MAX_KNOWN_CATEGORIES = 10_000
#: Tolerance for reference shares summing to 1 after a JSON round trip.
_SHARE_SUM_TOLERANCE = 1e-6
#: Upper bounds of ``bins`` and ``top_k``: each bin or category is a series per feature, and a
#: typo such as ``--bins 100000000`` would otherwise run until memory runs out.
MAX_BINS = 1000
MAX_TOP_K = 1000
#: Longest excerpt of a bad value quoted in an error message.
_EXCERPT_LENGTH = 60
#: Rows a segment value needs before its own reference is kept. A reference estimated on ``n``
#: rows adds about ``(bins - 1) / n`` to the PSI of traffic that did not change at all (each bin's
#: share is off by sampling noise, and PSI sums the squares): 500 rows keep that bias near 0.02
#: for 10 bins, a fifth of the 0.1 warning threshold. Rarer values, and values never seen, are
#: compared with the overall shares instead.
MIN_SEGMENT_ROWS = 500
#: Most segment values a profile keeps: each costs a share vector per feature in the file and a
#: count per feature in the monitor's windows. A column with more distinct frequent values is an
#: identifier, not a context.
MAX_SEGMENTS = 1000

IntArray = npt.NDArray[np.int64]


class ProfileError(ExporterError, ValueError):
    """A profile that cannot be built or loaded; the message names the file, field and problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_shares(share: list[float], expected_len: int, what: str) -> None:
    if len(share) != expected_len:
        raise ValueError(f"reference_share has {len(share)} entries, {what} need {expected_len}")
    if any(not math.isfinite(s) or s < 0 for s in share):
        raise ValueError("reference_share entries must be finite and >= 0")
    if abs(sum(share) - 1.0) > _SHARE_SUM_TOLERANCE:
        raise ValueError(f"reference_share must sum to 1, sums to {sum(share):.6f}")


class NumericFeature(_Strict):
    """Reference of a numeric feature; see :mod:`exporter.stats` for the bin convention."""

    kind: Literal["numeric"] = "numeric"
    edges: list[float]
    reference_share: list[float]
    mean: float
    std: float = Field(ge=0)
    count: int = Field(ge=1)
    missing_rate: float = Field(ge=0, le=1)
    min: float
    max: float
    sample: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> NumericFeature:
        if any(not math.isfinite(e) for e in self.edges):
            raise ValueError("edges must be finite")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges must be strictly increasing")
        _check_shares(self.reference_share, len(self.edges) + 1, f"{len(self.edges)} edges")
        if any(not math.isfinite(v) for v in self.sample):
            raise ValueError("sample values must be finite")
        if any(b < a for a, b in zip(self.sample, self.sample[1:], strict=False)):
            raise ValueError("sample must be sorted ascending")
        if not all(math.isfinite(v) for v in (self.mean, self.std, self.min, self.max)):
            raise ValueError("mean, std, min and max must be finite")
        return self

    @property
    def bin_labels(self) -> list[str]:
        """Label values of the ``bin`` label: zero-padded indexes, so they sort as numbers."""
        return [f"{i:02d}" for i in range(len(self.edges) + 1)]


class CategoricalFeature(_Strict):
    """Reference of a categorical feature: top-K categories plus ``__other__``."""

    kind: Literal["categorical"] = "categorical"
    categories: list[str]
    reference_share: list[float]
    count: int = Field(ge=1)
    missing_rate: float = Field(ge=0, le=1)
    known_other: list[str] = Field(default_factory=list)
    known_other_complete: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> CategoricalFeature:
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("categories must be unique")
        if OTHER in self.categories:
            raise ValueError(f"{OTHER!r} is reserved and cannot be a category")
        _check_shares(
            self.reference_share,
            len(self.categories) + 1,
            f"{len(self.categories)} categories plus {OTHER}",
        )
        return self

    @property
    def bin_labels(self) -> list[str]:
        return [*self.categories, OTHER]


FeatureReference = Annotated[NumericFeature | CategoricalFeature, Field(discriminator="kind")]


class SegmentShares(_Strict):
    """One feature (or the output) on the rows of one segment value: the shares of the overall
    reference's bins (same edges, same categories), the mean of a numeric feature, and how many
    valid values they come from."""

    reference_share: list[float]
    count: int = Field(ge=1)
    mean: float | None = None

    @model_validator(mode="after")
    def _finite(self) -> SegmentShares:
        if self.mean is not None and not math.isfinite(self.mean):
            raise ValueError("mean must be finite")
        return self


class Segment(_Strict):
    """The reference of one value of the segment feature: its row count and, per feature with
    enough valid values on those rows, its :class:`SegmentShares`. A feature left out (too few
    values) is compared with the overall shares on these rows."""

    count: int = Field(ge=1)
    features: dict[str, SegmentShares] = Field(default_factory=dict)
    output: SegmentShares | None = None


class Segments(_Strict):
    """The reference conditional on a context feature: one :class:`Segment` per value of
    ``feature`` that had at least ``min_rows`` rows, keyed by :func:`category_key`."""

    feature: str
    min_rows: int = Field(ge=1)
    values: dict[str, Segment]


class ReferenceProfile(_Strict):
    """What the training data looked like, per feature and for the model's output.

    Build it with :meth:`from_frame`, keep it with :meth:`save`, read it back with :meth:`load`.
    """

    schema_version: Literal[1] = 1
    created_at: str = ""
    bins: int = Field(default=10, ge=1)
    top_k: int = Field(default=20, ge=1)
    sample_size: int = Field(default=10_000, ge=1)
    features: dict[str, FeatureReference]
    #: The model's predictions on the reference rows: what output drift compares live
    #: predictions with (``__prediction__``).
    output: FeatureReference | None = None
    #: The true labels of the reference rows, when known: the label mix, for comparisons with
    #: ground truth. Output drift does not read it.
    labels: FeatureReference | None = None
    #: The reference per value of a context feature (``segment_by``), when built with one.
    segments: Segments | None = None

    @field_validator("segments")
    @classmethod
    def _segments_fit(cls, value: Segments | None, info: ValidationInfo) -> Segments | None:
        # Fields are validated in order: features and output are there unless they failed.
        features = info.data.get("features")
        if value is not None and features is not None:
            _check_segments(value, features, info.data.get("output"))
        return value

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        numeric: Sequence[str] = (),
        categorical: Sequence[str] = (),
        target: str | None = None,
        *,
        prediction: str | None = None,
        label: str | None = None,
        target_kind: Literal["auto", "numeric", "categorical"] = "auto",
        bins: int = 10,
        top_k: int = 20,
        sample_size: int = 10_000,
        seed: int = 0,
        segment_by: str | None = None,
        min_segment_rows: int = MIN_SEGMENT_ROWS,
    ) -> ReferenceProfile:
        """Profile the columns of a training frame.

        ``prediction`` is the column holding the model's predictions on these rows: it becomes
        ``output``, what output drift compares the live predictions with. ``target`` is its older
        name and does the same. ``label`` is the column of true labels: it becomes ``labels`` and
        is not used for output drift, because an imperfect classifier predicts a different class
        mix than its labels (pass the label column as ``prediction`` too to compare with labels
        anyway). ``target_kind`` says how both are profiled; ``"auto"`` looks at the prediction
        column (else the label column) and profiles it as categorical when it is not a float
        column or has at most ``top_k`` distinct values, and as numeric otherwise. ``seed`` fixes
        which rows the KS sample keeps when there are more than ``sample_size``, so the same data
        gives the same file.

        ``segment_by`` names a profiled feature (categorical, or numeric holding whole numbers)
        that sets the context, such as the hour of the day: ``segments`` then holds, per value
        with at least ``min_segment_rows`` rows (see :data:`MIN_SEGMENT_ROWS`), every other
        feature's and the output's shares of the same bins on that value's rows alone.
        """
        if bins < 1 or top_k < 1 or sample_size < 1:
            raise ProfileError("bins, top_k and sample_size must each be at least 1")
        if bins > MAX_BINS or top_k > MAX_TOP_K:
            raise ProfileError(f"bins must be at most {MAX_BINS} and top_k at most {MAX_TOP_K}")
        if target is not None and prediction is not None:
            raise ProfileError("target is the older name of prediction: pass only one of them")
        predicted = prediction if prediction is not None else target
        overlap = set(numeric) & set(categorical)
        if overlap:
            raise ProfileError(f"columns listed as numeric and categorical: {sorted(overlap)}")
        wanted = [*numeric, *categorical, *(c for c in (predicted, label) if c is not None)]
        absent = [c for c in wanted if c not in frame.columns]
        if absent:
            raise ProfileError(
                f"columns not in the data: {absent}; the data has {list(frame.columns)}"
            )
        if not numeric and not categorical:
            raise ProfileError("no features to profile: name at least one numeric or categorical")
        if segment_by is not None and segment_by not in (*numeric, *categorical):
            raise ProfileError(
                f"segment_by {segment_by!r} must be one of the profiled features "
                f"{[*numeric, *categorical]}: it is validated like them in the monitor"
            )
        if min_segment_rows < 1:
            raise ProfileError(f"min_segment_rows must be at least 1, got {min_segment_rows}")
        rng = np.random.default_rng(seed)
        features: dict[str, NumericFeature | CategoricalFeature] = {}
        for name in numeric:
            features[name] = _profile_numeric(frame[name], name, bins, sample_size, rng)
        for name in categorical:
            features[name] = _profile_categorical(frame[name], name, top_k)
        kind = target_kind
        guide = predicted if predicted is not None else label
        if kind == "auto" and guide is not None:
            kind = _guess_kind(frame[guide], top_k)

        def profile(column: str) -> NumericFeature | CategoricalFeature:
            if kind == "numeric":
                return _profile_numeric(frame[column], column, bins, sample_size, rng)
            return _profile_categorical(frame[column], column, top_k)

        output = profile(predicted) if predicted is not None else None
        labels = None
        if label is not None:
            labels = output if label == predicted else profile(label)
        segments = None
        if segment_by is not None:
            columns = {name: frame[name] for name in features if name != segment_by}
            predictions = None
            if predicted is not None and output is not None:
                predictions = (frame[predicted], output)
            segments = _profile_segments(
                frame[segment_by], segment_by, features, columns, predictions, min_segment_rows
            )
        return cls(
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            bins=bins,
            top_k=top_k,
            sample_size=sample_size,
            features=features,
            output=output,
            labels=labels,
            segments=segments,
        )

    # -- persistence ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the profile as JSON, atomically (a crash never leaves half a file)."""
        target = Path(path)
        payload = self.model_dump_json(indent=1, exclude=self._absent())
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            # mkstemp creates 0600; a profile is not secret and is often read by another user
            # (a container's service account), so make it readable like any written file.
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferenceProfile:
        """Read and validate a profile; any problem raises :class:`ProfileError` naming it."""
        where = str(path)
        source = Path(path)
        # A FIFO or a device (a mistyped /dev/stdin, /dev/zero) would block or never end.
        if source.exists() and not source.is_dir() and not source.is_file():
            raise ProfileError(f"{where}: cannot read the profile: not a regular file")
        try:
            # utf-8-sig: a byte-order mark, as some Windows editors write, is not a mistake.
            text = source.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(f"{where}: cannot read the profile: {exc}") from exc
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProfileError(
                f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
            ) from exc
        except RecursionError:
            raise ProfileError(f"{where}: not valid JSON: nested too deeply") from None
        except ValueError:  # an integer past Python's digit limit (4300)
            raise ProfileError(f"{where}: not valid JSON: a number has too many digits") from None
        return cls.from_document(document, source=where)

    @classmethod
    def from_document(cls, document: Any, *, source: str = "<profile>") -> ReferenceProfile:
        """Validate a decoded JSON document (see :meth:`load`)."""
        if not isinstance(document, dict):
            raise ProfileError(f"{source}: the profile must be a JSON object")
        broken = _lone_surrogate_at(document)
        if broken is not None:
            # Names and categories become label values, which must be encodable as UTF-8.
            raise ProfileError(f"{source}: {broken}: a lone UTF-16 surrogate is not valid text")
        version = document.get("schema_version")
        if isinstance(version, int) and not isinstance(version, bool):
            if version > SCHEMA_VERSION:
                raise ProfileError(
                    f"{source}: schema_version: {version} was written by a newer exporter; "
                    f"this one reads up to {SCHEMA_VERSION}. Upgrade the exporter."
                )
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            raise ProfileError(f"{source}: {_describe(exc)}") from None

    # -- use -----------------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """Short content hash, exported as ``model_info{reference=...}`` to tell profiles apart."""
        document = self.model_dump_json(exclude={"created_at", *self._absent()})
        return hashlib.sha256(document.encode("utf-8")).hexdigest()[:12]

    def _absent(self) -> set[str]:
        """Optional fields added to the layout later, left out of the JSON when unset.

        A profile without them is then written exactly as before they existed: older exporters
        read it, and its fingerprint (``model_info{reference}``) does not change on upgrade.
        """
        return {name for name in ("labels", "segments") if getattr(self, name) is None}

    def require(self, names: Sequence[str], *, source: str = "the reference profile") -> None:
        """Fail clearly when a feature the monitor should watch is not in the profile."""
        absent = [n for n in names if n not in self.features]
        if absent:
            raise ProfileError(
                f"{source}: features {absent} are watched but not profiled; "
                f"the profile has {sorted(self.features)}"
            )


def _check_segments(
    segments: Segments,
    features: Mapping[str, NumericFeature | CategoricalFeature],
    output: NumericFeature | CategoricalFeature | None,
) -> None:
    """Every segment's shares fit the overall reference they are read against."""
    if segments.feature not in features:
        raise ValueError(f"feature {segments.feature!r} is not a profiled feature")
    if len(segments.values) > MAX_SEGMENTS:
        raise ValueError(f"{len(segments.values)} values; at most {MAX_SEGMENTS}")
    numeric_key = isinstance(features[segments.feature], NumericFeature)
    for key, segment in segments.values.items():
        if numeric_key and not _is_whole_number_text(key):
            raise ValueError(f"values.{key}: a numeric segment feature needs whole-number keys")
        parts: list[tuple[str, SegmentShares, NumericFeature | CategoricalFeature | None]] = [
            (f"features.{name}", shares, features.get(name))
            for name, shares in segment.features.items()
        ]
        if segment.output is not None:
            parts.append(("output", segment.output, output))
        for where, shares, reference in parts:
            path = f"values.{key}.{where}"
            if reference is None or where == f"features.{segments.feature}":
                what = (
                    "the profile has no output"
                    if where == "output"
                    else (f"not a profiled feature other than {segments.feature!r}")
                )
                raise ValueError(f"{path}: {what}")
            try:
                _check_shares(shares.reference_share, len(reference.bin_labels), "its bins")
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
            if (shares.mean is not None) != isinstance(reference, NumericFeature):
                raise ValueError(f"{path}: mean is set for numeric features, and only for them")


def _is_whole_number_text(key: str) -> bool:
    try:
        return str(int(key)) == key
    except ValueError:
        return False


def _lone_surrogate_at(document: Any) -> str | None:
    """Dotted path of the first key or string holding a lone surrogate, or None."""
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                where = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and has_lone_surrogate(key):
                    return where.encode("utf-8", "backslashreplace").decode("utf-8")
                stack.append((value, where))
        elif isinstance(item, list):
            # Only containers and strings: a sample's thousands of numbers need no path.
            stack.extend(
                (value, f"{path}.{i}")
                for i, value in enumerate(item)
                if isinstance(value, (str, dict, list))
            )
        elif isinstance(item, str) and has_lone_surrogate(item):
            return path
    return None


def _excerpt(text: str) -> str:
    """``text`` cut to a readable length for an error message."""
    return text if len(text) <= _EXCERPT_LENGTH else f"{text[:_EXCERPT_LENGTH]}..."


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        problems.append(f"{location}: {error['msg']}")
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def _guess_kind(column: pd.Series, top_k: int) -> Literal["numeric", "categorical"]:
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        return "categorical"
    if pd.api.types.is_integer_dtype(column) and column.nunique(dropna=True) <= top_k:
        return "categorical"
    return "numeric"


def _profile_numeric(
    column: pd.Series, name: str, bins: int, sample_size: int, rng: np.random.Generator
) -> NumericFeature:
    total = len(column)
    if total == 0:
        raise ProfileError(f"column {name!r}: the data has no rows")
    if pd.api.types.is_bool_dtype(column):
        numbers = column.astype("float64")
    else:
        numbers = pd.to_numeric(column, errors="coerce")
        unparsable = numbers.isna() & column.notna()
        if unparsable.any():
            bad = column[unparsable]
            raise ProfileError(
                f"column {name!r} is listed as numeric but row {bad.index[0]} holds "
                f"{_excerpt(repr(bad.iloc[0]))}; "
                "list it as categorical or clean the data"
            )
    values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ProfileError(f"column {name!r} has no finite values to profile")
    edges = stats.quantile_edges(finite, bins)
    share = stats.shares(stats.bin_counts(finite, edges))
    described = stats.moments(finite)
    if finite.size > sample_size:
        kept = rng.choice(finite, size=sample_size, replace=False)
    else:
        kept = finite
    return NumericFeature(
        edges=edges.tolist(),
        reference_share=share.tolist(),
        mean=described.mean,
        std=described.std,
        count=described.n,
        missing_rate=float(1 - finite.size / total),
        min=float(finite.min()),
        max=float(finite.max()),
        sample=np.sort(kept).tolist(),
    )


def _profile_categorical(column: pd.Series, name: str, top_k: int) -> CategoricalFeature:
    total = len(column)
    if total == 0:
        raise ProfileError(f"column {name!r}: the data has no rows")
    keys = pd.Series([category_key(v) for v in column.tolist()], dtype=object).dropna()
    if keys.empty:
        raise ProfileError(f"column {name!r} has no values to profile")
    if (keys == OTHER).any():
        raise ProfileError(f"column {name!r} holds the reserved value {OTHER!r}")
    counts = keys.value_counts(sort=True)
    top = counts.iloc[:top_k]
    rest = counts.iloc[top_k:]
    share = [*(top / len(keys)).tolist(), float(rest.sum() / len(keys))]
    share[-1] = max(0.0, 1.0 - sum(share[:-1]))  # exact sum 1 despite rounding
    known = [str(k) for k in rest.index[:MAX_KNOWN_CATEGORIES]]
    return CategoricalFeature(
        categories=[str(k) for k in top.index],
        reference_share=share,
        count=int(len(keys)),
        missing_rate=float(1 - len(keys) / total),
        known_other=known,
        known_other_complete=len(rest) <= MAX_KNOWN_CATEGORIES,
    )


def _segment_keys(column: pd.Series, name: str, numeric: bool) -> pd.Series:
    """The :func:`category_key` of each row's segment value (None when missing)."""
    if not numeric:
        return pd.Series(
            [category_key(v) for v in column.tolist()], index=column.index, dtype=object
        )
    values = _floats(column)
    finite = np.isfinite(values)
    whole = finite & (values == np.floor(np.where(finite, values, 0.0)))
    if not np.array_equal(whole, finite):
        row = int(np.flatnonzero(finite & ~whole)[0])
        raise ProfileError(
            f"segment_by {name!r}: row {column.index[row]} holds {float(values[row])!r}; a numeric "
            "segment feature must hold whole numbers (profile it as categorical otherwise)"
        )
    keys = [
        str(int(v)) if ok else None for v, ok in zip(values.tolist(), finite.tolist(), strict=True)
    ]
    return pd.Series(keys, index=column.index, dtype=object)


def _floats(column: pd.Series) -> npt.NDArray[np.float64]:
    """A column already accepted as numeric, as floats (NaN where missing)."""
    if pd.api.types.is_bool_dtype(column):
        column = column.astype("float64")
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan)


def _bin_index(column: pd.Series, reference: NumericFeature | CategoricalFeature) -> IntArray:
    """Each row's bin in ``reference`` (its edges or categories), -1 for a missing value."""
    if isinstance(reference, NumericFeature):
        values = _floats(column)
        index = np.searchsorted(np.asarray(reference.edges, dtype=np.float64), values, side="right")
        return np.where(np.isfinite(values), index, -1).astype(np.int64)
    position = {c: i for i, c in enumerate(reference.categories)}
    other = len(reference.categories)
    keys = [category_key(v) for v in column.tolist()]
    return np.asarray([-1 if k is None else position.get(k, other) for k in keys], dtype=np.int64)


def _segment_shares(
    codes: IntArray,
    kept: int,
    column: pd.Series,
    reference: NumericFeature | CategoricalFeature,
    min_rows: int,
) -> list[SegmentShares | None]:
    """Per kept segment (``codes`` is each row's segment, -1 for none kept): the shares of
    ``reference``'s bins on that segment's rows, or None with fewer than ``min_rows`` values."""
    bins = len(reference.bin_labels)
    index = _bin_index(column, reference)
    valid = (codes >= 0) & (index >= 0)
    # One bincount over (segment, bin) pairs instead of one pass per segment.
    counts = np.bincount(codes[valid] * bins + index[valid], minlength=kept * bins).reshape(
        kept, bins
    )
    sums = None
    if isinstance(reference, NumericFeature):
        values = _floats(column)[valid]
        # Divided by the largest magnitude first, as stats.moments does, so huge values cannot
        # overflow the sums.
        scale = float(np.max(np.abs(values))) if values.size else 0.0
        weights = values / scale if scale > 0 else values
        sums = np.bincount(codes[valid], weights=weights, minlength=kept) * (scale or 1.0)
    result: list[SegmentShares | None] = []
    for segment in range(kept):
        n = int(counts[segment].sum())
        if n < min_rows:
            result.append(None)
            continue
        share = stats.shares(counts[segment]).tolist()
        if isinstance(reference, CategoricalFeature):
            share[-1] = max(0.0, 1.0 - sum(share[:-1]))  # exact sum 1, as the overall shares
        mean = float(sums[segment] / n) if sums is not None else None
        result.append(SegmentShares(reference_share=share, count=n, mean=mean))
    return result


def _profile_segments(
    column: pd.Series,
    name: str,
    features: Mapping[str, NumericFeature | CategoricalFeature],
    columns: Mapping[str, pd.Series],
    output: tuple[pd.Series, NumericFeature | CategoricalFeature] | None,
    min_rows: int,
) -> Segments:
    """The reference of every other feature (``columns``) and of the output (its column and
    overall reference) per value of the segment feature ``column``."""
    reference = features[name]
    keys = _segment_keys(column, name, isinstance(reference, NumericFeature))
    sizes = keys.value_counts(dropna=True)
    frequent = [str(k) for k, n in sizes.items() if n >= min_rows]
    if isinstance(reference, NumericFeature):
        frequent.sort(key=int)
    else:
        frequent.sort()
    if len(frequent) > MAX_SEGMENTS:
        raise ProfileError(
            f"segment_by {name!r}: {len(frequent)} values have at least {min_rows} rows; at "
            f"most {MAX_SEGMENTS} are kept: segment by a coarser column"
        )
    position = {k: i for i, k in enumerate(frequent)}
    codes = np.asarray([position.get(k, -1) if k is not None else -1 for k in keys.tolist()],
                       dtype=np.int64)  # fmt: skip
    kept = len(frequent)
    per_feature = {
        feature: _segment_shares(codes, kept, series, features[feature], min_rows)
        for feature, series in columns.items()
    }
    per_output = (
        _segment_shares(codes, kept, output[0], output[1], min_rows) if output else [None] * kept
    )
    values: dict[str, Segment] = {}
    for i, key in enumerate(frequent):
        shares = {f: found[i] for f, found in per_feature.items()}
        values[key] = Segment(
            count=int(sizes[key]),
            features={f: s for f, s in shares.items() if s is not None},
            output=per_output[i],
        )
    return Segments(feature=name, min_rows=min_rows, values=values)
