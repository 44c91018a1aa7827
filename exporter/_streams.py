"""Every window stream of one monitor, by name, and the tick that seals them together.

The watches' streams (one per feature and the output), the performance sums and the
confidences all advance on one :class:`~exporter.windows.TickClock`: an ended tick is sealed
into every stream's windows at once, and the counters catch up with the live counts at the
same moment (:func:`exporter._watches.flush_counters`). Callers hold the monitor's lock.
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter._watches import Watch, flush_counters
from exporter.windows import Clock, Stream, TickClock, WindowSpec, WindowView

#: Longest time per-bin counts wait in the live tick before reaching the Prometheus counters.
FLUSH_SECONDS = 1.0


class MonitorStreams:
    """The named streams of one monitor; ``next_due`` is when :meth:`housekeeping` is due."""

    def __init__(
        self,
        specs: Sequence[WindowSpec],
        clock: Clock,
        watches: Sequence[Watch],
        others: dict[str, Stream],
    ) -> None:
        self.specs = list(specs)
        self.clock = clock
        self.watches = list(watches)
        self.ticks = TickClock(self.specs, clock)
        self.next_due = 0.0
        # Every stream by name, the name other workers' exports are matched by (not their
        # position: a worker whose config lists the features in another order still merges
        # each feature with itself).
        self.by_name = {f"feature:{w.name}": w.stream for w in self.watches}
        self.by_name.update(others)

    def housekeeping(self) -> None:
        """Seal an ended tick and flush pending counts into the counters (under the lock).

        The hot path calls it at most once per ``FLUSH_SECONDS``, and the monitor's ``flush()``
        (a service's background task, the library's timer, a caller) whenever it runs.
        """
        next_tick = self.seal_due()
        for watch in self.watches:
            flush_counters(watch)
        self.next_due = min(next_tick, self.clock() + FLUSH_SECONDS)

    def seal_due(self) -> float:
        """Seal an ended tick into every stream's windows, leaving the counters as they are
        (under the lock).

        A drift snapshot needs the windows current but must not write what a scrape reads: the
        counts of the sealed tick that the counters have not taken yet stay owed to them, as a
        negative baseline in ``watch.flushed`` (the next flush adds ``live - flushed``, which
        then includes them). Returns when the next tick ends; the hot path's next flush stays
        when it was due.
        """
        ticks = self.ticks
        ended = ticks.advance()
        if ended is not None:
            for watch in self.watches:
                live = watch.stream.live
                watch.flushed = [f - v for f, v in zip(watch.flushed, live, strict=True)]
            for stream in self.by_name.values():
                stream.seal(ended[1])
        tick_start = float(ticks.current * ticks.seconds)
        for stream in self.by_name.values():
            stream.tick_start = tick_start
        next_tick = float((ticks.current + 1) * ticks.seconds)
        self.next_due = min(self.next_due, next_tick)
        return next_tick

    def views(self, now: float) -> dict[tuple[str, str], WindowView]:
        """Every stream's every window at ``now``, by (stream name, window name)."""
        views: dict[tuple[str, str], WindowView] = {}
        for name, stream in self.by_name.items():
            live_sample = stream.live_sample() if stream.sample_size else None
            for spec in self.specs:
                views[(name, spec.name)] = stream.view(
                    spec.name, now, with_sample=bool(stream.sample_size),
                    live_sample=live_sample,
                )  # fmt: skip
        return views
