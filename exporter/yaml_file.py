"""Reading a YAML file a user hands us (a monitor config, a site's settings), safely.

Only regular files are read (a FIFO would block and a device such as /dev/zero never end), at
most ``max_bytes`` of them, as UTF-8, without anchors and aliases (no "billion laughs"), and every
problem is one line naming the file and, for bad YAML, the line and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from exporter.errors import ExporterError


class YamlFileError(ExporterError, ValueError):
    """The file cannot be read as YAML; the message is one line naming the file."""


class NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases: no 'billion laughs' from a user's file."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in this file", event.start_mark
            )
        return super().compose_node(parent, index)


def load_yaml_file(path: Path, *, what: str, max_bytes: int = 1_048_576) -> Any:
    """The YAML document of ``path``; :class:`YamlFileError` for anything unreadable. ``what``
    names the file's role in messages ("the config", "the settings")."""
    if path.exists() and not path.is_dir() and not path.is_file():
        raise YamlFileError(f"{path}: cannot read {what}: not a regular file")
    try:
        with path.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise YamlFileError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise YamlFileError(f"{path}: {what} is larger than {max_bytes} bytes")
    return parse_yaml(raw, where=str(path), what=what)


def parse_yaml(raw: bytes, *, where: str, what: str) -> Any:
    try:
        return yaml.load(raw.decode("utf-8"), Loader=NoAliasLoader)  # noqa: S506
    except UnicodeDecodeError:
        raise YamlFileError(f"{where}: {what} is not UTF-8 text") from None
    except RecursionError:
        raise YamlFileError(f"{where}: not valid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlFileError(f"{where}: not valid YAML{at}: {problem}") from None
