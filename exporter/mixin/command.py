"""``model-exporter generate``: the rules, alerts, Alertmanager subtree and dashboards for a site.

Writes every generated artefact for the settings in ``--settings`` (default: the shipped ones)
under ``--out``, with the paths it has in this repository (prometheus/rules/, alertmanager/,
grafana/, deploy/kubernetes/). ``--check`` writes nothing and exits 1 when a file under
``--out`` differs from what would be written, naming it: what CI runs so a committed artefact
never drifts from its source.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exporter.errors import CommandError
from exporter.mixin.generate import differing, write
from exporter.mixin.rules import MixinError
from exporter.mixin.settings import Settings, SettingsError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--settings", type=Path, default=None,
        help="YAML file of settings (selector, fleet_labels, runbook_url, grafana_url, "
        "grafana_path_prefix, component, ...); default: the shipped ones",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=Path("."),
        help="directory to write under (default: the current one, a checkout's root)",
    )  # fmt: skip
    parser.add_argument(
        "--check", action="store_true",
        help="write nothing; exit 1 naming every file that differs from what would be written",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_file(args.settings) if args.settings else Settings()
    except SettingsError as exc:
        raise CommandError(str(exc)) from None
    out: Path = args.out
    try:
        return _generate(out, settings, check=args.check)
    except MixinError as exc:  # settings the validation let through but a template cannot take
        raise CommandError(f"cannot generate for these settings: {exc}") from None


def _generate(out: Path, settings: Settings, *, check: bool) -> int:
    if check:
        stale = differing(out, settings)
        for path in stale:
            print(f"{out / path}: differs from what `model-exporter generate` writes",
                  file=sys.stderr)  # fmt: skip
        return 1 if stale else 0
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out}: not a directory")
    try:
        changed = write(out, settings)
    except OSError as exc:
        raise CommandError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    for path in changed:
        print(f"wrote {out / path}")
    if not changed:
        print(f"every generated file under {out} is up to date")
    return 0
