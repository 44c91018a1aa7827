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
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from exporter._profile_build import (
    guess_kind,
    profile_categorical,
    profile_numeric,
    profile_segments,
)
from exporter._profile_schema import (
    MAX_BINS,
    MAX_KNOWN_CATEGORIES,
    MAX_SEGMENTS,
    MAX_TOP_K,
    MIN_SEGMENT_ROWS,
    OTHER,
    OUTPUT,
    SCHEMA_VERSION,
    CategoricalFeature,
    FeatureReference,
    IntArray,
    NumericFeature,
    ProfileError,
    Segment,
    Segments,
    SegmentShares,
    StrictModel,
    check_segments,
)

# Re-exported: the profile keys categories as the monitor judges them.
from exporter.coerce import category_key as category_key
from exporter.text import has_lone_surrogate

# The schema's models and limits live in exporter._profile_schema; this module is their public home.
__all__ = [
    "CategoricalFeature",
    "FeatureReference",
    "IntArray",
    "MAX_BINS",
    "MAX_KNOWN_CATEGORIES",
    "MAX_SEGMENTS",
    "MAX_TOP_K",
    "MIN_SEGMENT_ROWS",
    "NumericFeature",
    "OTHER",
    "OUTPUT",
    "ProfileError",
    "ReferenceProfile",
    "SCHEMA_VERSION",
    "Segment",
    "SegmentShares",
    "Segments",
    "category_key",
]


class ReferenceProfile(StrictModel):
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
            check_segments(value, features, info.data.get("output"))
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
            features[name] = profile_numeric(frame[name], name, bins, sample_size, rng)
        for name in categorical:
            features[name] = profile_categorical(frame[name], name, top_k)
        kind = target_kind
        guide = predicted if predicted is not None else label
        if kind == "auto" and guide is not None:
            kind = guess_kind(frame[guide], top_k)

        def profile(column: str) -> NumericFeature | CategoricalFeature:
            if kind == "numeric":
                return profile_numeric(frame[column], column, bins, sample_size, rng)
            return profile_categorical(frame[column], column, top_k)

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
            segments = profile_segments(
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


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        problems.append(f"{location}: {error['msg']}")
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")
