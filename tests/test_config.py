"""The service config: every user mistake is one clear line naming the file and the key path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from exporter import ReferenceProfile
from exporter.config import ConfigError, load_config
from exporter.server import build_service

ROOT = Path(__file__).resolve().parent.parent

VALID = """
model:
  name: fare
  task: regression
  import_path: exporter.demo_models.fare:predict
reference: reference.json
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "monitor.yml"
    path.write_text(text)
    return path


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert config.monitoring.windows == ["5m", "1h", "1d"]
    assert config.monitoring.min_samples == 100
    assert config.outcomes.ttl_seconds == 7 * 86400
    assert config.reference_path() == tmp_path / "reference.json"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: [1, 2\n", "not valid YAML (line"),
        ("- just\n- a list\n", "must be a mapping"),
        ("", "must be a mapping of keys, got nothing"),
        (VALID.replace("task: regression", "task: ranking"), "model.task"),
        (VALID.replace("import_path: exporter.demo_models.fare:predict", "import_path: nope"),
         "model.import_path"),
        (VALID + "surprise: 1\n", "surprise: Extra inputs are not permitted"),
        (VALID + "monitoring:\n  windows: [5m, fortnight]\n", "monitoring.windows: 'fortnight'"),
        (VALID + "monitoring:\n  min_samples: lots\n", "monitoring.min_samples"),
        (VALID + "thresholds:\n  mea_critical: 5\n", "thresholds: unknown keys ['mea_critical']"),
        (VALID + "outcomes:\n  ttl: forever\n", "outcomes.ttl"),
        (VALID + "monitoring:\n  segment_by: ''\n", "monitoring.segment_by"),
        (VALID + "monitoring:\n  segment_by: [hour]\n", "monitoring.segment_by"),
        (VALID.replace("  name: fare\n", ""), "model.name: Field required"),
    ],
)  # fmt: skip
def test_mistakes_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_yaml_alias_bombs_are_refused(tmp_path: Path) -> None:
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
    with pytest.raises(ConfigError, match="aliases"):
        load_config(write(tmp_path, bomb))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(tmp_path / "nope.yml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VALID, "reference.json: cannot read the profile"),
        (VALID.replace("fare:predict", "fare:nothing_here"), "model.import_path: "),
        (VALID.replace("exporter.demo_models.fare", "no_such_package.mod"),
         "model.import_path: cannot import 'no_such_package.mod'"),
    ],
)  # fmt: skip
def test_serve_reports_start_errors_in_one_line(tmp_path: Path, text: str, expected: str) -> None:
    config = write(tmp_path, text)
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "serve", "--config", str(config), "--data-dir",
         str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_memory_outcome_store_with_several_workers_is_refused_at_start(tmp_path: Path) -> None:
    # Each worker would hold its own records: a feedback reaching another worker than its
    # prediction's answered 404 (44 of 60 in a trial), silently.
    config = write(tmp_path, VALID + "outcomes:\n  store: memory\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "serve", "--config", str(config), "--data-dir",
         str(tmp_path / "data"), "--workers", "2", "--port", "0"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "outcomes.store: memory" in result.stderr and "--workers 2" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("import sys\nsys.exit(0)\n", "called sys.exit(0) while being imported"),
        ("import sys\nsys.exit('bye')\n", "called sys.exit('bye') while being imported"),
    ],
)
def test_a_model_module_that_exits_at_import_is_a_start_error(
    tmp_path: Path, body: str, expected: str
) -> None:
    # SystemExit is not an Exception: serve used to exit 0 with no message at all.
    (tmp_path / "exiting_model.py").write_text(body)
    profile = ROOT / "examples" / "fare" / "reference.json"
    config = write(
        tmp_path,
        VALID.replace("exporter.demo_models.fare:predict", "exiting_model:predict").replace(
            "reference.json", str(profile)
        ),
    )
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "serve", "--config", str(config), "--data-dir",
         str(tmp_path / "data"), "--port", "0"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"},
    )  # fmt: skip
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "model.import_path: cannot import 'exiting_model'" in result.stderr
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_examples_load() -> None:
    for name in ("intent", "fare"):
        config = load_config(ROOT / "examples" / name / "monitor.yml")
        assert config.model.name == name
        path = config.reference_path()
        assert path is not None and path.exists()


def test_latency_thresholds_and_segment_by_are_accepted(tmp_path: Path) -> None:
    text = VALID + (
        "monitoring:\n  segment_by: hour\n"
        "thresholds:\n  latency_p95_seconds: 0.3\n  latency_p95_critical_seconds: 0.9\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.monitoring.segment_by == "hour"
    assert config.thresholds["latency_p95_critical_seconds"] == 0.9
    assert load_config(write(tmp_path, VALID)).monitoring.segment_by is None


@pytest.mark.parametrize("segment_by", [None, "hour"], ids=["unsegmented", "by-hour"])
def test_segment_by_needs_segments_by_that_feature(tmp_path: Path, segment_by: str | None) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "trip_miles": rng.gamma(2.0, 2.0, 2_000),
            "hour": rng.integers(0, 2, 2_000),
            "zone": rng.choice(["a", "b"], 2_000),
        }
    )
    ReferenceProfile.from_frame(
        frame, ["trip_miles", "hour"], ["zone"], segment_by=segment_by
    ).save(tmp_path / "reference.json")
    config = load_config(write(tmp_path, VALID + "monitoring:\n  segment_by: zone\n"))
    with pytest.raises(ConfigError) as error:
        build_service(config, tmp_path / "data")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'monitor.yml'}: monitoring.segment_by: ")
    assert ("has no segments" if segment_by is None else "has segments by 'hour'") in message
    assert "--segment-by zone" in message and "\n" not in message
