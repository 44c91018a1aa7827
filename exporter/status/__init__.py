"""A health summary per model and version: is it healthy, and what to do about it.

:mod:`exporter.status.summary` judges the evidence of one model version (its signals against its
own thresholds) and applies the recommendation rules (:mod:`exporter.status.rules`, a table);
:mod:`exporter.status.prometheus` reads the evidence of the whole fleet from Prometheus'
recorded series and :mod:`exporter.status.local` that of one service's own process;
:mod:`exporter.status.render` writes JSON or a terminal table. ``model-exporter status`` is
:mod:`exporter.status.command`.
"""

from __future__ import annotations

from exporter.status.model import (
    Evidence,
    FeatureDriftEvidence,
    FiringAlert,
    ModelStatus,
    PerformanceEvidence,
    Recommendation,
    Signal,
)
from exporter.status.rules import RULES, Rule
from exporter.status.summary import summarize

__all__ = [
    "RULES", "Evidence", "FeatureDriftEvidence", "FiringAlert", "ModelStatus",
    "PerformanceEvidence", "Recommendation", "Rule", "Signal", "summarize",
]  # fmt: skip
