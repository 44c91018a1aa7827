"""Checks of text that more than one layer makes, kept in one place so they agree."""

from __future__ import annotations

from typing import Any


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (``"\\ud800"``, from a JSON ``\\u`` escape):
    valid in a Python str, but not encodable as UTF-8, so it could be neither written to a file
    nor sent in a response."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def any_lone_surrogate(document: Any) -> bool:
    """Whether any key or string anywhere in a parsed JSON document has a lone surrogate."""
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and has_lone_surrogate(item):
            return True
    return False


__all__ = ["any_lone_surrogate", "has_lone_surrogate"]
