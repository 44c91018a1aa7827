"""Candidate versions of the demo fare model, for canary and shadow (docs/versions.md and
``examples/fare/monitor-canary.yml``).

- :func:`predict_retrained`: the same linear model refitted on another draw of synthetic trips,
  as a routine retraining would give: about as good as the primary, so a comparison with it
  should stay quiet.
- :func:`predict_overcharging`: the primary's fare plus 15%, a deliberately worse version (a
  tariff table loaded twice, say): its MAE is clearly above the primary's once ground truth
  arrives, which is what ``ModelCandidateWorse`` is for.

Both read the demo's ``_fault`` feature like the primary (:mod:`exporter.demo_models`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from exporter.demo_models import Once
from exporter.demo_models.fare import (
    FEATURES,
    TRAINING_TRIPS,
    FareModel,
    predict,
    synthetic_trips,
)

__all__ = ["OVERCHARGE", "RETRAINING_SEED", "predict_overcharging", "predict_retrained"]

#: The seed of the retrained candidate's trips (the primary's is fare.TRAINING_SEED).
RETRAINING_SEED = 20_241_201
#: How much the worse candidate overcharges, as a share of the primary's fare.
OVERCHARGE = 0.15


def _retrain() -> FareModel:
    return FareModel.fit(synthetic_trips(TRAINING_TRIPS, RETRAINING_SEED))


_retrained = Once(_retrain)


def predict_retrained(features: Mapping[str, Any]) -> float:
    """The fare of the model refitted on other trips (fitted on the first call)."""
    # The primary's call checks the features (and acts on a demo fault) exactly as it does for
    # its own answer; a few microseconds for a linear model.
    predict(features)
    columns = [np.array([float(features[name])]) for name in FEATURES]
    return float(_retrained.get().predict_arrays(*columns)[0])


def predict_overcharging(features: Mapping[str, Any]) -> float:
    """The primary's fare plus :data:`OVERCHARGE`, rounded to cents."""
    return round(predict(features) * (1 + OVERCHARGE), 2)
