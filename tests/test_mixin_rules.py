"""exporter.mixin.rules: the rule files, the PrometheusRule and the docs' threshold table.

The committed files must be the generator's output with the default settings, byte for byte. A
site's settings must give rules promtool accepts in which nothing of the defaults is left: every
raw series carries the site's selector, every ``by``/``on`` list starts with its fleet labels, the
links and the component are its own, and its threshold defaults replace the shipped ones.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import THRESHOLD_KEYS
from exporter.mixin import rules, thresholds
from exporter.mixin.settings import Settings, SettingsError
from tests.binaries import require_binary

REPO = Path(__file__).resolve().parent.parent

SITE = Settings(
    selector='job="fares", env!="staging"',
    fleet_labels=("region",),
    runbook_url="https://wiki.example.com/ml/runbooks#{alert}",
    grafana_url="https://grafana.example.com",
    grafana_path_prefix="/monitoring",
    component="ml-fares",
    thresholds={"psi_warning": 0.2, "latency_p95_seconds": 1, "accuracy_min": 0.7},
)
#: Text only the default settings put in the rules.
DEFAULT_TRACES = (
    "model-exporter.*",
    "localhost:3000",
    "github.com/model-exporter",
    "component: model-exporter",
)

#: A raw series name in PromQL: a word that is neither part of a recording rule's name (those have
#: colons) nor a function, label or keyword.
_RAW = re.compile(r"(?<![\w:\"'])(model_[a-z_]+|up)(?![\w:(])")


def _exprs(text: str) -> list[str]:
    return [rule["expr"] for group in yaml.safe_load(text)["groups"] for rule in group["rules"]]


def _alerts(text: str) -> list[dict[str, Any]]:
    groups = yaml.safe_load(text)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _promtool_check(path: Path) -> None:
    result = subprocess.run(
        [require_binary("promtool"), "check", "rules", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_files_are_the_generator_output_with_default_settings() -> None:
    generated = rules.artefacts(Settings())
    assert set(generated) == {
        "prometheus/rules/recording.yml",
        "prometheus/rules/alerts.yml",
        "deploy/kubernetes/prometheusrule.yaml",
        "docs/metrics.md",
    }
    stale = [
        path
        for path, text in generated.items()
        if (REPO / path).read_text(encoding="utf-8") != text
    ]
    assert stale == [], f"out of date, run `make generate`: {stale}"


def test_config_keys_and_docs_come_from_the_thresholds_table() -> None:
    assert THRESHOLD_KEYS == {t.key for t in thresholds.THRESHOLDS}
    assert len(THRESHOLD_KEYS) == 17
    assert thresholds.BY_KEY["accuracy_min"].default is None
    assert thresholds.BY_KEY["latency_p95_critical_seconds"].relative_to == (
        "latency_p95_seconds",
        2.0,
    )
    table = rules.threshold_table(Settings())
    assert "| `accuracy_min` | none |" in table
    assert "| `latency_p95_critical_seconds` | twice `latency_p95_seconds` |" in table
    assert "| `min_samples` | 100 |" in table
    assert "| `candidate_z_critical` | 4.265 |" in table
    assert "| `candidate_min_samples` | 300 |" in table


def test_settings_refuse_an_unknown_or_non_finite_threshold() -> None:
    with pytest.raises(SettingsError, match="psi_warnig"):
        Settings(thresholds={"psi_warnig": 0.2})
    with pytest.raises(SettingsError, match="site.yml: thresholds: unknown key 'latency'"):
        Settings.from_mapping({"thresholds": {"latency": 1}}, source="site.yml")
    with pytest.raises(SettingsError, match="thresholds.psi_warning: must be a finite number"):
        Settings(thresholds={"psi_warning": float("inf")})


@pytest.mark.stack
def test_site_settings_give_valid_rules_with_no_trace_of_the_defaults(tmp_path: Path) -> None:
    files = rules.artefacts(SITE)
    for path in (rules.RECORDING, rules.ALERTS):
        target = tmp_path / Path(path).name
        target.write_text(files[path], encoding="utf-8")
        _promtool_check(target)
    spec = yaml.safe_load(files[rules.PROMETHEUS_RULE])["spec"]
    (tmp_path / "operator.yml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    _promtool_check(tmp_path / "operator.yml")

    for path, text in files.items():
        if path == rules.METRICS_DOC:
            continue
        for trace in DEFAULT_TRACES:
            assert trace not in text, f"{path} still has {trace!r}"
        for expr in _exprs(text) if path != rules.PROMETHEUS_RULE else []:
            assert not re.search(r"\b(cluster|namespace)\b", expr), expr
            for match in _RAW.finditer(expr):
                rest = expr[match.end() :]
                assert rest.startswith('{job="fares", env!="staging"'), (match.group(1), expr)
            for group_list in re.findall(r"\b(?:by|on) \(([^)]*)\)", expr):
                assert group_list.startswith("region, "), expr

    for alert in _alerts(files[rules.ALERTS]):
        anchor = alert["alert"].lower()
        assert (
            alert["annotations"]["runbook_url"] == f"https://wiki.example.com/ml/runbooks#{anchor}"
        )
        assert alert["annotations"]["dashboard_url"].startswith(
            "https://grafana.example.com/monitoring/d/model-"
        )
        # The link opens the alert's own fleet, by the site's fleet label.
        assert alert["annotations"]["dashboard_url"].endswith("&var-region={{ $labels.region }}")
        assert alert["labels"]["component"] == "ml-fares"
        # The evidence a description quotes is the alert's own fleet's.
        for query in re.findall(r'printf "([^"]*)"', alert["annotations"]["description"]):
            if "%s" in query:
                assert "{region='%s'," in query, query

    [threshold_rule] = [
        expr for expr in _exprs(files[rules.RECORDING]) if "model_alert_threshold{" in expr
    ]
    assert '* 0 + 0.2, "alert", "psi_warning"' in threshold_rule
    assert '* 0 + 0.7, "alert", "accuracy_min"' in threshold_rule
    # The critical latency stays twice the (site's) warning.
    assert re.search(
        r"2\.0 \* \(.*?\* 0 \+ 1\s*\),\s*\"alert\", \"latency_p95_critical", threshold_rule, re.S
    )
    assert "| `psi_warning` | 0.2 |" in files[rules.METRICS_DOC]
    assert "| `accuracy_min` | 0.7 |" in files[rules.METRICS_DOC]


@pytest.mark.stack
def test_no_fleet_labels_and_a_value_yaml_must_quote(tmp_path: Path) -> None:
    settings = Settings(
        selector='namespace=~"ml-.*"',
        fleet_labels=(),
        runbook_url="https://wiki.example.com/ml #{alert}",
    )
    files = rules.artefacts(settings)
    for path in (rules.RECORDING, rules.ALERTS):
        target = tmp_path / Path(path).name
        target.write_text(files[path], encoding="utf-8")
        _promtool_check(target)
    assert (
        'sum by (model, version) (rate(model_predictions_total{namespace=~"ml-.*"}[5m]))'
        in (files[rules.RECORDING])
    )
    # " #" would start a YAML comment in a plain scalar: the URL is quoted and reads back whole.
    for alert in _alerts(files[rules.ALERTS]):
        assert alert["annotations"]["runbook_url"] == settings.runbook(alert["alert"])
        # No fleet labels, no fleet variables in the link.
        assert "&var-cluster" not in alert["annotations"]["dashboard_url"]


def test_the_docs_keep_everything_outside_the_markers() -> None:
    source = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    generated = rules.metrics_doc(source, SITE)
    head, _, rest = source.partition(rules.DOC_BEGIN)
    assert generated.startswith(head + rules.DOC_BEGIN)
    assert generated.endswith(rest.partition(rules.DOC_END)[2])
    with pytest.raises(rules.MixinError, match="BEGIN GENERATED"):
        rules.metrics_doc(source.replace(rules.DOC_BEGIN, ""), SITE)
