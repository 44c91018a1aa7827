"""The profile's JSON schema: the per-feature references and the segments, validated on load.

Split from :mod:`exporter.profile` (which re-exports every public name here) so the schema can be
read on its own and the builder (:mod:`exporter._profile_build`) can produce these models
without importing the class that calls it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from exporter.errors import ExporterError

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


class StrictModel(BaseModel):
    """Unknown fields are refused (a typo is an error, not a silent default) and models are
    immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_shares(share: list[float], expected_len: int, what: str) -> None:
    if len(share) != expected_len:
        raise ValueError(f"reference_share has {len(share)} entries, {what} need {expected_len}")
    if any(not math.isfinite(s) or s < 0 for s in share):
        raise ValueError("reference_share entries must be finite and >= 0")
    if abs(sum(share) - 1.0) > _SHARE_SUM_TOLERANCE:
        raise ValueError(f"reference_share must sum to 1, sums to {sum(share):.6f}")


class NumericFeature(StrictModel):
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
        check_shares(self.reference_share, len(self.edges) + 1, f"{len(self.edges)} edges")
        # Up to 100,000 values: checked as an array, not one by one.
        sample = np.asarray(self.sample, dtype=np.float64)
        if not np.isfinite(sample).all():
            raise ValueError("sample values must be finite")
        if (sample[1:] < sample[:-1]).any():
            raise ValueError("sample must be sorted ascending")
        if not all(math.isfinite(v) for v in (self.mean, self.std, self.min, self.max)):
            raise ValueError("mean, std, min and max must be finite")
        return self

    @property
    def bin_labels(self) -> list[str]:
        """Label values of the ``bin`` label: zero-padded indexes, so they sort as numbers."""
        return [f"{i:02d}" for i in range(len(self.edges) + 1)]


class CategoricalFeature(StrictModel):
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
        check_shares(
            self.reference_share,
            len(self.categories) + 1,
            f"{len(self.categories)} categories plus {OTHER}",
        )
        return self

    @property
    def bin_labels(self) -> list[str]:
        return [*self.categories, OTHER]


FeatureReference = Annotated[NumericFeature | CategoricalFeature, Field(discriminator="kind")]


class SegmentShares(StrictModel):
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


class Segment(StrictModel):
    """The reference of one value of the segment feature: its row count and, per feature with
    enough valid values on those rows, its :class:`SegmentShares`. A feature left out (too few
    values) is compared with the overall shares on these rows."""

    count: int = Field(ge=1)
    features: dict[str, SegmentShares] = Field(default_factory=dict)
    output: SegmentShares | None = None


class Segments(StrictModel):
    """The reference conditional on a context feature: one :class:`Segment` per value of
    ``feature`` that had at least ``min_rows`` rows, keyed by :func:`category_key`."""

    feature: str
    min_rows: int = Field(ge=1)
    values: dict[str, Segment]


def check_segments(
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
                check_shares(shares.reference_share, len(reference.bin_labels), "its bins")
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
            if (shares.mean is not None) != isinstance(reference, NumericFeature):
                raise ValueError(f"{path}: mean is set for numeric features, and only for them")


def _is_whole_number_text(key: str) -> bool:
    try:
        return str(int(key)) == key
    except ValueError:
        return False
