"""The classes of a classifier as its series and performance slots see them."""

from __future__ import annotations

from exporter.class_labels import ClassLabels
from exporter.metrics import label_value
from exporter.profile import OTHER


class Classes:
    """Label values and performance slots of classes, shared by the outputs and the ground truth.

    ``labels`` is the one list of classes of every worker of a service (see
    :mod:`exporter.class_labels`); past ``max_classes`` distinct ones a class is ``__other__``.
    Callers hold the monitor's lock.
    """

    def __init__(self, labels: ClassLabels, max_classes: int) -> None:
        self.labels = labels
        self.max_classes = max_classes

    def key(self, name: str) -> str:
        """The ``predicted``/``actual``/``class`` label of a class: cut to a fit label value, and
        ``__other__`` once ``max_classes`` distinct classes were seen."""
        key = label_value(name)
        if key == OTHER or self.labels.index(key) is None:
            return OTHER
        return key

    def slot(self, key: str) -> int:
        """Performance-stream slot of a class; the last slot is ``__other__``."""
        slot = self.labels.get(key)
        return self.max_classes if slot is None else slot

    def names_by_slot(self) -> list[str]:
        """Class name by performance-stream slot."""
        names = self.labels.names()
        return names + [""] * (self.max_classes - len(names)) + [OTHER]
