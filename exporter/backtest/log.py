"""The prediction log a backtest replays: one row per prediction call, with its time.

Columns (CSV or Parquet):

``time``
    When the call was made: seconds since the epoch, or an ISO 8601 timestamp (UTC if it has
    no offset). Required.
features
    The request's features as the service receives them, one column each (the config's
    ``features``, or the raw columns its ``derive_features`` reads).
``prediction``
    The model's answer; empty when the call failed.
``confidence``, ``latency_seconds``
    Optional: the answer's confidence, the call's inference time in seconds.
``error``
    Optional: the exception class name of a failed call; empty for answered calls. A row with
    no prediction and no error is a call that failed without a name (``Exception``).
``actual``, ``actual_time``
    Optional: the ground truth that arrived for this prediction and when (seconds since the
    epoch or ISO 8601); ``actual_time`` defaults to ``time`` plus ``--truth-delay``.
``phase``
    Optional, ignored by the replay: what the traffic was (``stable``, a fault's name), which the
    report marks on its plots.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from exporter.errors import ExporterError

#: Columns that are not request features.
RESERVED = frozenset(
    {"time", "prediction", "confidence", "latency_seconds", "error", "actual", "actual_time",
     "phase"}
)  # fmt: skip


class LogError(ExporterError, ValueError):
    """A log that cannot be replayed; the message names the column and the problem."""


def _seconds(column: pd.Series, name: str) -> np.ndarray:
    """Epoch seconds from numbers or ISO 8601 strings; missing stays NaN."""
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=np.float64)
    try:
        parsed = pd.to_datetime(column, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise LogError(f"{name}: not seconds since the epoch nor ISO 8601 times: {exc}") from None
    # Whatever the resolution pandas parses to (ns, us), the difference in seconds is exact.
    elapsed = (parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return np.asarray(elapsed.to_numpy(dtype=np.float64, na_value=np.nan))


@dataclass
class PredictionLog:
    """A validated log, sorted by time, indexed by position."""

    frame: pd.DataFrame
    feature_columns: list[str]
    phases: list[tuple[float, str]] = field(default_factory=list)

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, *, features: Sequence[str] | None = None,
        truth_delay: float = 0.0,
    ) -> PredictionLog:  # fmt: skip
        if "time" not in frame.columns:
            raise LogError("the log has no `time` column (when each call was made)")
        if frame.empty:
            raise LogError("the log has no rows")
        table = frame.copy()
        table["time"] = _seconds(table["time"], "time")
        if not np.isfinite(table["time"].to_numpy()).all():
            raise LogError("time: every row needs a time")
        if "prediction" not in table.columns:
            table["prediction"] = None
        if "actual" in table.columns:
            if "actual_time" in table.columns:
                table["actual_time"] = _seconds(table["actual_time"], "actual_time")
            else:
                table["actual_time"] = table["time"] + truth_delay
            has_actual = table["actual"].notna().to_numpy()
            late = (
                table["actual_time"].to_numpy()[has_actual] < table["time"].to_numpy()[has_actual]
            )
            if late.any():
                raise LogError(
                    f"actual_time: {int(late.sum())} ground truths arrive before their prediction"
                )
        columns = [c for c in table.columns if c not in RESERVED]
        if features is not None:
            missing = [f for f in features if f not in table.columns]
            if missing:
                raise LogError(f"the log has no column for the features {missing}")
            columns = list(features)
        if not columns:
            raise LogError("the log has no feature columns")
        table = table.sort_values("time", kind="stable").reset_index(drop=True)
        phases: list[tuple[float, str]] = []
        if "phase" in table.columns:
            names = table["phase"].astype(str).to_numpy()
            changes = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
            stamps = table["time"].to_numpy(dtype=np.float64)
            phases = [(float(stamps[i]), str(names[i])) for i in changes]
        return cls(table, columns, phases)

    @classmethod
    def read(cls, path: Path, **options: Any) -> PredictionLog:
        if not path.is_file():
            raise LogError(f"{path}: no such file")
        try:
            if path.suffix.lower() in (".parquet", ".pq"):
                frame = pd.read_parquet(path)
            else:
                frame = pd.read_csv(path)
        except ImportError:
            raise LogError(
                f"{path}: reading Parquet needs pyarrow (`pip install 'model-exporter[parquet]'`)"
            ) from None
        except Exception as exc:  # pandas and pyarrow raise many types for a broken file
            raise LogError(f"{path}: not a readable CSV or Parquet file: {exc}") from None
        return cls.from_frame(frame, **options)

    # -- what the replay reads ---------------------------------------------------------------

    @property
    def start(self) -> float:
        return float(self.frame["time"].to_numpy(dtype=np.float64)[0])

    @property
    def end(self) -> float:
        """The last call: ground truth arriving after it is not replayed, as in a live run that
        ends there."""
        return float(self.frame["time"].to_numpy(dtype=np.float64)[-1])

    @property
    def has_latency(self) -> bool:
        return "latency_seconds" in self.frame.columns

    @property
    def has_confidence(self) -> bool:
        return "confidence" in self.frame.columns

    def failed_mask(self) -> np.ndarray:
        """Calls that failed: an error name, or no prediction."""
        failed = self.frame["prediction"].isna().to_numpy()
        if "error" in self.frame.columns:
            named = self.frame["error"].fillna("").astype(str).str.len().to_numpy() > 0
            failed = failed | named
            self.frame.loc[failed & ~named, "error"] = "Exception"
        else:
            self.frame["error"] = np.where(failed, "Exception", "")
        return np.asarray(failed, dtype=bool)

    def truth_times(self) -> np.ndarray:
        """When each row's ground truth arrives; +inf for rows without one."""
        if "actual" not in self.frame.columns:
            return np.full(len(self.frame), np.inf)
        times = self.frame["actual_time"].to_numpy(dtype=np.float64).copy()
        times[self.frame["actual"].isna().to_numpy()] = np.inf
        return times

    def actuals(self) -> list[Any]:
        """Each row's ground truth as a plain Python value (``None`` where there is none)."""
        if "actual" not in self.frame.columns:
            return [None] * len(self.frame)
        column = self.frame["actual"]
        return [None if pd.isna(v) else v for v in column.astype(object).tolist()]

    @staticmethod
    def positions(index: Iterable[Any]) -> list[int]:
        return [int(i) for i in index]
