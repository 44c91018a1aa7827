"""The drift computation of one monitor: a snapshot of every stream's windows, statistics made.

Takes the views of every stream under the monitor's lock, once an ended tick is sealed (the
counters are left to the monitor's flush, so a scrape only reads them); merges the other
workers' windows when several serve the model, and hands each window's numbers to
:mod:`exporter._drift`. Snapshots are cached: a scrape younger than the cache's age reuses the
last one.
"""

from __future__ import annotations

import threading

from exporter._classes import Classes
from exporter._drift import DriftSnapshot, window_performance
from exporter._exchange import WindowExchange
from exporter._ground_truth import GroundTruth
from exporter._streams import MonitorStreams


class DriftSnapshots:
    """Computes and caches the drift snapshots of one monitor (on ``streams.clock``)."""

    def __init__(
        self, streams: MonitorStreams, exchange: WindowExchange | None, truth: GroundTruth,
        classes: Classes, lock: threading.Lock, regression: bool,
    ) -> None:  # fmt: skip
        self.streams, self.exchange, self.truth = streams, exchange, truth
        self.classes, self.lock, self.regression = classes, lock, regression
        self.cache: DriftSnapshot | None = None
        self.cache_lock = threading.Lock()

    def latest(self, max_age: float, min_samples: int) -> DriftSnapshot:
        """The cached snapshot when younger than ``max_age`` seconds, else a fresh one."""
        clock = self.streams.clock
        cached = self.cache
        now = clock()
        if cached is not None and 0 <= now - cached.taken_at < max_age:
            return cached
        with self.cache_lock:
            cached = self.cache
            now = clock()
            if cached is not None and 0 <= now - cached.taken_at < max_age:
                return cached
            snapshot = self.compute(now, min_samples)
            self.cache = snapshot
            return snapshot

    def compute(self, now: float, min_samples: int) -> DriftSnapshot:
        streams, exchange = self.streams, self.exchange
        others = exchange.other_workers() if exchange is not None else []
        with self.lock:
            # Under the lock that record_outcome holds while it learns a class: iterating the
            # live dict during a scrape once raised "dictionary changed size during iteration".
            class_names = self.classes.names_by_slot()
            streams.seal_due()
            views = streams.views(now)
        if others and exchange is not None:
            exchange.merge(views, others, streams.specs, now)
        windows = [spec.name for spec in streams.specs]
        performance = {
            window: window_performance(
                window, self.regression, views[("performance", window)].totals,
                views[("confidences", window)].totals, class_names, min_samples,
            )
            for window in windows
        }  # fmt: skip
        pending = self.truth.pending_count()
        features = {
            watch.name: {
                window: watch.drift(window, views[(f"feature:{watch.name}", window)], min_samples)
                for window in windows
            }
            for watch in streams.watches
        }
        return DriftSnapshot(taken_at=now, features=features, performance=performance,
                             pending=pending)  # fmt: skip
