"""The root of every error this package raises on purpose.

``except exporter.errors.ExporterError`` catches each of them (a bad profile, config, token file,
prediction log or rule file, an unusable store, a demo or backtest that cannot run) and nothing
else. Each keeps the built-in base it had (``ValueError`` for bad input, ``RuntimeError`` for an
unusable resource), so existing ``except ValueError`` code still works. This module imports
nothing, so the lightest part of the package (the alert receiver) can use it.
"""

from __future__ import annotations


class ExporterError(Exception):
    """Root of the package's own errors."""


class CommandError(ExporterError):
    """A user mistake on the command line, reported as one line without a traceback."""


class StoreError(ExporterError, RuntimeError):
    """A store that cannot be used (the outcome store, the receiver's alert store): unwritable,
    corrupt or another program's file; the message names the file and says why."""


__all__ = ["CommandError", "ExporterError", "StoreError"]
