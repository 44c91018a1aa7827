"""Every generated artefact of the stack from one :class:`Settings`, written or checked.

``artefacts(settings)`` maps each file's path relative to the repository root (or to ``--out``) to
its text. ``make generate`` writes them over the committed files with the default settings; a test
fails when a committed file differs from what this produces, so the committed rules, dashboards and
docs table are always the generator's output.
"""

from __future__ import annotations

from pathlib import Path

from exporter.mixin.settings import Settings

#: The project's own documentation: its threshold table is generated, but it is written only into
#: the checkout it belongs to, never into a site's output.
PROJECT_DOCS = frozenset({"docs/metrics.md"})


def artefacts(settings: Settings, *, project_docs: bool = True) -> dict[str, str]:
    """Every generated file, by path relative to the output root (``project_docs``: with the
    project's own docs, when there is a checkout to take them from)."""
    from exporter.mixin import alertmanager, dashboards, rules

    files: dict[str, str] = {}
    for builder in (rules.artefacts, alertmanager.artefacts, dashboards.artefacts):
        for path, text in builder(settings).items():
            if path in files:
                raise RuntimeError(f"two builders generate {path}")
            files[path] = text
    if not project_docs:
        files = {path: text for path, text in files.items() if path not in PROJECT_DOCS}
    return files


def is_checkout(root: Path) -> bool:
    """Whether ``root`` is the checkout this package runs from (the project docs go there)."""
    return (root / "exporter" / "mixin" / "generate.py").resolve() == Path(__file__).resolve()


def differing(root: Path, settings: Settings) -> list[str]:
    """Paths under ``root`` that are missing or differ from what the generator produces."""
    stale = []
    for path, text in sorted(artefacts(settings, project_docs=is_checkout(root)).items()):
        target = root / path
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            stale.append(path)
    return stale


def write(root: Path, settings: Settings) -> list[str]:
    """Write every artefact under ``root`` (each file whole, via a temporary file and a rename, so
    an interrupted run leaves no half-written file); returns the paths that changed."""
    changed = []
    for path, text in sorted(artefacts(settings, project_docs=is_checkout(root)).items()):
        target = root / path
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(target)
        changed.append(path)
    return changed
