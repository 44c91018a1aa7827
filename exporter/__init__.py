"""Prometheus exporter for machine-learning models in production.

Wrap a model's predict function with :class:`ModelMonitor` and compare its inputs and outputs with a
:class:`ReferenceProfile` built from the training data; everything lands in a prometheus_client
registry that Prometheus scrapes.
"""

from exporter.monitor import DriftSnapshot, FeatureDrift, ModelMonitor
from exporter.profile import ProfileError, ReferenceProfile

__version__ = "0.1.0"

__all__ = [
    "DriftSnapshot",
    "FeatureDrift",
    "ModelMonitor",
    "ProfileError",
    "ReferenceProfile",
    "__version__",
]
