"""Prometheus's alert state machine, run over an alert expression's past values.

Prometheus evaluates an alerting rule at every evaluation of its group: each series the
expression returns is an alert; a new one is *pending* from that evaluation (its ``ActiveAt``),
becomes *firing* at the first evaluation at least ``for`` after ``ActiveAt``, and leaves when an
evaluation no longer returns it (a pending one is forgotten, a firing one is resolved), unless
``keep_firing_for`` keeps a firing alert up until the series has been missing that long. This is
the same machine (``rules/alerting.go`` of Prometheus 2.42, where ``keep_firing_for`` arrived),
fed with the values of ``query_range(expr, step=evaluation interval)`` instead of live
evaluations. ``promtool test rules`` checks it on the same samples in the test suite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class Episode:
    """One alert from pending to its end: times are evaluation timestamps (seconds)."""

    labels: dict[str, str]
    active_at: float
    fired_at: float | None = None
    #: The first evaluation that no longer saw it pending or firing; ``None`` if still up at
    #: the end of the range.
    ended_at: float | None = None
    #: Largest and last value of the expression while it was up.
    peak: float = float("-inf")
    last: float = float("nan")
    _missing_since: float | None = field(default=None, repr=False)

    @property
    def fired(self) -> bool:
        return self.fired_at is not None

    def as_dict(self) -> dict[str, object]:
        return {
            "labels": dict(self.labels),
            "pending_at": self.active_at,
            "firing_at": self.fired_at,
            "ended_at": self.ended_at,
            "peak": _finite_or_none(self.peak),
            "last": _finite_or_none(self.last),
        }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def run_state_machine(
    series: Mapping[tuple[tuple[str, str], ...], Mapping[float, float]],
    timestamps: Sequence[float],
    for_seconds: float,
    keep_firing_for_seconds: float = 0.0,
    rule_labels: Mapping[str, str] | None = None,
) -> list[Episode]:
    """Every alert episode of one rule over ``timestamps`` (its group's evaluations).

    ``series`` maps each output series (its labels as sorted pairs) to its values by timestamp;
    a timestamp missing from a series means the expression did not return it then. The rule's
    own labels override the series' labels, as in Prometheus.
    """
    extra = dict(rule_labels or {})
    episodes: list[Episode] = []
    open_: dict[tuple[tuple[str, str], ...], Episode] = {}
    for ts in timestamps:
        for key, values in series.items():
            value = values.get(ts)
            episode = open_.get(key)
            if value is not None:
                if episode is None:
                    episode = Episode({**dict(key), **extra}, active_at=ts)
                    open_[key] = episode
                    episodes.append(episode)
                episode._missing_since = None
                episode.peak = max(episode.peak, value)
                episode.last = value
                if episode.fired_at is None and ts - episode.active_at >= for_seconds:
                    episode.fired_at = ts
            elif episode is not None:
                if episode.fired_at is not None and keep_firing_for_seconds > 0:
                    if episode._missing_since is None:
                        episode._missing_since = ts
                    if ts - episode._missing_since < keep_firing_for_seconds:
                        continue
                episode.ended_at = ts
                del open_[key]
    return episodes
