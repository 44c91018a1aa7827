"""Prometheus exporter for machine-learning models in production.

Wrap a model's predict function with :class:`ModelMonitor` and compare its inputs and outputs with a
:class:`ReferenceProfile` built from the training data; everything lands in a prometheus_client
registry that Prometheus scrapes.

The public names are imported on first use (PEP 562): ``import exporter.receiver`` runs the alert
receiver without loading numpy, pandas or scipy, which only the monitor needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_PUBLIC = {
    "DriftSnapshot": "exporter.monitor",
    "FeatureDrift": "exporter.monitor",
    "ModelMonitor": "exporter.monitor",
    "ProfileError": "exporter.profile",
    "ReferenceProfile": "exporter.profile",
}

if TYPE_CHECKING:
    from exporter.monitor import DriftSnapshot, FeatureDrift, ModelMonitor
    from exporter.profile import ProfileError, ReferenceProfile


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'exporter' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


__all__ = [
    "DriftSnapshot",
    "FeatureDrift",
    "ModelMonitor",
    "ProfileError",
    "ReferenceProfile",
    "__version__",
]
