"""``make generate`` / ``model-exporter generate``: every committed artefact is the generator's
output, and a site's settings give a complete, valid set of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.mixin.generate import artefacts, differing
from exporter.mixin.settings import Settings
from tests.binaries import require_binary

ROOT = Path(__file__).resolve().parent.parent
SITE = {
    "selector": 'job="fares", env!="dev"',
    "fleet_labels": ["region"],
    "runbook_url": "https://wiki.example.com/ml/{alert}",
    "grafana_url": "https://grafana.example.com",
    "grafana_path_prefix": "/grafana",
    "component": "ml-models",
}


def generate(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter.cli", "generate", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_every_committed_artefact_is_what_make_generate_writes() -> None:
    stale = differing(ROOT, Settings())
    assert not stale, f"run `make generate`: {stale}"


def test_the_generated_set_is_complete() -> None:
    paths = set(artefacts(Settings()))
    assert {
        "prometheus/rules/recording.yml", "prometheus/rules/alerts.yml",
        "deploy/kubernetes/prometheusrule.yaml", "docs/metrics.md",
        "alertmanager/model-exporter.yml", "alertmanager/alertmanager.yml",
        "grafana/provisioning/datasources/prometheus.yml",
    } <= paths  # fmt: skip
    assert {p for p in paths if p.startswith("grafana/dashboards/")} == {
        f"grafana/dashboards/model-{name}.json"
        for name in ("overview", "drift", "performance", "versions", "alerts")
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    settings = root / "site.yml"
    settings.write_text(yaml.safe_dump(SITE), encoding="utf-8")
    result = generate("--settings", str(settings), "--out", str(root / "out"))
    assert result.returncode == 0, result.stderr
    return root / "out"


def test_a_sites_settings_reach_every_artefact(site: Path) -> None:
    # docs/metrics.md is the project's own documentation: written into its checkout only.
    assert not (site / "docs").exists()
    texts = {p: p.read_text(encoding="utf-8") for p in site.rglob("*") if p.is_file()}
    assert not [p for p in texts if p.name.endswith(".partial")]
    joined = "\n".join(texts.values())
    for default in ('job=~"model-exporter.*"', "localhost:3000", 'component="model-exporter"',
                    "cluster, namespace", "$namespace", "github.com/model-exporter"):  # fmt: skip
        assert default not in joined, default
    alertmanager = yaml.safe_load((site / "alertmanager/model-exporter.yml").read_text())
    assert alertmanager["route"]["matchers"] == ['component="ml-models"']
    assert alertmanager["route"]["group_by"] == ["alertname", "model", "region"]
    for rule in alertmanager["inhibit_rules"]:
        assert 'component="ml-models"' in rule["source_matchers"]
        assert "region" in rule["equal"]


@pytest.mark.stack
def test_a_sites_rules_and_alertmanager_config_pass_promtool_and_amtool(site: Path) -> None:
    promtool, amtool = require_binary("promtool"), require_binary("amtool")
    rules = sorted(str(p) for p in (site / "prometheus/rules").glob("*.yml"))
    checked = subprocess.run([promtool, "check", "rules", *rules], capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (site / "alertmanager/templates").mkdir(exist_ok=True)
    for template in (ROOT / "alertmanager/templates").glob("*.tmpl"):
        (site / "alertmanager/templates" / template.name).write_bytes(template.read_bytes())
    config = subprocess.run([amtool, "check-config", str(site / "alertmanager/alertmanager.yml")],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert config.returncode == 0, config.stdout + config.stderr


def test_check_names_a_file_that_drifted(site: Path, tmp_path: Path) -> None:
    settings = tmp_path / "site.yml"
    settings.write_text(yaml.safe_dump(SITE), encoding="utf-8")
    assert generate("--settings", str(settings), "--out", str(site), "--check").returncode == 0
    drifted = site / "prometheus/rules/alerts.yml"
    original = drifted.read_text(encoding="utf-8")
    try:
        drifted.write_text(original + "# edited by hand\n", encoding="utf-8")
        result = generate("--settings", str(settings), "--out", str(site), "--check")
        assert result.returncode == 1
        assert "prometheus/rules/alerts.yml" in result.stderr
    finally:
        drifted.write_text(original, encoding="utf-8")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("selector: job=fares\n", "is not a label matcher"),
        ("fleet_labels: [model]\n", "one of the exporter's own labels"),
        ("colour: blue\n", "unknown settings ['colour']"),
        ("thresholds: {psi_warnin: 0.2}\n", "psi_warnin"),
        ("selector: [\n", "not valid YAML (line 2, column 1)"),
        ("a: &x [1]\nb: *x\n", "aliases"),
        # A line break would end the value in the YAML or PromQL it lands in, and let the rest be
        # read as more configuration.
        ('selector: "job=\\"a\\n- record: x\\""\n', "line breaks are not allowed"),
        ('datasource_name: "x\\n  isDefault: true"\n', "line breaks are not allowed"),
    ],
)
def test_bad_settings_are_one_line_naming_the_file_and_key(
    tmp_path: Path, content: str, reason: str
) -> None:
    settings = tmp_path / "site.yml"
    settings.write_text(content, encoding="utf-8")
    result = generate("--settings", str(settings), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(settings) in lines[0] and reason in lines[0], result.stderr
    assert not (tmp_path / "out").exists(), "something was written for bad settings"


def test_a_settings_path_that_is_not_a_regular_file_is_refused_without_reading(
    tmp_path: Path,
) -> None:
    """/dev/zero would never end and a FIFO would block: refused as a config is."""
    result = generate("--settings", "/dev/zero", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "not a regular file" in result.stderr
    big = tmp_path / "big.yml"
    big.write_bytes(b"# " + b"x" * 2_000_000 + b"\n")
    result = generate("--settings", str(big), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "larger than" in result.stderr
