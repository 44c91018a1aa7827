"""prometheus/: the rule files, their promtool unit tests and the Prometheus configs.

promtool checks both rule files, runs both unit-test files (prometheus/tests/*.yml) and checks
prometheus.yml and the scrape snippet. The pure-Python tests hold the contract around them: every
alert carries a severity and the four annotations, its runbook section exists and it has unit
tests on both sides of its ``for:`` boundary; the recording rules are exactly those of
docs/metrics.md, and the rule defaults are the documented ones.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.pushgateway import DEFAULT_JOB
from tests.binaries import require_binary

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS = REPO / "prometheus"
RECORDING = PROMETHEUS / "rules" / "recording.yml"
ALERTS = PROMETHEUS / "rules" / "alerts.yml"
RECORDING_TEST = PROMETHEUS / "tests" / "recording_test.yml"
ALERTS_TEST = PROMETHEUS / "tests" / "alerts_test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
SNIPPET = PROMETHEUS / "scrape-snippet.yml"
RUNBOOKS = REPO / "docs" / "runbooks.md"
METRICS_DOC = REPO / "docs" / "metrics.md"

RUNBOOK_BASE = "https://github.com/model-exporter/model-exporter/blob/main/docs/runbooks.md#"
#: The alert's model, its version where it has one, then its fleet (the default fleet labels).
DASHBOARD_URL = re.compile(
    r"^http://localhost:3000/d/(model-overview|model-drift|model-performance|model-alerts|model-versions)"
    r"\?var-model=\{\{ \$labels\.model \}\}(?P<version>&var-version=\{\{ \$labels\.version \}\})?"
    r"&var-cluster=\{\{ \$labels\.cluster \}\}&var-namespace=\{\{ \$labels\.namespace \}\}$"
)
#: Alerts without a version label (per target or per model).
VERSIONLESS_ALERTS = {"ModelExporterDown", "ModelExporterAbsent", "ModelNoPredictions"}
#: Alerts whose link opens every version of the model: the candidate beside the primary.
ALL_VERSION_LINKS = {"ModelCandidateWorse"}
SEVERITIES = {"critical", "warning", "info"}
EXPORTER_JOB = "model-exporter"
RULES_IN_CONTAINER = "/etc/prometheus/rules/*.yml"
#: The recording rule holding each model's thresholds with the rule defaults filled in.
THRESHOLD_RULE = "model_alert:model_alert_threshold:effective"
PROMTOOL_TIMEOUT = 120


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in _load(path)["groups"] for rule in group["rules"]]


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in _rules(ALERTS) if "alert" in rule]


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT,
        cwd=cwd,
        check=False,
    )


def _assert_success(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS" in output, output


def _github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def _markdown_table(text: str, section: str) -> list[list[str]]:
    """Rows (cells) of the first table under the ``## `` heading starting with ``section``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"## {section}"))
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if set("".join(cells)) <= set("-: "):
            continue
        rows.append(cells)
    return rows[1:]  # without the header


def _documented_recording_rules() -> set[str]:
    """Rule names of docs/metrics.md's table, expanding `a:b:c` / `:d` / `e` to a:b:d and a:b:e."""
    names: set[str] = set()
    rows = _markdown_table(METRICS_DOC.read_text(encoding="utf-8"), "Recording rules")
    for cells in rows:
        tokens = re.findall(r"`([^`]+)`", cells[0])
        full = tokens[0]
        assert full.count(":") == 2, f"not level:metric:operation: {full}"
        prefix = full.rsplit(":", 1)[0]
        names.add(full)
        names.update(f"{prefix}:{short.lstrip(':')}" for short in tokens[1:])
    return names


def _documented_keys() -> dict[str, str]:
    """Threshold key -> its default as docs/metrics.md writes it (a default that is not a number,
    "none" or "twice ...", stays text)."""
    defaults: dict[str, str] = {}
    rows = _markdown_table(METRICS_DOC.read_text(encoding="utf-8"), "Alert thresholds")
    for cells in rows:
        [key] = re.findall(r"^`([^`]+)`$", cells[0])
        assert key not in defaults, f"{key} documented twice"
        defaults[key] = cells[1]
    return defaults


def _documented_defaults() -> dict[str, float]:
    """The documented defaults that are plain numbers (what the effective rule sets as `+ N`)."""
    found = {}
    for key, text in _documented_keys().items():
        with contextlib.suppress(ValueError):
            found[key] = float(text)
    return found


# -- promtool -----------------------------------------------------------------------------------


@pytest.mark.stack
@pytest.mark.parametrize("rule_file", [RECORDING, ALERTS], ids=lambda p: p.name)
def test_promtool_check_rules(rule_file: Path) -> None:
    _assert_success(_promtool("check", "rules", str(rule_file)))


@pytest.mark.stack
@pytest.mark.parametrize("test_file", [RECORDING_TEST, ALERTS_TEST], ids=lambda p: p.name)
def test_promtool_unit_tests_pass(test_file: Path) -> None:
    # rule_files in a test file are relative to the test file's folder.
    result = _promtool("test", "rules", test_file.name, cwd=test_file.parent)
    _assert_success(result)
    assert "FAILED" not in result.stdout + result.stderr


@pytest.mark.stack
def test_prometheus_config_is_valid_with_its_rules(tmp_path: Path) -> None:
    # The compose stack mounts prometheus/rules at /etc/prometheus/rules; the copy points the same
    # glob at a copy of the rules, so promtool also checks the rule files the config loads.
    config = _load(CONFIG)
    assert config["rule_files"] == [RULES_IN_CONTAINER]
    shutil.copytree(PROMETHEUS / "rules", tmp_path / "rules")
    config["rule_files"] = ["rules/*.yml"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = _promtool("check", "config", str(tmp_path / "prometheus.yml"))
    _assert_success(result)
    assert "2 rule files found" in result.stdout, result.stdout


def test_prometheus_config_scrapes_the_stack() -> None:
    config = _load(CONFIG)
    assert config["global"]["scrape_interval"] == "15s"
    assert config["global"]["evaluation_interval"] == "15s"
    targets = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {
        EXPORTER_JOB: ["exporter:8000"],
        "model-alert-receiver": ["receiver:9099"],
        "alertmanager": ["alertmanager:9093"],
        "prometheus": ["localhost:9090"],
    }
    alertmanagers = config["alerting"]["alertmanagers"]
    assert [t for am in alertmanagers for s in am["static_configs"] for t in s["targets"]] == [
        "alertmanager:9093"
    ]


@pytest.mark.stack
def test_scrape_snippet_is_valid(tmp_path: Path) -> None:
    result = _promtool("check", "config", str(SNIPPET))
    if "kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian's Prometheus is built without Kubernetes discovery. Check everything else, the
        # relabeling included, with the discovery replaced by a static target.
        snippet = _load(SNIPPET)
        for job in snippet["scrape_configs"]:
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["static_configs"] = [{"targets": ["10.0.0.1:8000"]}]
        copy = tmp_path / "scrape-snippet.yml"
        copy.write_text(yaml.safe_dump(snippet), encoding="utf-8")
        result = _promtool("check", "config", str(copy))
    _assert_success(result)


def test_scrape_snippet_keeps_the_job_the_alerts_select() -> None:
    jobs = {job["job_name"]: job for job in _load(SNIPPET)["scrape_configs"]}
    assert EXPORTER_JOB in jobs
    kubernetes = [job for job in jobs.values() if "kubernetes_sd_configs" in job]
    assert kubernetes, "no Kubernetes service discovery job"
    for job in kubernetes:
        relabel = job["relabel_configs"]
        assert relabel[-1] == {
            "target_label": "job",
            "replacement": EXPORTER_JOB,
            "action": "replace",
        }
        # The port annotation rewrites the address (RE2 and Python agree on this pattern).
        port = next(r for r in relabel if r.get("target_label") == "__address__")
        match = re.fullmatch(port["regex"], "10.1.2.3:8080;8000")
        assert match is not None
        assert match.expand(port["replacement"].replace("$", "\\")) == "10.1.2.3:8000"


def test_scrape_snippet_scrapes_the_pushgateway_keeping_the_pushed_labels() -> None:
    gateways = [
        job for job in _load(SNIPPET)["scrape_configs"] if job["job_name"].endswith("pushgateway")
    ]
    assert len(gateways) == 1
    # Without honor_labels every pushed series would get this job's name and the gateway's
    # address, and batch jobs of different models or shards would merge.
    assert gateways[0]["honor_labels"] is True
    # The default selector matches both the pushed job and this one (for ModelExporterDown).
    assert re.fullmatch("model-exporter.*", gateways[0]["job_name"])
    assert re.fullmatch("model-exporter.*", DEFAULT_JOB)


# -- the alerts' contract -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule", _alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}"
)
def test_alert_has_severity_and_annotations(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert {"summary", "description", "runbook_url", "dashboard_url"} <= set(annotations)
    assert "$value" in annotations["description"], "the description must show the value"
    assert annotations["runbook_url"] == RUNBOOK_BASE + rule["alert"].lower()
    link = DASHBOARD_URL.match(annotations["dashboard_url"])
    assert link, annotations["dashboard_url"]
    # var-version exactly where the alert keeps a version label.
    versioned = rule["alert"] not in VERSIONLESS_ALERTS | ALL_VERSION_LINKS
    assert bool(link["version"]) == versioned, rule["alert"]
    assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]


def test_every_for_is_a_plain_line() -> None:
    # The end-to-end test shortens the durations by rewriting `for: <duration>` lines of a copy.
    lines = re.findall(r"^ +for: \d+[smh]$", ALERTS.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(lines) == len(_alert_rules())


def test_every_runbook_url_has_a_section() -> None:
    headings = re.findall(r"^#{1,6} (.+)$", RUNBOOKS.read_text(encoding="utf-8"), re.MULTILINE)
    anchors = {_github_anchor(heading) for heading in headings}
    for rule in _alert_rules():
        anchor = rule["annotations"]["runbook_url"].removeprefix(RUNBOOK_BASE)
        assert anchor in anchors, f"docs/runbooks.md has no heading for #{anchor}"


def test_every_alert_is_tested_on_both_sides_of_its_boundary() -> None:
    firing: set[tuple[str, str]] = set()
    silent: set[str] = set()
    for case in _load(ALERTS_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            expected = check.get("exp_alerts") or []
            if not expected:
                silent.add(check["alertname"])
            for alert in expected:
                firing.add((check["alertname"], alert["exp_labels"]["severity"]))
    rules = {(rule["alert"], rule["labels"]["severity"]) for rule in _alert_rules()}
    assert rules - firing == set(), "alerts never expected to fire in alerts_test.yml"
    assert {name for name, _ in rules} - silent == set(), "alerts never expected to stay silent"


def test_alerts_read_only_existing_recording_rules() -> None:
    recorded = {rule["record"] for rule in _rules(RECORDING)}
    for rule in _alert_rules():
        used = set(re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", rule["expr"]))
        assert used <= recorded, f"{rule['alert']} reads unknown rules {used - recorded}"


def test_alert_thresholds_use_documented_keys() -> None:
    keys = set(_documented_keys())
    for rule in _alert_rules():
        used = set(re.findall(rf'{THRESHOLD_RULE}\{{alert="(\w+)"\}}', rule["expr"]))
        assert used <= keys, f"{rule['alert']} reads undocumented thresholds {used - keys}"


# -- the recording rules' contract ----------------------------------------------------------------


def test_recording_rules_are_the_documented_ones() -> None:
    recorded = [rule["record"] for rule in _rules(RECORDING)]
    assert len(recorded) == len(set(recorded)), "a rule is recorded twice"
    documented = _documented_recording_rules()
    assert documented - set(recorded) == set(), "documented in docs/metrics.md, not recorded"
    assert set(recorded) - documented == set(), "recorded, not documented in docs/metrics.md"


def test_rule_defaults_are_the_documented_ones() -> None:
    expr = next(rule["expr"] for rule in _rules(RECORDING) if rule.get("record") == THRESHOLD_RULE)
    pairs = re.findall(r'\* 0 \+ ([0-9.]+), "alert", "(\w+)"', expr)
    defaults = {key: float(value) for value, key in pairs}
    assert len(defaults) == len(pairs), "a default is set twice"
    assert defaults == _documented_defaults()
    # The one computed default: the critical latency is twice the (effective) warning.
    assert _documented_keys()["latency_p95_critical_seconds"] == "twice `latency_p95_seconds`"
    # Both sides scoped by the selector and keeping the fleet labels, like every rule.
    fleet, selector = r"cluster, namespace, model", r'job=~"model-exporter\.\*"'
    twice = (
        rf"2\.0 \* \(\s*max by \({fleet}\) "
        rf'\(model_alert_threshold\{{{selector}, alert="latency_p95_seconds"\}}\)'
        rf"\s*or max by \({fleet}\) \(model_info\{{{selector}\}}\) \* 0 \+ 0\.5\s*\),\s*"
        r'"alert", "latency_p95_critical_seconds"'
    )
    assert re.search(twice, expr)
    # Keys without a default are not given one by the rule.
    assert _documented_keys()["accuracy_min"] == "none"
    assert "accuracy_min" not in expr


def test_the_config_knows_every_documented_threshold_key() -> None:
    from exporter.config import THRESHOLD_KEYS

    assert set(_documented_keys()) == THRESHOLD_KEYS
