"""ModelMonitor.push against a real Pushgateway: runs add up, gauges are the last run's, a new
series is seen at 0 before its total, and a refused or unreachable gateway is one clear error."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from exporter.monitor import ModelMonitor
from exporter.profile import ReferenceProfile
from exporter.pushgateway import (
    GatewayPush,
    PushError,
    group_labels,
    read_group,
    run_series,
    totals,
)
from tests.binaries import free_port
from tests.gateway import gateway_samples, pushgateway, total

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "examples" / "fare" / "reference.json"


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    with pushgateway(tmp_path) as url:
        yield url


def fare_monitor(registry: CollectorRegistry, **kwargs: Any) -> ModelMonitor:
    return ModelMonitor(
        "fare", version="v1", task="regression", reference=ReferenceProfile.load(REFERENCE),
        registry=registry, flush_interval=None, **kwargs,
    )  # fmt: skip


def rows(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "trip_miles": rng.gamma(2.0, 1.5, n) + shift,
            "trip_seconds": rng.gamma(3.0, 300.0, n),
            "straight_line_km": rng.gamma(2.0, 1.2, n),
            "hour": rng.integers(0, 24, n),
        }
    )


@pytest.mark.stack
def test_two_runs_add_up_and_gauges_are_the_last_runs(gateway: str) -> None:
    first = fare_monitor(CollectorRegistry())
    first.observe_batch(rows(500, 1), np.full(500, 12.0), keep=False)
    first.record_error(ValueError("bad row"))
    report = first.push(gateway, scrape_interval=0)
    assert report.first_run and report.new_series > 0 and report.waited_seconds == 0
    assert report.group == {"job": "model-exporter-batch", "model": "fare", "version": "v1"}

    # The next night: a new process, a new monitor, no errors, 300 rows.
    second = fare_monitor(CollectorRegistry(), thresholds={"mae_warning": 9.0})
    second.observe_batch(rows(300, 2), np.full(300, 11.0), keep=False)
    report = second.push(gateway, scrape_interval=0)
    assert not report.first_run

    predictions = gateway_samples(gateway, "model_predictions_total")
    assert total(predictions, job="model-exporter-batch", model="fare") == 800
    bins = gateway_samples(gateway, "model_feature_bin_total")
    assert total(bins, feature="trip_miles") == 800
    # The first night's error kind is kept although the second run had none.
    errors = gateway_samples(gateway, "model_prediction_errors_total")
    assert total(errors, error="ValueError") == 1
    # A gauge is the last run's: its threshold, not the first's absence of one.
    thresholds = gateway_samples(gateway, "model_alert_threshold")
    assert total(thresholds, alert="mae_warning") == 9.0
    # No creation times: they would be the last run's, meaningless for totals over runs.
    assert not gateway_samples(gateway, "model_predictions_created")
    count = gateway_samples(gateway, "model_prediction_confidence_count")
    assert total(count) == 0  # regression: no confidence, still a series at 0


@pytest.mark.stack
def test_a_series_new_to_the_group_is_at_zero_until_a_scrape_interval_has_passed(
    gateway: str,
) -> None:
    monitor = fare_monitor(CollectorRegistry())
    monitor.observe_batch(rows(200, 3), np.full(200, 10.0), keep=False)
    monitor.flush()
    seen_during_wait: list[float] = []

    def sleep(seconds: float) -> None:
        # What Prometheus scrapes while the push waits: every new series at 0.
        assert seconds == pytest.approx(3.0, abs=0.1)
        predictions = gateway_samples(gateway, "model_predictions_total")
        seen_during_wait.append(total(predictions, model="fare"))

    group = group_labels("model-exporter-batch", monitor.model_labels, {"instance": "shard-1"})
    pusher = GatewayPush(gateway, group, monitor.model_labels, scrape_interval=2.0, sleep=sleep)
    report = pusher.push(monitor.registry)
    assert seen_during_wait == [0.0]
    assert report.waited_seconds == pytest.approx(3.0, abs=0.1)
    assert total(gateway_samples(gateway, "model_predictions_total"), instance="shard-1") == 200

    # A second run with the same series waits for nothing.
    monitor2 = fare_monitor(CollectorRegistry())
    monitor2.observe_batch(rows(100, 4), np.full(100, 10.0), keep=False)
    monitor2.flush()
    pusher = GatewayPush(gateway, group, monitor2.model_labels, scrape_interval=2.0, sleep=sleep)
    report = pusher.push(monitor2.registry)
    assert report.waited_seconds == 0 and report.new_series == 0
    assert total(gateway_samples(gateway, "model_predictions_total"), instance="shard-1") == 300


@pytest.mark.stack
def test_announcing_at_the_start_makes_the_end_of_the_run_wait_only_for_the_rest(
    gateway: str,
) -> None:
    clock = [100.0]
    slept: list[float] = []
    monitor = fare_monitor(CollectorRegistry())
    group = group_labels("model-exporter-batch", monitor.model_labels, None)
    pusher = GatewayPush(gateway, group, monitor.model_labels, scrape_interval=15.0,
                         sleep=slept.append, clock=lambda: clock[0])  # fmt: skip
    assert pusher.announce(monitor.registry)
    bins = gateway_samples(gateway, "model_feature_bin_total")
    assert bins and set(bins.values()) == {0.0}
    clock[0] += 10.0  # the scoring took 10 s of the 16 to wait
    monitor.observe_batch(rows(100, 5), np.full(100, 10.0), keep=False)
    monitor.flush()
    report = pusher.push(monitor.registry)
    assert slept == [pytest.approx(6.0)]
    assert report.first_run
    assert total(gateway_samples(gateway, "model_feature_bin_total"), feature="hour") == 100


@pytest.mark.stack
def test_another_models_series_on_a_shared_registry_are_not_pushed(gateway: str) -> None:
    registry = CollectorRegistry()
    fare = fare_monitor(registry)
    other = ModelMonitor("other", task="regression", registry=registry, flush_interval=None)
    fare.observe_batch(rows(10, 6), np.full(10, 1.0), keep=False)
    other.observe({}, 3.0)
    fare.push(gateway, scrape_interval=0)
    models = {dict(k).get("model") for k in gateway_samples(gateway, "model_predictions_total")}
    assert models == {"fare"}


@pytest.mark.stack
def test_a_refused_push_is_one_clear_error_and_nothing_of_the_run_is_pushed(gateway: str) -> None:
    # Another job pushed a series of one of our names as a gauge: the gateway refuses any push
    # that would make its exposition inconsistent, ours included.
    request = urllib.request.Request(
        f"{gateway}/metrics/job/other", method="PUT",
        data=b"# TYPE model_predictions_total gauge\nmodel_predictions_total 1\n",
    )  # fmt: skip
    urllib.request.urlopen(request, timeout=5).close()
    monitor = fare_monitor(CollectorRegistry())
    monitor.observe_batch(rows(20, 8), np.full(20, 1.0), keep=False)
    with pytest.raises(PushError) as refused:
        monitor.push(gateway, scrape_interval=0)
    message = str(refused.value)
    assert "refused the push (400)" in message and "\n" not in message
    assert not gateway_samples(gateway, "model_feature_bin_total")


@pytest.mark.stack
def test_an_unreachable_gateway_is_one_clear_error() -> None:
    monitor = fare_monitor(CollectorRegistry())
    with pytest.raises(PushError, match="cannot reach the Pushgateway at http://127.0.0.1:"):
        monitor.push(f"http://127.0.0.1:{free_port()}", scrape_interval=0, timeout=2)


def test_grouping_keys_the_gateway_would_refuse_or_merge_are_refused() -> None:
    labels = ("fare", "v1")
    with pytest.raises(ValueError, match="'instance' is empty"):
        group_labels("model-exporter-batch", labels, {"instance": ""})
    with pytest.raises(ValueError, match="'model'"):
        group_labels("model-exporter-batch", labels, {"model": "x"})
    for bad in ("bad-name", "régión", "1st", "__meta"):
        with pytest.raises(ValueError, match="not a Prometheus label name"):
            group_labels("model-exporter-batch", labels, {bad: "x"})
    with pytest.raises(ValueError, match="'job' is empty"):
        group_labels("", labels, None)
    assert group_labels("j", labels, {"shard": "3"}) == {
        "job": "j", "model": "fare", "version": "v1", "shard": "3",
    }  # fmt: skip


def test_totals_add_counters_and_histograms_and_keep_series_the_run_lacks() -> None:
    registry = CollectorRegistry()
    monitor = fare_monitor(registry)
    monitor.observe_batch(rows(10, 8), np.full(10, 2.0), keep=False)
    monitor.flush()
    group = group_labels("job", monitor.model_labels, None)
    run = run_series(registry, monitor.model_labels, group)
    previous = {
        ("model_predictions_total", (("confidence_bucket", "none"), ("predicted", ""))): 90.0,
        ("model_prediction_errors_total", (("error", "KeyError"),)): 4.0,
        ("model_prediction_duration_seconds_bucket", (("le", "+Inf"),)): 7.0,
    }
    families, new = totals(previous, run)
    by_name = {s.name: [] for f in families for s in f.samples}  # type: dict[str, list[Any]]
    for family in families:
        for sample in family.samples:
            by_name[sample.name].append(sample)
    predicted = [
        s for s in by_name["model_predictions_total"] if s.labels["confidence_bucket"] == "none"
    ]
    assert [s.value for s in predicted] == [100.0]
    assert [(s.labels, s.value) for s in by_name["model_prediction_errors_total"]] == [
        ({"error": "KeyError"}, 4.0)
    ]
    inf = [
        s for s in by_name["model_prediction_duration_seconds_bucket"] if s.labels["le"] == "+Inf"
    ]
    assert [s.value for s in inf] == [7.0]
    assert (
        "model_predictions_total",
        (("confidence_bucket", "none"), ("predicted", "")),
    ) not in new
    assert all(not s.name.endswith("_created") for f in families for s in f.samples)


def test_a_group_is_found_by_its_exact_labels_in_the_gateways_json(monkeypatch: Any) -> None:
    document = {
        "status": "success",
        "data": [
            {"labels": {"job": "j", "model": "m", "version": "v", "instance": "a"},
             "c_total": {"type": "COUNTER",
                         "metrics": [{"labels": {"instance": "a"}, "value": "1"}]}},
            {"labels": {"job": "j", "model": "m", "version": "v"},
             "c_total": {"type": "COUNTER",
                         "metrics": [{"labels": {"instance": ""}, "value": "5"}]},
             "h": {"type": "HISTOGRAM", "metrics": [{"labels": {}, "count": "3", "sum": "1.5",
                                                      "buckets": {"1": "2", "+Inf": "3"}}]},
             "push_time_seconds": {"type": "GAUGE", "metrics": [{"labels": {}, "value": "9"}]}},
        ],
    }  # fmt: skip

    class Answer:
        def __enter__(self) -> Answer:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def read(self) -> bytes:
            return json.dumps(document).encode()

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Answer())
    found = read_group("gw:9091", {"job": "j", "model": "m", "version": "v"}, 1.0)
    assert found == {
        ("c_total", ()): 5.0,
        ("h_count", ()): 3.0,
        ("h_sum", ()): 1.5,
        ("h_bucket", (("le", "1.0"),)): 2.0,
        ("h_bucket", (("le", "+Inf"),)): 3.0,
    }
    assert read_group("gw:9091", {"job": "j", "model": "m", "version": "w"}, 1.0) is None
