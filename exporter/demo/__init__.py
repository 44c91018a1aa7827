"""The demo: ``model-exporter demo``, traffic for running example services with faults on a
schedule (this package), and ``model-exporter demo-stack`` (:mod:`exporter.demo.stack`), which
starts the whole stack on 127.0.0.1, runs that traffic and reports which alerts each fault raised.

In ``model-exporter demo``, for each ``--target`` (a running ``model-exporter serve``) the generator
reads ``/healthz`` to learn the model's task and sends matching requests to ``/predict`` as Poisson
arrivals at ``--rate`` requests per second: intent utterances with a channel for a classifier
(:func:`exporter.demo_models.intent.synthetic_requests`), taxi trips for a regressor
(:func:`exporter.demo_models.fare.synthetic_trips`). Each answered prediction gets its ground truth
posted to ``/feedback`` after an exponential delay (mean ``--feedback-delay``, capped at
:data:`FEEDBACK_DELAY_CAP` times the mean); ground truth not yet due when the run ends is dropped,
the way real labels that arrive after a dashboard is read are.

Scenarios (the injections start after :data:`WARMUP_SECONDS` of steady traffic):

``steady``
    Normal traffic, drawn like the reference profiles of ``examples/``.
``drift``
    Inputs shift: trips :data:`DRIFT_MILES_FACTOR` times longer; texts followed by long pasted
    passages of words the model never saw, and a phone-heavy channel mix. The drifted features'
    PSI passes 0.25.
``degrade``
    Ground truth breaks: actual fares become ``true x 1.8 + 6`` (MAE far above $5), actual intents
    are another intent 60% of the time (accuracy drops).
``errors``
    20% of requests carry ``"_fault": "error"``: the demo models raise, the service answers 500.
``latency``
    30% of requests carry ``"_fault": "slow"``: the demo models sleep 0.25 to 0.5 s.
``canary``
    Steady traffic and its ground truth from the first request, for a service that runs candidate
    versions: ``model-exporter demo-stack --scenario canary`` serves the fare model with
    ``examples/fare/monitor-canary.yml``, whose canary ``2024.12-overcharge`` (10% of the
    requests) charges 15% more, and checks that ``ModelCandidateWorse`` fires for it on MAE once
    both versions have the 300 outcomes the comparison needs (about 3 minutes at 20 requests/s).
``all``
    Steady, drift, degrade, errors and latency in turn, each a fifth of ``--duration``. Not
    ``canary``: a canary is the service's config from its start, not a fault that comes and goes.

The run ends by itself after ``--duration`` seconds (or on Ctrl-C) and prints a summary.
:func:`run_demo` is the same as a library call that returns the summary.
"""

from exporter.demo._command import add_arguments, describe, run
from exporter.demo._run import run_demo
from exporter.demo._targets import DemoSummary, TargetError, TargetSummary
from exporter.demo._traffic import (
    ALL_PHASES,
    DEPLOYMENTS,
    FEEDBACK_DELAY_CAP,
    SCENARIOS,
    WARMUP_SECONDS,
    Phase,
    schedule,
)

__all__ = [
    "ALL_PHASES",
    "DEPLOYMENTS",
    "FEEDBACK_DELAY_CAP",
    "SCENARIOS",
    "WARMUP_SECONDS",
    "DemoSummary",
    "Phase",
    "TargetError",
    "TargetSummary",
    "add_arguments",
    "describe",
    "run",
    "run_demo",
    "schedule",
]
