"""The stack end to end with the real binaries: exporters -> Prometheus -> Alertmanager -> receiver.

One stack for the whole module (tests/stack_helpers.py): two replicas of a regression model
(``toyfare``) and one classifier (``toyclass``), the webhook receiver, Alertmanager with the
project's routing and inhibition, and Prometheus with copies of the project's rules (every
``for:`` cut to seconds), scraping and evaluating every second. The module fixture drives the
demo scenarios with bounded request loops and a fixed seed:

* drift: replica 0 of toyfare gets ``miles`` from gamma(4.5, 2), replica 1 from the reference
  gamma(2, 2): the fleet is drifting (pooled PSI above 0.25) though one replica alone is not, and
  the pooled PSI is neither replica's nor their mean;
* degrade: every toyfare prediction gets an actual off by up to 20 (MAE about 10 > 5) over more
  than the 100 outcomes the rules require;
* errors: a failing call (negative miles, HTTP 500) for every five predictions (17% > 5%);
* toyclass: reference traffic with 80% correct feedback, then, once the first toyfare
  notifications are in, a drift of its own;
* invalid input on both: missing values in a batch and a mistyped value (HTTP 422).

The exporters' jobs are renamed (model-exporter-fares, model-exporter-classes), replica 1 is also
scraped as a second fleet (``cluster="eu"``: the same model name in another cluster), and a
foreign job exposes a model_info and counters named like the exporter's, for a model that fails
every call and predicts nothing (tests/stack_helpers.py).

The tests then check what reached the receiver, every Grafana panel against the live Prometheus,
the fleet-wide PSI against a computation in the test, that the rules kept to their selector and
kept the fleets apart, what ``model-exporter status`` reads from this Prometheus (``ok`` for
toyclass in steady traffic, the state and recommendations of each toyfare fleet at the moment its
faults' alerts fire) and, last because it kills a replica, what an exporter going down does.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from exporter import stats
from exporter.errors import CommandError
from exporter.profile import ReferenceProfile
from exporter.status.command import add_arguments, run
from exporter.status.prometheus import read_fleet
from tests.binaries import require_binary
from tests.grafana import (
    SAMPLE_VARIABLES,
    PanelQuery,
    has_data,
    load_dashboards,
    panel_queries,
    substitute,
)
from tests.stack_helpers import (
    FARE_JOB,
    FOREIGN_JOB,
    FOREIGN_MODEL,
    MAX_BATCH,
    SECOND_CLUSTER,
    ModelAPI,
    PrometheusAPI,
    PromQLError,
    Stack,
    bin_counts,
    metric_samples,
    poll,
    running_stack,
)
from tests.test_alertmanager import RECEIVER_TOKEN

pytestmark = pytest.mark.stack

FARE = "toyfare"
CLASSIFIER = "toyclass"
SEED = 20261127
#: The exporters' monitoring.min_samples: windowed drift and performance gauges appear after this
#: many values instead of the default 100 (the alert rules' own min_samples guard stays 100).
MONITOR_MIN_SAMPLES = 20
#: Panels that draw a model's own threshold next to the rule default read model_alert_threshold,
#: which holds only the keys a model's config sets. toyfare sets these, at their default values,
#: so those series have data and the alerts behave exactly as with the defaults.
FARE_THRESHOLDS = {"error_ratio": 0.05, "latency_p95_seconds": 0.5, "min_samples": 100}
#: Predictions per toyfare replica and the gamma(shape, scale) their ``miles`` come from.
FARE_TRAFFIC = ((800, (4.5, 2.0)), (400, (2.0, 2.0)))
#: Failing calls sent after each batch of MAX_BATCH (50) predictions: 10 / 60 = 17% of calls.
ERRORS_PER_BATCH = 10
#: toyfare's actuals are the prediction plus uniform(-20, 20): MAE about 10.
FARE_ACTUAL_NOISE = 20.0
CLASSIFIER_PREDICTIONS = 600
CLASSIFIER_CORRECT_SHARE = 0.8
#: toyclass's own drift, sent after the first toyfare notifications: far from gamma(2, 2).
CLASSIFIER_DRIFT = (400, (9.0, 3.0))
ZONES = ("north", "south", "east")

#: Bounds of the waits on the stack (they poll; none is a timing assertion). An alert needs a
#: scrape, an evaluation, its 3s for:, Alertmanager's 1s group_wait and a webhook post.
ALERT_TIMEOUT_SECONDS = 60.0
#: A panel may need the daily drift group (evaluated once a minute) or a minute boundary after
#: an alert started firing ("Alert activity"): at most a minute, plus margin.
PANEL_TIMEOUT_SECONDS = 120.0


@dataclass
class Scenario:
    stack: Stack
    #: model_feature_bin_total of toyfare's ``miles``, read from each replica after its traffic.
    fare_bins: list[dict[str, float]]
    #: Prometheus sample times at which some alert was pending (see test_every_grafana_panel...).
    pending_at: list[float]


# --- driving the scenario -----------------------------------------------------------------------


def _instances(rng: np.random.Generator, count: int, shape: float, scale: float) -> list[dict]:
    miles = rng.gamma(shape, scale, count)
    zones = rng.choice(ZONES, count)
    return [{"miles": float(m), "zone": str(z)} for m, z in zip(miles, zones, strict=True)]


def _record_pending(prometheus: PrometheusAPI, pending_at: list[float]) -> None:
    """Remember the sample time of a pending alert, if one is pending now."""
    stamps = prometheus.values('timestamp(ALERTS{alertstate="pending"})')
    if stamps:
        pending_at.append(max(stamps.values()))


def _wait_recording_pending(
    prometheus: PrometheusAPI, pending_at: list[float], expr: str, timeout: float
) -> bool:
    """Wait (bounded) until ``expr`` has a result, noting pending alerts on the way."""

    def probe() -> bool:
        _record_pending(prometheus, pending_at)
        return bool(prometheus.query(expr))

    return poll(probe, timeout=timeout, interval=0.3)


def _seed_lazy_series(stack: Stack, fare: list[ModelAPI], classifier: ModelAPI) -> None:
    """Create the counter series that appear only with their first increment, and wait for a
    scrape of them: rate() and increase() cannot count what happened before a series' first
    sample, and the scenario's traffic lands within a scrape interval."""
    for api in fare:
        api.predict_failing({"miles": -1.0, "zone": "north"})
    # One outcome of each (predicted, actual) pair: 2 miles is "short", 8 is "long".
    short, short_2, long_, long_2 = classifier.predict(
        [{"miles": 2.0, "zone": "north"}, {"miles": 2.0, "zone": "south"},
         {"miles": 8.0, "zone": "east"}, {"miles": 8.0, "zone": "north"}]
    )  # fmt: skip
    classifier.feedback(
        [(short["prediction_id"], "short"), (short_2["prediction_id"], "long"),
         (long_["prediction_id"], "long"), (long_2["prediction_id"], "short")]
    )  # fmt: skip
    expected = {
        f'count(model_prediction_errors_total{{model="{FARE}", cluster=""}})': len(fare),
        f'count(model_outcomes_total{{model="{CLASSIFIER}"}})': 4,
    }

    def scraped() -> bool:
        return all(
            stack.prometheus.values(expr) == {frozenset(): float(count)}
            for expr, count in expected.items()
        )

    assert poll(scraped, timeout=30, interval=0.2), f"seed series not scraped\n{stack.logs()}"


def _fare_traffic(api: ModelAPI, rng: np.random.Generator, count: int, gamma: tuple) -> None:
    predictions = []
    instances = _instances(rng, count, *gamma)
    for start in range(0, count, MAX_BATCH):
        batch = instances[start : start + MAX_BATCH]
        batch[0] = {**batch[0], "miles": None}  # a missing value: invalid input, still served
        predictions.extend(api.predict(batch))
        for index in range(ERRORS_PER_BATCH):
            api.predict_failing({"miles": -1.0 - index, "zone": "north"})
    api.predict_refused({"miles": "far", "zone": "north"})
    noise = rng.uniform(-FARE_ACTUAL_NOISE, FARE_ACTUAL_NOISE, len(predictions))
    api.feedback(
        [
            (p["prediction_id"], p["prediction"] + float(e))
            for p, e in zip(predictions, noise, strict=True)
        ]
    )


def _classifier_traffic(api: ModelAPI, rng: np.random.Generator) -> None:
    instances = _instances(rng, CLASSIFIER_PREDICTIONS, 2.0, 2.0)
    for index in range(0, len(instances), MAX_BATCH):
        instances[index] = {**instances[index], "zone": None}
    predictions = api.predict(instances)
    api.predict_refused({"miles": {"value": 3}, "zone": "north"})
    correct = rng.random(len(predictions)) < CLASSIFIER_CORRECT_SHARE
    flip = {"short": "long", "long": "short"}
    api.feedback(
        [(p["prediction_id"], p["prediction"] if ok else flip[p["prediction"]])
         for p, ok in zip(predictions, correct, strict=True)]
    )  # fmt: skip


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    prometheus = require_binary("prometheus")
    alertmanager = require_binary("prometheus-alertmanager")
    directory = tmp_path_factory.mktemp("stack")
    with (
        running_stack(
            directory, prometheus, alertmanager, fare_name=FARE, classifier_name=CLASSIFIER,
            fare_thresholds=FARE_THRESHOLDS, classifier_thresholds={},
            min_samples=MONITOR_MIN_SAMPLES,
        ) as stack,
        httpx.Client(timeout=30) as client,
    ):  # fmt: skip
        rng = np.random.default_rng(SEED)
        fare = [ModelAPI(client, replica.url) for replica in stack.fare_replicas]
        classifier = ModelAPI(client, stack.classifier.url)
        pending_at: list[float] = []
        _seed_lazy_series(stack, fare, classifier)

        for api, (count, gamma) in zip(fare, FARE_TRAFFIC, strict=True):
            _fare_traffic(api, rng, count, gamma)
        _classifier_traffic(classifier, rng)
        fare_bins = [bin_counts(api.metrics(), FARE, "miles") for api in fare]

        # toyclass drifts once toyfare's drift notification is in and scraped, so the receiver's
        # counter of ModelFeatureDriftPSI notifications grows after its first sample (an
        # increase() the "Notifications in the time range" panel can show). Not reaching it is
        # not the fixture's to judge: the tests below fail with what they saw.
        notified = _wait_recording_pending(
            stack.prometheus,
            pending_at,
            'model_alert_notifications_total{alertname="ModelFeatureDriftPSI"}',
            ALERT_TIMEOUT_SECONDS,
        )
        count, gamma = CLASSIFIER_DRIFT
        classifier.predict(_instances(rng, count, *gamma))
        if notified:
            _wait_recording_pending(
                stack.prometheus,
                pending_at,
                f'ALERTS{{alertname="ModelFeatureDriftPSI", model="{CLASSIFIER}", '
                'alertstate="firing"}',
                ALERT_TIMEOUT_SECONDS,
            )
        yield Scenario(stack, fare_bins, pending_at)


# --- 1. alerts reach the receiver ---------------------------------------------------------------


def _stored(receiver_url: str, **filters: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{receiver_url}/alerts",
        params={**filters, "limit": "1000"},
        headers={"Authorization": f"Bearer {RECEIVER_TOKEN}"},  # GET /alerts is behind the token
        timeout=10,
    )
    assert response.status_code == 200, response.text
    alerts: list[dict[str, Any]] = response.json()["alerts"]
    return alerts


def test_drift_mae_and_error_ratio_alerts_reach_the_receiver(scenario: Scenario) -> None:
    stack = scenario.stack
    expected = {
        ("ModelFeatureDriftPSI", "critical"): {"feature": "miles"},
        ("ModelMAEHigh", "critical"): {"version": "v1"},
        ("ModelHighErrorRatio", "critical"): {"version": "v1"},
    }

    def arrived() -> dict[tuple[str, str], dict[str, Any]]:
        found = {}
        for alert in _stored(stack.receiver.url, model=FARE, status="firing"):
            if "cluster" in alert["labels"]:
                continue  # the second fleet's (test_rules_keep_to_their_selector_and_fleets)
            key = (alert["alertname"], alert["severity"])
            if key in expected and expected[key].items() <= alert["labels"].items():
                found[key] = alert
        return found if set(found) == set(expected) else {}

    found = poll(arrived, timeout=ALERT_TIMEOUT_SECONDS)
    stored = _stored(stack.receiver.url, model=FARE)
    assert found, (
        f"expected {sorted(expected)} for model {FARE} at the receiver; stored: "
        f"{[(a['alertname'], a['severity'], a['labels']) for a in stored]}\n"
        f"Prometheus alerts: {stack.prometheus.values('ALERTS')}"
    )
    for (alertname, severity), alert in found.items():
        labels = alert["labels"]
        assert labels["alertname"] == alertname
        assert labels["severity"] == severity
        assert labels["model"] == FARE
        # Stored as Alertmanager delivered it: through the webhook receiver, in a group.
        assert alert["receiver"] == "model-exporter-webhook"
        assert alert["groupKey"]
        assert alert["fingerprint"]
        assert alert["id"] >= 1
        assert FARE in alert["annotations"]["summary"]
    assert found[("ModelFeatureDriftPSI", "critical")]["labels"]["feature"] == "miles"

    # The receiver counts what it stored, per alertname, status and severity.
    metrics = httpx.get(f"{stack.receiver.url}/metrics", timeout=10).text
    for alertname, severity in expected:
        counted = metric_samples(
            metrics, "model_alert_notifications_total",
            alertname=alertname, status="firing", severity=severity,
        )  # fmt: skip
        assert sum(counted.values()) >= 1, (alertname, counted)


# --- 2. every Grafana panel -----------------------------------------------------------------------

#: Grafana's variables for both models at once; every version and instance.
VARIABLES = {
    **SAMPLE_VARIABLES,
    "model": f"{FARE}|{CLASSIFIER}",
    "version": ".*",
    "instance": ".*",
    "feature": ["miles", "zone"],
    "window": "1h",
}
RANGE_STEP_SECONDS = 2.0


def _describe(query: PanelQuery) -> str:
    return f"{query.dashboard_uid} panel {query.panel_id} {query.panel_title!r} {query.ref_id}"


def test_every_grafana_panel_query_returns_data(scenario: Scenario) -> None:
    stack = scenario.stack
    # Every dashboard but model-versions: it compares a primary with its candidates, and this
    # stack serves one version per model. tests/test_versions_stack.py runs its every panel
    # query against a Prometheus scraping a primary and a candidate.
    dashboards = {uid: d for uid, d in load_dashboards().items() if uid != "model-versions"}
    queries = [q for d in dashboards.values() for q in panel_queries(d)]
    assert queries, "no dashboard panels found"
    empty = [q for q in queries if not q.expr.strip()]
    assert empty == [], f"panels without a query: {[_describe(q) for q in empty]}"

    # A pending alert exists only between its condition becoming true and its for: elapsing
    # (seconds here), so the "Pending alerts" table has rows only at such moments. The fixture
    # noted when one was pending; an instant query counts as having data if it has data now or
    # at one of those moments (the dashboard as it looked then).
    moments = sorted(set(scenario.pending_at))[-3:]

    def panel_has_data(query: PanelQuery) -> bool:
        expr = substitute(query.expr, VARIABLES)
        now = time.time()
        if not query.instant:
            return has_data(
                stack.prometheus.query_range(expr, stack.started_at, now, RANGE_STEP_SECONDS)
            )
        return any(has_data(stack.prometheus.query(expr, at)) for at in (now, *moments))

    errors: dict[str, str] = {}
    missing = list(queries)

    def check() -> bool:
        still = []
        for query in missing:
            try:
                if not panel_has_data(query):
                    still.append(query)
            except PromQLError as exc:
                errors[_describe(query)] = str(exc)
        missing[:] = still
        return not missing or bool(errors)

    poll(check, timeout=PANEL_TIMEOUT_SECONDS, interval=2.0)
    assert errors == {}, f"panel queries Prometheus refused: {errors}"
    assert missing == [], "panels without data:\n" + "\n".join(
        f"  {_describe(q)}: {substitute(q.expr, VARIABLES)}" for q in missing
    )


# --- 3. fleet-wide PSI --------------------------------------------------------------------------

#: History Prometheus must hold of the replicas before the comparison: the tolerance below
#: shrinks with the number of samples in the range (reached anyway when the panel test ran first).
MIN_HISTORY_SECONDS = 60.0


def _pooled_psi(reference: np.ndarray, counts: list[np.ndarray], weight: float) -> float:
    """PSI of replica 0's bin counts plus ``weight`` times replica 1's."""
    return float(stats.psi(reference, counts[0] + weight * counts[1]).statistic)


def _by_instance_and_bin(
    values: dict[frozenset[tuple[str, str]], float],
) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for key, value in values.items():
        labels = dict(key)
        found.setdefault(labels["instance"], {})[labels["bin"]] = value
    return found


def test_fleet_psi_recording_rule_equals_psi_of_summed_replica_bins(scenario: Scenario) -> None:
    stack = scenario.stack
    prometheus = stack.prometheus
    feature = ReferenceProfile.load(stack.fare_reference).features["miles"]
    reference = np.asarray(feature.reference_share)
    counts = [np.asarray([b[label] for label in feature.bin_labels]) for b in scenario.fare_bins]
    expected = _pooled_psi(reference, counts, 1.0)
    alone = [float(stats.psi(reference, c).statistic) for c in counts]
    assert expected > 0.25, f"the scenario did not drift the fleet: PSI {expected}"

    # toyfare's traffic is over: wait until Prometheus's latest samples of both replicas are the
    # counts read from their /metrics, then for an evaluation of the rule after those samples.
    # The first fleet (no cluster label): both replicas.
    selector = f'model_feature_bin_total{{model="{FARE}", feature="miles", cluster=""}}'
    final = {
        replica.address: bins
        for replica, bins in zip(stack.fare_replicas, scenario.fare_bins, strict=True)
    }

    def scraped_at() -> float:
        now = time.time()
        if _by_instance_and_bin(prometheus.values(selector, now)) != final:
            return 0.0
        return max(prometheus.values(f"timestamp({selector})", now).values())

    last_scrape = poll(scraped_at, timeout=30)
    assert last_scrape, (
        f"Prometheus never had the final counts {final}: "
        f"{_by_instance_and_bin(prometheus.values(selector))}"
    )
    poll(
        lambda: time.time() - stack.first_scraped_at >= MIN_HISTORY_SECONDS,
        timeout=MIN_HISTORY_SECONDS,
        interval=1.0,
    )
    rule = f'model_feature:model_feature_psi:1h{{model="{FARE}", feature="miles", cluster=""}}'

    def evaluated() -> tuple[float, float] | None:
        now = time.time()
        value = prometheus.values(rule, now)
        stamp = prometheus.values(f"timestamp({rule})", now)
        if len(value) == len(stamp) == 1 and next(iter(stamp.values())) > last_scrape:
            return next(iter(value.values())), next(iter(stamp.values()))
        return None

    result = poll(evaluated, timeout=30)
    assert result is not None, f"{rule} was not evaluated after the final scrape"
    recorded, evaluated_at = result

    # The tolerance. increase() extrapolates: it scales each series' increase by
    # (sampled interval + gap to the range's end) / sampled interval, the gap counted only when
    # under 1.1 average scrape intervals (half an interval otherwise), i.e. by at most
    # 1 + 1.1 / (samples - 1). The start adds nothing: every first sample is 0, as traffic began
    # after the first scrape (checked below). All bins of one replica come from the same scrapes
    # and share the factor, so each replica's shares are exact; but the pooled shares weight
    # replica 1's counts against replica 0's by the ratio of their factors, somewhere in
    # [1 / (1 + eps0), 1 + eps1]. The tolerance is the largest PSI change such a weight causes
    # (under 1% of the PSI here); 1e-9 covers floating point.
    history = prometheus.query(f"{selector}[1h]", evaluated_at)
    samples: dict[str, int] = {}
    for series in history:
        values = series["values"]
        assert float(values[0][1]) == 0.0, f"traffic before the first scrape: {series}"
        instance = series["metric"]["instance"]
        samples[instance] = min(samples.get(instance, len(values)), len(values))
    eps = [1.1 / (samples[replica.address] - 1) for replica in stack.fare_replicas]
    weights = np.linspace(1 / (1 + eps[0]), 1 + eps[1], 41)
    tolerance = 1e-9 + max(abs(_pooled_psi(reference, counts, w) - expected) for w in weights)

    assert recorded == pytest.approx(expected, abs=tolerance), (recorded, expected, tolerance)
    # The comparison tells pooling from its alternatives: each replica's own PSI and the mean of
    # the two are all far outside the tolerance.
    for other in (*alone, sum(alone) / len(alone)):
        assert abs(other - expected) > 10 * tolerance, (other, expected, tolerance)


# --- 4. the rules keep to their selector and keep fleets apart --------------------------------


def _labelled(values: dict[frozenset[tuple[str, str]], float], label: str) -> dict[str, float]:
    """An instant query's values by the value of ``label`` ("" where a series lacks it)."""
    return {dict(key).get(label, ""): value for key, value in values.items()}


def test_rules_keep_to_their_selector_and_fleets(scenario: Scenario) -> None:
    stack = scenario.stack
    prometheus = stack.prometheus
    since = f"{max(1, int(time.time() - stack.first_scraped_at))}s"

    # The foreign job was scraped all along, its model failing every call and predicting nothing:
    # unscoped rules gave it thresholds, rates, and ModelHighErrorRatio and ModelNoPredictions.
    foreign = f'{{job="{FOREIGN_JOB}", model="{FOREIGN_MODEL}"}}'
    assert prometheus.values(f"model_info{foreign}"), prometheus.values(
        f'up{{job="{FOREIGN_JOB}"}}'
    )
    failed = prometheus.values(f"increase(model_prediction_errors_total{foreign}[{since}])")
    assert failed and min(failed.values()) > 100, failed
    recorded = prometheus.values(
        f'count_over_time({{__name__=~".+:.+", model="{FOREIGN_MODEL}"}}[{since}])'
    )
    assert recorded == {}, f"recorded series for the foreign job's model: {recorded}"
    alerted = prometheus.values(f'count_over_time(ALERTS{{model="{FOREIGN_MODEL}"}}[{since}])')
    assert alerted == {}, f"alerts for the foreign job's model: {alerted}"
    assert _stored(stack.receiver.url, model=FOREIGN_MODEL) == []

    # The same model in two fleets: two series of every rule, each with its own numbers. The
    # second fleet is replica 1 alone, whose miles follow the reference: its PSI is far below
    # the pooled fleet's, and its rate is replica 1's share of the traffic.
    psi = _labelled(
        prometheus.values(f'model_feature:model_feature_psi:1h{{model="{FARE}", feature="miles"}}'),
        "cluster",
    )
    assert set(psi) == {"", SECOND_CLUSTER}, psi
    assert psi[""] > 0.25 > psi[SECOND_CLUSTER], psi
    calls = _labelled(
        prometheus.values(
            f'sum by (cluster) (model:model_prediction_calls:increase1h{{model="{FARE}"}})'
        ),
        "cluster",
    )
    assert set(calls) == {"", SECOND_CLUSTER} and calls[SECOND_CLUSTER] < calls[""], calls
    thresholds = _labelled(
        prometheus.values(
            f'model_alert:model_alert_threshold:effective{{model="{FARE}", alert="error_ratio"}}'
        ),
        "cluster",
    )
    assert thresholds == {"": 0.05, SECOND_CLUSTER: 0.05}, thresholds
    # Each fleet's alerts carry its cluster: the second fleet fails a sixth of its calls too.
    ratio_alerts = _labelled(
        prometheus.values(
            f'ALERTS{{alertname="ModelHighErrorRatio", model="{FARE}", alertstate="firing"}}'
        ),
        "cluster",
    )
    assert set(ratio_alerts) == {"", SECOND_CLUSTER}, ratio_alerts

    # Every exporter job is renamed (none is model-exporter), yet matched: no ModelExporterAbsent,
    # not even pending, since every target was first scraped.
    absent = prometheus.values(
        f'count_over_time(ALERTS{{alertname="ModelExporterAbsent"}}[{since}])'
    )
    assert absent == {}, absent
    assert _stored(stack.receiver.url, alertname="ModelExporterAbsent") == []


# --- 5. the health summary (model-exporter status) -------------------------------------------


def _sample_time(
    stack: Stack, expr: str, accept: Callable[[float], bool], *, last: bool = False
) -> float:
    """The first (with ``last``, the last) sample time since the stack started at which the
    single series of ``expr`` satisfied ``accept``; 0 when it never did."""
    series = stack.prometheus.query_range(expr, stack.started_at, time.time(), 1.0)
    stamps = [float(t) for s in series for t, v in s["values"] if accept(float(v))]
    return (max(stamps) if last else min(stamps)) if stamps else 0.0


def test_status_says_what_to_do_for_each_fault_and_ok_when_steady(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = scenario.stack
    prometheus = stack.prometheus

    # toyclass in steady traffic: the last scrape before its own drift, when it had served
    # exactly the seeded and the reference predictions.
    steady = CLASSIFIER_PREDICTIONS + 4
    steady_at = _sample_time(
        stack, f'sum(model_predictions_total{{model="{CLASSIFIER}"}})', lambda v: v == steady,
        last=True,
    )  # fmt: skip
    assert steady_at, "toyclass never had exactly its steady predictions"
    [classifier] = read_fleet(stack.prometheus.url, model=CLASSIFIER, at=steady_at).models
    assert classifier.state == "ok", classifier
    assert classifier.recommendations == ()
    assert classifier.signal("accuracy") is not None

    # toyfare once every fault is in: every outcome (the feedback comes last) recorded, and the
    # drift, MAE and error-ratio alerts firing.
    outcomes = f'sum(model_absolute_error_count{{model="{FARE}", cluster=""}})'
    final = max(prometheus.values(outcomes).values())
    all_in = _sample_time(stack, outcomes, lambda v: v == final)
    names = ("ModelFeatureDriftPSI", "ModelMAEHigh", "ModelHighErrorRatio")
    firing = _sample_time(
        stack,
        f'count(count by (alertname) (ALERTS{{model="{FARE}", cluster="", alertstate="firing", '
        f'alertname=~"{"|".join(names)}"}}))',
        lambda v: v == len(names),
    )
    assert all_in and firing, (all_in, firing)
    at = max(all_in + 2, firing)
    fleets = {s.fleet.get("cluster", ""): s for s in read_fleet(stack.prometheus.url, at=at).models
              if s.model == FARE}  # fmt: skip
    assert set(fleets) == {"", SECOND_CLUSTER}, fleets
    fare = fleets[""]
    assert fare.state == "critical"
    assert {a.name for a in fare.alerts} >= set(names)
    assert fare.drift[0].feature == "miles" and fare.drift[0].state != "ok", fare.drift
    texts = {r.rule: r.text for r in fare.recommendations}
    assert texts["retrain"].startswith("miles has drifted (PSI "), texts
    assert "MAE " in texts["retrain"]
    assert texts["errors-one-kind"].startswith("errors are all ToyFailure"), texts
    # The same model in the other fleet (replica 1 alone, reference traffic): a worse MAE
    # without drift, so the ground truth is the first suspect, not the inputs.
    eu = fleets[SECOND_CLUSTER]
    assert eu.state == "critical"
    assert [d.state for d in eu.drift] == ["ok", "ok"], eu.drift
    assert "performance-without-drift" in {r.rule for r in eu.recommendations}

    # The command against the live Prometheus: JSON, and the table, for both models.
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args(["--prometheus", stack.prometheus.url, "--json"])) == 0
    answer = json.loads(capsys.readouterr().out)
    assert {m["model"] for m in answer["models"]} == {FARE, CLASSIFIER}
    assert run(parser.parse_args(["--prometheus", stack.prometheus.url, "--model", FARE])) == 0
    table = capsys.readouterr().out
    assert table.startswith(f"source: prometheus {stack.prometheus.url}")
    assert f"\n{FARE} " in table and CLASSIFIER not in table
    with pytest.raises(CommandError, match="knows no model 'nosuch'"):
        run(parser.parse_args(["--prometheus", stack.prometheus.url, "--model", "nosuch"]))


# --- 6. a replica dies --------------------------------------------------------------------------


def _alertmanager_alerts(url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v2/alerts", timeout=10)
    assert response.status_code == 200, response.text
    alerts: list[dict[str, Any]] = response.json()
    return alerts


def test_killed_replica_fires_exporter_down_and_inhibits_the_models_alerts(
    scenario: Scenario,
) -> None:
    stack = scenario.stack
    victim = stack.fare_replicas[0]
    assert stack.prometheus.targets_up().get(victim.address) == 1
    assert _stored(stack.receiver.url, alertname="ModelExporterDown") == []
    victim.kill()

    def down_alert(alerts: list[dict[str, Any]]) -> dict[str, Any] | None:
        for alert in alerts:
            labels = alert["labels"]
            if labels.get("alertname") == "ModelExporterDown" and labels.get("model") == FARE:
                return alert
        return None

    def inhibited() -> dict[str, Any] | None:
        """Alertmanager's alerts, once toyfare's MAE and drift alerts are inhibited by it."""
        alerts = _alertmanager_alerts(stack.alertmanager.url)
        down = down_alert(alerts)
        if down is None:
            return None
        targets = [
            a for a in alerts
            if a["labels"].get("model") == FARE and "cluster" not in a["labels"]
            and a["labels"]["alertname"] in ("ModelMAEHigh", "ModelFeatureDriftPSI")
            and a["labels"]["severity"] == "critical"
        ]  # fmt: skip
        if len(targets) == 2 and all(
            down["fingerprint"] in a["status"]["inhibitedBy"] for a in targets
        ):
            return {"down": down, "alerts": alerts}
        return None

    state = poll(inhibited, timeout=ALERT_TIMEOUT_SECONDS)
    assert state is not None, (
        "toyfare's alerts were not inhibited by ModelExporterDown; Alertmanager has "
        f"{[(a['labels'], a['status']) for a in _alertmanager_alerts(stack.alertmanager.url)]}"
    )
    down = state["down"]
    assert down["labels"]["severity"] == "critical"
    assert down["labels"]["instance"] == victim.address
    assert down["labels"]["job"] == FARE_JOB  # renamed, still matched by the selector
    assert "cluster" not in down["labels"]
    assert down["status"]["state"] == "active"
    for alert in state["alerts"]:
        labels, status = alert["labels"], alert["status"]
        if labels.get("model") == FARE and labels.get("cluster") == SECOND_CLUSTER:
            # The same model in the other fleet is served by its own targets: not hidden.
            assert down["fingerprint"] not in status["inhibitedBy"], (labels, status)
        elif labels.get("model") == FARE and labels["alertname"] != "ModelExporterDown":
            # Every other alert of the model is hidden while its exporter is down. Alertmanager
            # names one inhibiting alert: for a critical that can only be ModelExporterDown, a
            # warning may be named as inhibited by its critical instead.
            assert status["state"] == "suppressed", (labels, status)
            assert status["inhibitedBy"], (labels, status)
            if labels["severity"] == "critical":
                assert status["inhibitedBy"] == [down["fingerprint"]], (labels, status)
        elif labels.get("model") == CLASSIFIER:
            # Another model's alerts are not.
            assert down["fingerprint"] not in status["inhibitedBy"], (labels, status)
    assert any(
        a["labels"].get("model") == CLASSIFIER and a["status"]["state"] == "active"
        for a in state["alerts"]
    ), "toyclass has no active alert to show it was left alone"

    def delivered() -> list[dict[str, Any]]:
        return _stored(stack.receiver.url, alertname="ModelExporterDown", status="firing")

    stored = poll(delivered, timeout=ALERT_TIMEOUT_SECONDS)
    assert stored, "ModelExporterDown did not reach the receiver"
    [notification] = stored
    assert notification["model"] == FARE
    assert notification["severity"] == "critical"
    assert notification["labels"]["instance"] == victim.address
