"""How strongly each simulated scenario acts: error and latency of healthy calls, and the size
of each fault. The drift sizes are calibrated against the examples' references so that a
scenario has the population PSI its name promises (:func:`exporter.backtest.simulate.fault_psi`
checks them); the benchmark's goals are stated in those PSI figures.
"""

from __future__ import annotations

from exporter.demo_models import DemoModelError

#: Every call fails this often, fault or not (a production model's background of odd requests).
BASELINE_ERROR_SHARE = 0.001
ERROR_NAME = DemoModelError.__name__
#: Inference time of a healthy call: lognormal with this median (seconds) and log-sd, so the p95
#: is about 7 ms, far below the examples' 0.25 s ``latency_p95_seconds``.
BASELINE_LATENCY_MEDIAN_SECONDS = 0.003
BASELINE_LATENCY_SIGMA = 0.5
#: ``errors``: share of calls that fail during the fault.
FAULT_ERROR_SHARE = 0.10
#: ``latency``: share of calls that are slow, and how slow, in multiples of the threshold (the
#: p95 then falls inside the slow tenth, at about 3.15 times the threshold).
SLOW_SHARE = 0.10
SLOW_FACTOR = 3.0
SLOW_JITTER = (1.0, 1.1)
#: Fare drift multiplies each trip's driven distance (``synthetic_trips(shift=...)``: duration,
#: straight-line distance and fare follow). Found by root-finding on the mean PSI of 4 x 10^6
#: trips (:func:`fault_psi`) against ``examples/fare/reference.json``, each hour against its own
#: reference: 1.506 gives PSI 0.30 on trip_miles (0.29 straight_line_km, 0.23 trip_seconds);
#: 1.29 gives 0.12 on trip_miles (0.12 straight_line_km, 0.09 trip_seconds).
FARE_DRIFT_FACTOR = 1.506
FARE_MODERATE_DRIFT_FACTOR = 1.29
#: Intent drift turns this share of requests into shifted ones (``synthetic_requests(shift=True)``:
#: long pasted texts of unknown words, mostly by phone). Found by root-finding on the mixture of
#: 1.2 x 10^6 normal and 200,000 shifted requests against ``examples/intent/reference.json``:
#: 0.245 gives PSI 0.30 on oov_share and text_length (0.20 token_count, 0.13 channel); 0.145
#: gives 0.12 on text_length (0.12 oov_share, 0.07 token_count, 0.05 channel).
INTENT_DRIFT_SHARE = 0.245
INTENT_MODERATE_DRIFT_SHARE = 0.145
FARE_DRIFT: dict[str, float] = {
    "drift": FARE_DRIFT_FACTOR,
    "moderate-drift": FARE_MODERATE_DRIFT_FACTOR,
}
INTENT_DRIFT: dict[str, float] = {
    "drift": INTENT_DRIFT_SHARE,
    "moderate-drift": INTENT_MODERATE_DRIFT_SHARE,
}
#: ``mae``: dollars added to every actual fare, past the example's $5 critical MAE on its own.
MAE_FARE_OFFSET = 6.0
#: ``degrade``: share of actual intents replaced by another intent.
DEGRADED_WRONG_SHARE = 0.30
