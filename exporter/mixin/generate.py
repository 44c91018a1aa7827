"""Every generated artefact of the stack from one :class:`Settings`, written or checked.

``artefacts(settings)`` maps each file's path relative to the repository root (or to ``--out``) to
its text. ``make generate`` writes them over the committed files with the default settings; a test
fails when a committed file differs from what this produces, so the committed rules, dashboards and
docs table are always the generator's output.
"""

from __future__ import annotations

from pathlib import Path

from exporter.mixin.settings import Settings


def artefacts(settings: Settings) -> dict[str, str]:
    """Every generated file, by path relative to the output root."""
    from exporter.mixin import alertmanager, dashboards, rules

    files: dict[str, str] = {}
    for builder in (rules.artefacts, alertmanager.artefacts, dashboards.artefacts):
        for path, text in builder(settings).items():
            if path in files:
                raise RuntimeError(f"two builders generate {path}")
            files[path] = text
    return files


def differing(root: Path, settings: Settings) -> list[str]:
    """Paths under ``root`` that are missing or differ from what the generator produces."""
    stale = []
    for path, text in sorted(artefacts(settings).items()):
        target = root / path
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            stale.append(path)
    return stale


def write(root: Path, settings: Settings) -> list[str]:
    """Write every artefact under ``root`` (each file whole, via a temporary file and a rename, so
    an interrupted run leaves no half-written file); returns the paths that changed."""
    changed = []
    for path, text in sorted(artefacts(settings).items()):
        target = root / path
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(target)
        changed.append(path)
    return changed
