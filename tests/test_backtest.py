"""``model-exporter backtest``: the alert state machine, the replay, and known answers.

* The state machine (pending after the first evaluation, firing ``for`` later, resolved when the
  series goes, ``keep_firing_for``) is checked against ``promtool test rules`` on the same
  samples: the samples are backfilled into a TSDB, queried back over the range and run through
  the machine, and every minute's firing alerts it finds are written as a promtool test that
  promtool must pass.
* A generated log with a known answer: latency goes bad at minute 60 for 10% of calls, so the
  latency alert (its 5-minute p95 above the threshold, held ``for`` its duration) must go
  pending within minutes of the fault and fire ``for`` later, and none may fire before it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from exporter.backtest.alerts import run_state_machine
from exporter.backtest.log import LogError, PredictionLog
from exporter.backtest.rules import (
    AlertRule,
    RecordingRule,
    RuleFileError,
    load_rules,
    recording_levels,
    signal_of,
)
from exporter.backtest.tsdb import PrometheusOnBlocks, Tools, backfill_openmetrics
from exporter.cli import main
from exporter.config import load_config
from exporter.demo_models import fare
from tests.binaries import require_binary
from tests.service_fixtures import ROOT

START = 1_700_000_040.0  # a whole minute
#: One sample a minute for 40 minutes: above 5 means the alert condition holds.
SIGNAL = [1, 1, 6, 6, 6, 6, 2, 6, 6, 6, 6, 6, 6, 1, 1, 6, 6, 1, 6, 6,
          6, 6, 6, 6, 6, 1, 1, 1, 1, 6, 6, 6, 6, 1, 6, 1, 1, 1, 1, 1]  # fmt: skip
RULES = {
    "Plain": {"for": "2m"},
    "KeepFiring": {"for": "2m", "keep_firing_for": "3m"},
    "Immediate": {"for": "0s"},
}


def _rule_file(path: Path) -> None:
    rules = [{"alert": name, "expr": "test_signal > 5", **timing, "labels": {"severity": "x"}}
             for name, timing in RULES.items()]  # fmt: skip
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "interval": "1m", "rules": rules}]}))


def _machine_from_values(values: dict[float, float], rule: str) -> list[tuple[float, bool]]:
    """Per minute, whether the machine says the rule's alert is firing."""
    key: tuple[tuple[str, str], ...] = (("instance", "i"), ("job", "j"))
    series = {key: {t: v for t, v in values.items() if v > 5}}
    stamps = [START + 60 * i for i in range(len(SIGNAL))]
    timing = RULES[rule]
    episodes = run_state_machine(
        series, stamps, float(pd.Timedelta(timing["for"]).total_seconds()),
        float(pd.Timedelta(timing.get("keep_firing_for", "0s")).total_seconds()),
    )  # fmt: skip
    firing = []
    for stamp in stamps:
        up = any(
            e.fired_at is not None
            and e.fired_at <= stamp
            and (e.ended_at is None or stamp < e.ended_at)
            for e in episodes
        )
        firing.append((stamp, up))
    return firing


@pytest.mark.stack
def test_state_machine_over_backfilled_samples_agrees_with_promtool(tmp_path: Path) -> None:
    require_binary("prometheus")
    promtool = require_binary("promtool")
    tools = Tools.find()
    # The samples as a scrape would have stored them, backfilled and read back.
    source = tmp_path / "samples.om"
    lines = ["# TYPE test_signal gauge\n"]
    lines += [f'test_signal{{instance="i",job="j"}} {v} {START + 60 * i:.3f}\n'
              for i, v in enumerate(SIGNAL)]  # fmt: skip
    source.write_text("".join(lines) + "# EOF\n")
    tsdb = tmp_path / "tsdb"
    tsdb.mkdir()
    backfill_openmetrics(tools, source, tsdb)
    with PrometheusOnBlocks(tools, tsdb, tmp_path) as server:
        read_back = server.query_range("test_signal", START, START + 60 * (len(SIGNAL) - 1), 60)
    assert len(read_back) == 1
    values = next(iter(read_back.values()))
    assert [values[START + 60 * i] for i in range(len(SIGNAL))] == SIGNAL

    rules = tmp_path / "rules.yml"
    _rule_file(rules)
    tests = []
    for name in RULES:
        for stamp, firing in _machine_from_values(values, name):
            expected = (
                [{"exp_labels": {"severity": "x", "instance": "i", "job": "j"}}] if firing else []
            )
            tests.append({"eval_time": f"{int(stamp - START)}s", "alertname": name,
                          "exp_alerts": expected})  # fmt: skip
    # Prometheus keeps a series 5 minutes after its last sample (the lookback); the promtool test
    # must end the series where the backfilled one ends, so its samples stop there too.
    test_file = tmp_path / "test.yml"
    test_file.write_text(yaml.safe_dump({
        "rule_files": [str(rules)], "evaluation_interval": "1m",
        "tests": [{"interval": "1m",
                   "input_series": [{"series": 'test_signal{instance="i",job="j"}',
                                     "values": " ".join(str(v) for v in SIGNAL)}],
                   "alert_rule_test": tests}],
    }))  # fmt: skip
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # And the machine did see both kinds of ending: a resolution and a kept-firing gap.
    plain = [up for _, up in _machine_from_values(values, "Plain")]
    kept = [up for _, up in _machine_from_values(values, "KeepFiring")]
    assert plain != kept and sum(kept) > sum(plain)


def _fare_log(minutes: int, rate: float, fault_at: int, threshold: float) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = int(minutes * 60 * rate)
    times = START + np.sort(rng.uniform(0, minutes * 60, n))
    trips = fare.synthetic_trips(n, 5)
    frame = trips[list(fare.FEATURES)].copy()
    frame["time"] = times
    frame["prediction"] = fare.model().predict_frame(trips)
    frame["latency_seconds"] = rng.lognormal(np.log(0.003), 0.3, n)
    faulty = times >= START + fault_at * 60
    slow = faulty & (rng.random(n) < 0.10)
    frame.loc[slow, "latency_seconds"] = 3 * threshold
    frame["phase"] = np.where(faulty, "latency", "stable")
    return frame


@pytest.mark.stack
@pytest.mark.slow
def test_backtest_finds_the_latency_fault_when_it_happens_and_nothing_before(
    tmp_path: Path,
) -> None:
    require_binary("prometheus")
    require_binary("promtool")
    config_path = ROOT / "examples" / "fare" / "monitor.yml"
    threshold = load_config(config_path).thresholds["latency_p95_seconds"]
    fault_at = 60
    _fare_log(100, 2.0, fault_at, threshold).to_csv(tmp_path / "log.csv", index=False)
    out = tmp_path / "out"
    code = main(["backtest", "--log", str(tmp_path / "log.csv"), "--config", str(config_path),
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["calls"] == 12_000
    fault = START + fault_at * 60
    latency = [a for a in report["alerts"] if a["alertname"] == "ModelHighLatencyP95"]
    fired = [a for a in latency if a["firing_at"] is not None]
    assert fired, report["alerts"]
    first = min(fired, key=lambda a: a["firing_at"])
    # The fault's calls take 3x the threshold, past the critical one (twice the warning): the
    # critical fires first. Pending once the short window holds more than 5% slow calls (plus a
    # scrape and an evaluation), firing its `for:` later: within 5 minutes of the fault.
    assert first["severity"] == "critical"
    assert fault < first["pending_at"] <= fault + 5 * 60
    assert first["firing_at"] - first["pending_at"] == pytest.approx(first["for_seconds"], abs=15)
    assert first["firing_at"] - fault <= 5 * 60
    # Before the fault, no alert fired at all (pending ones on a cold start may come and go).
    early = [a for a in report["alerts"] if a["firing_at"] is not None and a["firing_at"] < fault]
    assert early == []
    page = (out / "report.html").read_text()
    assert "ModelHighLatencyP95" in page and "<svg" in page
    assert "model:model_prediction_duration_seconds:p95_3m" in page


# -- pieces ---------------------------------------------------------------------------------------


def test_recording_rules_come_in_dependency_order() -> None:
    rules = load_rules(sorted((ROOT / "prometheus" / "rules").glob("*.yml")))
    levels = recording_levels(rules.recording)
    seen: set[str] = set()
    recorded = {r.record for r in rules.recording}
    for level in levels:
        for rule in level:
            reads = {n for n in recorded if n in rule.expr and n != rule.record}
            assert reads <= seen, (rule.record, reads - seen)
        seen |= {r.record for r in level}
    assert seen == recorded


def test_a_cycle_of_recording_rules_is_refused() -> None:
    a = RecordingRule("a:x:y", "b:x:y + 1", {}, "g", None)
    b = RecordingRule("b:x:y", "a:x:y * 2", {}, "g", None)
    with pytest.raises(RuleFileError, match="cycle"):
        recording_levels([a, b])


def test_the_signal_and_threshold_of_an_alert_are_found_for_plots() -> None:
    rule = AlertRule(
        "ModelFeatureDriftPSI",
        'model_feature:model_feature_psi:1h{feature!="__prediction__"} > on (model) group_left ()'
        ' model_alert:model_alert_threshold:effective{alert="psi_warning"}',
        {}, {}, 0, 0, "g", None,
    )  # fmt: skip
    signal, threshold = signal_of(
        rule, {"model_feature:model_feature_psi:1h", "model_alert:model_alert_threshold:effective"}
    )
    assert signal == ['model_feature:model_feature_psi:1h{feature!="__prediction__"}']
    assert threshold == 'model_alert:model_alert_threshold:effective{alert="psi_warning"}'
    guarded = AlertRule(
        "ModelGroundTruthMissing",
        "model:model_outcomes:coverage1h < 0.01 and on (model, version) x >= on (model) "
        'group_left () model_alert:model_alert_threshold:effective{alert="min_samples"}',
        {}, {}, 0, 0, "g", None,
    )  # fmt: skip
    assert signal_of(guarded, {"model:model_outcomes:coverage1h"}) == (
        ["model:model_outcomes:coverage1h"], None)  # fmt: skip


def test_keep_firing_for_holds_a_firing_alert_through_a_gap() -> None:
    key = (("a", "b"),)
    stamps = [float(t) for t in range(0, 600, 60)]
    present = {0.0: 1, 60.0: 1, 120.0: 1, 240.0: 1}  # a gap at 180
    plain = run_state_machine({key: present}, stamps, 60)
    kept = run_state_machine({key: present}, stamps, 60, keep_firing_for_seconds=120)
    assert [(e.active_at, e.fired_at, e.ended_at) for e in plain] == [
        (0.0, 60.0, 180.0), (240.0, None, 300.0)]  # fmt: skip
    # Missing from 300 on: kept while missing for less than 120 s, ended at the 420 evaluation.
    assert [(e.active_at, e.fired_at, e.ended_at) for e in kept] == [(0.0, 60.0, 420.0)]


def test_an_alert_stays_one_alert_when_another_window_takes_over() -> None:
    # ModelFeatureDriftPSI ORs its windows: the 2m window's series holds, then the 15m window's.
    # Prometheus drops the metric name from alert labels, so it is one alert throughout.
    from exporter.backtest.engine import alert_series

    short = (("__name__", "psi_excess:2m"), ("feature", "f"), ("model", "m"))
    long = (("__name__", "psi_excess:15m"), ("feature", "f"), ("model", "m"))
    merged = alert_series({short: {0.0: 1.0, 60.0: 1.0}, long: {120.0: 1.0, 180.0: 1.0}})
    assert list(merged) == [(("feature", "f"), ("model", "m"))]
    episodes = run_state_machine(merged, [0.0, 60.0, 120.0, 180.0, 240.0], 60)
    assert [(e.active_at, e.fired_at, e.ended_at) for e in episodes] == [(0.0, 60.0, 240.0)]


def test_log_mistakes_are_named(tmp_path: Path) -> None:
    with pytest.raises(LogError, match="no `time` column"):
        PredictionLog.from_frame(pd.DataFrame({"x": [1]}))
    with pytest.raises(LogError, match="before their prediction"):
        PredictionLog.from_frame(pd.DataFrame({"time": [10.0], "x": [1], "prediction": [1.0],
                                               "actual": [2.0], "actual_time": [5.0]}))  # fmt: skip
    with pytest.raises(LogError, match="no column for the features"):
        PredictionLog.from_frame(pd.DataFrame({"time": [1.0], "x": [1]}), features=["y"])
    iso = PredictionLog.from_frame(pd.DataFrame({"time": ["2024-01-01T00:00:10Z"], "x": [1]}))
    assert iso.start == pytest.approx(1_704_067_210.0)


def test_cli_mistakes_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(ROOT / "examples" / "fare" / "monitor.yml")
    absent = str(tmp_path / "absent.csv")
    assert main(["backtest", "--log", absent, "--config", config, "--out", str(tmp_path)]) == 2
    assert "absent.csv: no such file" in capsys.readouterr().err
    assert main(["backtest", "--log", str(tmp_path / "x.csv"), "--out", str(tmp_path)]) == 2
    assert "--log needs --config" in capsys.readouterr().err
    broken = tmp_path / "rules.yml"
    broken.write_text("not: [a rule file")
    assert main(["backtest", "--log", str(tmp_path / "x.csv"), "--rules", str(broken),
                 "--config", "c", "--out", str(tmp_path)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a readable YAML file" in err
