"""Time-sliced sliding windows of additive statistics, with a bounded sample for KS.

A stream (one feature, or the model's output) keeps a fixed-length vector of additive statistics:
bin counts and a sum, for example. Values land in a *live tick* (plain Python lists, so the hot
path is an index and an add); when the clock moves to the next tick the live tick is *sealed* into
every window's ring of slices with numpy. A window's value is the sum of its unexpired slices plus
the live tick. Memory is ``slices x width`` floats and ``slices x sample_size`` values per window,
whatever the traffic; a value leaves a window when its slice expires (windows are exact to a slice).
With segments (:mod:`exporter.segments`) the vector also holds how many values came from each
segment, which the windows and the exchange between workers carry like any other statistic.

Nothing here knows about Prometheus; the clock is passed in, so tests move time instead of sleeping.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np
import numpy.typing as npt

Clock = Callable[[], float]

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: Slices per window unless configured: a 5m window moves in 25 s steps, 1h in 5 min, 1d in 2 h.
DEFAULT_SLICES = 12


def parse_duration(text: str) -> int:
    """Seconds in a duration written like Prometheus's: ``30s``, ``5m``, ``1h``, ``1d``, ``1w``."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 1h, 1d or 1w")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be longer than zero")
    return seconds


@dataclass(frozen=True)
class WindowSpec:
    """A named sliding window: ``name`` as written (``5m``), cut into ``slices`` equal slices."""

    name: str
    seconds: int
    slices: int

    @classmethod
    def parse(cls, name: str, slices: int = DEFAULT_SLICES) -> WindowSpec:
        seconds = parse_duration(name)
        if slices < 1 or seconds % slices:
            raise ValueError(
                f"window {name!r} ({seconds} s) cannot be cut into {slices} whole-second slices"
            )
        return cls(name=name.strip(), seconds=seconds, slices=slices)

    @property
    def slice_seconds(self) -> int:
        return self.seconds // self.slices


def tick_seconds(specs: Sequence[WindowSpec]) -> int:
    """Length of the live tick: the largest that fits evenly in every window's slice."""
    if not specs:
        raise ValueError("at least one window is needed")
    return reduce(math.gcd, (s.slice_seconds for s in specs))


class Reservoir:
    """Uniform sample of at most ``capacity`` values from a stream (Li's Algorithm L).

    Once full, the next replacement index is drawn ahead of time, so the per-value cost is a
    counter increment and one comparison; random numbers are drawn only on a replacement.
    """

    __slots__ = ("capacity", "values", "seen", "_next", "_weight", "_rng")

    def __init__(self, capacity: int, rng: random.Random) -> None:
        self.capacity = capacity
        self.values: list[float] = []
        self.seen = 0
        self._rng = rng
        self._weight = 1.0
        self._next = 0

    def add(self, value: float) -> None:
        self.seen += 1
        if self.seen <= self.capacity:
            self.values.append(value)
            if self.seen == self.capacity:
                self._weight = math.exp(math.log(self._random()) / self.capacity)
                self._schedule()
        elif self.seen == self._next:
            self.values[self._rng.randrange(self.capacity)] = value
            self._weight *= math.exp(math.log(self._random()) / self.capacity)
            self._schedule()

    def add_many(self, values: npt.NDArray[np.float64]) -> None:
        """Add an array of values; only the replacements cost Python work (O(k log(n/k)))."""
        position = 0
        size = len(values)
        if self.capacity == 0:
            self.seen += size
            return
        if self.seen < self.capacity:
            room = min(self.capacity - self.seen, size)
            for value in values[:room].tolist():
                self.add(value)
            position = room
        while position < size:
            # Index in `values` of the next replacement, per the schedule drawn ahead of time.
            target = self._next - self.seen - 1 + position
            if target >= size:
                self.seen += size - position
                return
            self.seen += target - position
            self.add(float(values[target]))
            position = target + 1

    def clear(self) -> None:
        self.values = []
        self.seen = 0
        self._weight = 1.0
        self._next = 0

    def _random(self) -> float:
        # random() is in [0, 1); log(0) would fail, and 0 is vanishingly rare anyway.
        return self._rng.random() or 1e-300

    def _schedule(self) -> None:
        if self._weight >= 1.0:
            skip = 0
        else:
            skip = int(math.log(self._random()) / math.log1p(-self._weight))
        self._next = self.seen + skip + 1


def merge_samples(
    parts: Iterable[tuple[npt.NDArray[np.float64], int]],
    size: int,
    rng: np.random.Generator,
) -> npt.NDArray[np.float64]:
    """Combine uniform samples of disjoint streams into one approximately uniform sample.

    Each part is ``(sample, seen)``: a uniform sample of a stream that had ``seen`` values. Each
    part contributes in proportion to ``seen`` (rounded, and capped by what it holds), so a busy
    slice is not under-represented next to a quiet one. When everything fits, everything is kept.
    """
    kept = [(np.asarray(s, dtype=np.float64), n) for s, n in parts if n > 0 and len(s) > 0]
    if not kept:
        return np.empty(0, dtype=np.float64)
    held = sum(len(s) for s, _ in kept)
    total_seen = sum(n for _, n in kept)
    if held <= size and all(len(s) == n for s, n in kept):
        return np.concatenate([s for s, _ in kept])
    # Largest-remainder allocation: shares proportional to `seen`, never more than `size` in all.
    quotas = np.array([size * n / total_seen for _, n in kept])
    takes = np.minimum(np.floor(quotas).astype(np.int64), [len(s) for s, _ in kept])
    spare = size - int(takes.sum())
    for i in np.argsort(-(quotas - np.floor(quotas)), kind="stable"):
        if spare <= 0:
            break
        if takes[i] < len(kept[i][0]):
            takes[i] += 1
            spare -= 1
    chosen = []
    for (sample, _), take in zip(kept, takes.tolist(), strict=True):
        if take >= len(sample):
            chosen.append(sample)
        elif take > 0:
            chosen.append(rng.choice(sample, size=take, replace=False))
    return np.concatenate(chosen) if chosen else np.empty(0, dtype=np.float64)


@dataclass(frozen=True)
class WindowView:
    """A window's content at one moment: the additive statistics and the merged sample."""

    totals: npt.NDArray[np.float64]
    sample: npt.NDArray[np.float64]
    #: How many values the sample stands for (all values seen in the window).
    seen: int = 0


class _Ring:
    """One window's slices for one stream."""

    __slots__ = ("spec", "sums", "slot_ids", "samples", "seen")

    def __init__(self, spec: WindowSpec, width: int) -> None:
        self.spec = spec
        self.sums = np.zeros((spec.slices, width), dtype=np.float64)
        self.slot_ids = np.full(spec.slices, -1, dtype=np.int64)
        self.samples: list[npt.NDArray[np.float64]] = [
            np.empty(0, dtype=np.float64) for _ in range(spec.slices)
        ]
        self.seen = [0] * spec.slices


class Stream:
    """Additive statistics and a sample of one stream, over several windows.

    Writers touch :attr:`live` (a list of ``width`` floats) and :attr:`reservoir` directly, under
    the owner's lock; :meth:`seal` and :meth:`view` are called by the owner, also under its lock.
    """

    def __init__(
        self,
        specs: Sequence[WindowSpec],
        width: int,
        sample_size: int = 0,
        seed: int = 0,
    ) -> None:
        self.width = width
        self.sample_size = sample_size
        self.live: list[float] = [0.0] * width
        self.reservoir = Reservoir(max(sample_size, 0), random.Random(seed))
        self._rings = {spec.name: _Ring(spec, width) for spec in specs}
        self._rng = np.random.default_rng(seed)
        #: Start of the tick the live lists belong to (set by the owner's clock at each seal).
        self.tick_start = 0.0

    def seal(self, tick_start: float) -> None:
        """Move the live tick, which started at ``tick_start``, into each window's slice."""
        if not any(self.live) and self.reservoir.seen == 0:
            return
        live = np.asarray(self.live, dtype=np.float64)
        tick_sample = np.asarray(self.reservoir.values, dtype=np.float64)
        tick_seen = self.reservoir.seen
        for ring in self._rings.values():
            slot_id = int(tick_start // ring.spec.slice_seconds)
            pos = slot_id % ring.spec.slices
            if ring.slot_ids[pos] != slot_id:
                ring.slot_ids[pos] = slot_id
                ring.sums[pos] = 0.0
                ring.samples[pos] = np.empty(0, dtype=np.float64)
                ring.seen[pos] = 0
            ring.sums[pos] += live
            if self.sample_size and tick_seen:
                ring.samples[pos] = merge_samples(
                    [(ring.samples[pos], ring.seen[pos]), (tick_sample, tick_seen)],
                    self.sample_size,
                    self._rng,
                )
                ring.seen[pos] += tick_seen
        self.live = [0.0] * self.width
        self.reservoir.clear()

    def live_sample(self) -> npt.NDArray[np.float64]:
        """The live tick's sample as an array (convert once, pass to several views)."""
        return np.asarray(self.reservoir.values, dtype=np.float64)

    def view(
        self,
        window: str,
        now: float,
        *,
        with_sample: bool = True,
        live_sample: npt.NDArray[np.float64] | None = None,
    ) -> WindowView:
        """The window's totals (and merged sample) at ``now``, including the live tick."""
        ring = self._rings[window]
        current = int(now // ring.spec.slice_seconds)
        valid = (ring.slot_ids > current - ring.spec.slices) & (ring.slot_ids <= current)
        totals = ring.sums[valid].sum(axis=0) + np.asarray(self.live, dtype=np.float64)
        seen = sum(ring.seen[i] for i in np.flatnonzero(valid)) + self.reservoir.seen
        if not (with_sample and self.sample_size):
            return WindowView(totals, np.empty(0, dtype=np.float64), seen)
        parts = [(ring.samples[i], ring.seen[i]) for i in np.flatnonzero(valid)]
        live = live_sample if live_sample is not None else self.live_sample()
        parts.append((live, self.reservoir.seen))
        return WindowView(totals, merge_samples(parts, self.sample_size, self._rng), seen)

    @property
    def windows(self) -> list[str]:
        return list(self._rings)


class TickClock:
    """Tells its owner when the live tick has ended, so every stream can be sealed at once."""

    def __init__(self, specs: Sequence[WindowSpec], clock: Clock = time.time) -> None:
        self.seconds = tick_seconds(specs)
        self.clock = clock
        self.current = int(clock() // self.seconds)

    def advance(self) -> tuple[float, float] | None:
        """``(now, start of the ended tick)`` if the tick changed since the last call, else None."""
        now = self.clock()
        tick = int(now // self.seconds)
        if tick == self.current:
            return None
        ended = self.current
        self.current = tick
        return now, float(ended * self.seconds)


def export_stream(stream: Stream, now: float) -> dict[str, npt.NDArray[Any]]:
    """A stream's windows as plain arrays, for another process to merge (see merge_view).

    Per window: the ring's slot ids and sums, and the window's merged sample with how many values
    it stands for; plus the live tick (its sums, and the start of the tick it belongs to).
    """
    state: dict[str, npt.NDArray[Any]] = {
        "live": np.asarray(stream.live, dtype=np.float64),
        "live_tick": np.asarray([stream.tick_start], dtype=np.float64),
    }
    for name, ring in stream._rings.items():
        state[f"{name}.slot_ids"] = ring.slot_ids.copy()
        state[f"{name}.sums"] = ring.sums.copy()
        view = stream.view(name, now, with_sample=bool(stream.sample_size))
        state[f"{name}.sample"] = view.sample
        state[f"{name}.sample_seen"] = np.asarray([view.seen], dtype=np.int64)
    return state


def merge_view(
    own: WindowView,
    others: Sequence[Mapping[str, npt.NDArray[Any]]],
    spec: WindowSpec,
    now: float,
    sample_size: int,
    rng: np.random.Generator,
) -> WindowView:
    """This process's view of a window plus the exported states of the other processes.

    Sums are exact: each other process's unexpired slices, and its live tick when that tick's
    slice is still in the window. Samples are merged weighted by how many values each stands
    for; another process's sample is as of its last export (at most a second or so old).
    """
    totals = own.totals.copy()
    current = int(now // spec.slice_seconds)
    parts = [(own.sample, own.seen)]
    seen = own.seen
    for state in others:
        slot_ids = state[f"{spec.name}.slot_ids"]
        valid = (slot_ids > current - spec.slices) & (slot_ids <= current)
        totals += state[f"{spec.name}.sums"][valid].sum(axis=0)
        live_slot = int(float(state["live_tick"][0]) // spec.slice_seconds)
        if current - spec.slices < live_slot <= current:
            totals += state["live"]
        other_seen = int(state[f"{spec.name}.sample_seen"][0])
        seen += other_seen
        if sample_size:
            parts.append((state[f"{spec.name}.sample"], other_seen))
    sample = merge_samples(parts, sample_size, rng) if sample_size else own.sample
    return WindowView(totals, sample, seen)
