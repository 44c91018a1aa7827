"""The package's public surface and its layers."""

from __future__ import annotations

import subprocess
import sys

import exporter
from tests.service_fixtures import ROOT


def test_the_public_names_load_on_first_use_and_are_listed() -> None:
    # The names themselves are pinned by tests/test_readme.py; here, that the lazy import (PEP
    # 562) resolves each and dir() shows them, as a plain import would.
    for name in exporter.__all__:
        assert getattr(exporter, name) is not None, name
    assert set(exporter.__all__) <= set(dir(exporter))


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        exporter.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("no AttributeError")


def test_the_receiver_loads_no_numerical_library() -> None:
    # The alert receiver runs next to Alertmanager, often in a small image: it must not pay for
    # numpy, pandas and scipy, which only the monitor needs.
    # `model-exporter receiver ...` builds the command line for that command alone.
    code = (
        "import sys, exporter.receiver, exporter.cli;"
        "exporter.cli.build_parser('receiver');"
        "print(','.join(m for m in ('numpy', 'pandas', 'scipy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    assert result.stdout.strip() == ""


def test_the_package_ships_its_type_information() -> None:
    assert (ROOT / "exporter" / "py.typed").is_file()


def test_every_public_error_of_the_package_has_the_one_root() -> None:
    import importlib
    import inspect
    import pkgutil

    from exporter.errors import ExporterError

    found = []
    for info in pkgutil.walk_packages(exporter.__path__, "exporter."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, Exception)
                and value.__module__ == info.name
                and not name.startswith("_")
            ):
                found.append(value)
    assert len(found) >= 15, found
    assert [error for error in found if not issubclass(error, ExporterError)] == []


def test_no_module_over_500_lines_and_no_class_over_300() -> None:
    """Small modules, each with one job (the core redesign's bound): a module or class that
    grows past this is split, not stretched."""
    import ast

    long_modules, long_classes = [], []
    for path in sorted((ROOT / "exporter").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        if text.count("\n") > 500:
            long_modules.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                if length > 300:
                    long_classes.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert not long_modules, long_modules
    assert not long_classes, long_classes
