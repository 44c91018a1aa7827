"""The README's promises: two set-up commands, a quick start that runs as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import exporter

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_shows_exactly_the_two_commands_first() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]


def test_quick_start_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    block = re.search(r"## Library quick start\n\n```python\n(.*?)```", README, re.S)
    assert block is not None
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    match = re.search(r"PSI (\d+\.\d+)\s+KS (\d+\.\d+)\s+z (\d+\.\d+)", out)
    assert match is not None, out
    assert float(match.group(1)) > 0.1  # the drifted traffic shows as drift
    assert 'model_feature_psi{feature="amount",model="fraud"' in out
    assert (tmp_path / "reference.json").exists()


def test_ci_runs_the_readme_test_command_and_requires_binaries() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci
    assert "MODEL_EXPORTER_REQUIRE_BINARIES=1" in ci
    assert os.access(ROOT / ".ci" / "run", os.X_OK)


def test_public_names_are_exactly_the_intended_ones() -> None:
    assert sorted(exporter.__all__) == [
        "DriftSnapshot",
        "FeatureDrift",
        "ModelMonitor",
        "ProfileError",
        "ReferenceProfile",
        "__version__",
    ]
    for name in exporter.__all__:
        assert hasattr(exporter, name)


def test_stats_core_is_pure() -> None:
    source = (ROOT / "exporter" / "stats.py").read_text(encoding="utf-8")
    imports = re.findall(r"^(?:from|import) (\S+)", source, re.M)
    allowed = {"__future__", "collections.abc", "math", "typing", "numpy", "numpy.typing", "scipy"}
    assert set(imports) <= allowed
