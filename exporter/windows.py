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

    Once full, the replacements are scheduled ahead of time in blocks computed with numpy from a
    generator seeded by ``rng``: for each replacement, the position in the stream where it happens
    (Algorithm L's skips: ``log w`` is a cumulative sum of ``log(u) / k``, each skip is
    ``floor(log(u') / log1p(-w))``) and the slot it overwrites. :meth:`add` (per value) and
    :meth:`add_many` (per array) only read that schedule, so they keep the same sample for the same
    stream and seed, however the values are split into calls; per value the cost is a counter
    increment and a comparison, and :meth:`add_many` applies a block's replacements with numpy.
    """

    __slots__ = (
        "capacity", "values", "seen", "_next", "_rng", "_gen",
        "_positions", "_slots", "_index", "_log_weight", "_blocks",
    )  # fmt: skip

    #: Replacements scheduled in the first block after the sample fills; each next block doubles,
    #: up to the maximum (clearing drops the rest of the block: a quiet tick wastes a small one).
    FIRST_BLOCK = 64
    MAX_BLOCK = 1024
    #: Skips are capped so that positions stay well inside int64 (never reached in practice).
    _MAX_SKIP = 2.0**50

    _positions: npt.NDArray[np.int64]
    _slots: npt.NDArray[np.int64]

    def __init__(self, capacity: int, rng: random.Random) -> None:
        self.capacity = capacity
        self.values: list[float] = []
        self.seen = 0
        self._rng = rng
        self._gen: np.random.Generator | None = None
        self._clear_schedule()

    def add(self, value: float) -> None:
        self.seen += 1
        if self.seen <= self.capacity:
            self.values.append(value)
            if self.seen == self.capacity:
                self._start_schedule()
        elif self.seen == self._next:
            self.values[int(self._slots[self._index])] = value
            self._advance(self._index + 1)

    def add_many(self, values: npt.NDArray[np.float64]) -> None:
        """Add an array of values: the same sample as :meth:`add` on each, at numpy speed."""
        values = np.asarray(values, dtype=np.float64)
        size = len(values)
        if self.capacity == 0 or size == 0:
            self.seen += size
            return
        offset = 0
        if self.seen < self.capacity:
            offset = min(self.capacity - self.seen, size)
            self.values.extend(values[:offset].tolist())
            self.seen += offset
            if self.seen < self.capacity:
                return
            self._start_schedule()
        # values[i] is the stream's value number base + i (counted from 1, like `seen`).
        base = self.seen + 1 - offset
        end = self.seen + size - offset
        slots: list[npt.NDArray[np.int64]] = []
        picks: list[npt.NDArray[np.int64]] = []
        while self._next <= end:
            stop = int(np.searchsorted(self._positions, end, side="right"))
            slots.append(self._slots[self._index : stop])
            picks.append(self._positions[self._index : stop] - base)
            self._advance(stop)
        self.seen = end
        if slots:
            self._replace(np.concatenate(slots), values[np.concatenate(picks)])

    def clear(self) -> None:
        self.values = []
        self.seen = 0
        self._clear_schedule()

    def _replace(self, slots: npt.NDArray[np.int64], new: npt.NDArray[np.float64]) -> None:
        """Write ``new[i]`` into ``slots[i]`` in order (a later write to a slot wins)."""
        if len(slots) < self.capacity // 8:
            values = self.values
            for slot, value in zip(slots.tolist(), new.tolist(), strict=True):
                values[slot] = value
            return
        # The last write to each slot: the first occurrence in the reversed order.
        last, first_in_reversed = np.unique(slots[::-1], return_index=True)
        sample = np.asarray(self.values, dtype=np.float64)
        sample[last] = new[::-1][first_in_reversed]
        self.values = sample.tolist()

    def _clear_schedule(self) -> None:
        self._next = 0
        self._index = 0
        self._positions = np.empty(0, dtype=np.int64)
        self._slots = np.empty(0, dtype=np.int64)
        self._log_weight = 0.0
        self._blocks = 0

    def _start_schedule(self) -> None:
        """The sample just filled: schedule replacements from weight 1 at position ``capacity``."""
        self._clear_schedule()
        self._schedule_block(self.capacity)
        self._next = int(self._positions[0])

    def _advance(self, index: int) -> None:
        """Move past the replacements before ``index``; schedule the next block when needed."""
        if index >= len(self._positions):
            self._schedule_block(int(self._positions[-1]))
            index = 0
        self._index = index
        self._next = int(self._positions[index])

    def _schedule_block(self, last_position: int) -> None:
        if self._gen is None:
            self._gen = np.random.default_rng(self._rng.getrandbits(128))
        size = min(self.FIRST_BLOCK << min(self._blocks, 16), self.MAX_BLOCK)
        self._blocks += 1
        # Always drawn in this order: weights, skips, slots. 1 - random() is in (0, 1].
        weight_uniforms = 1.0 - self._gen.random(size)
        skip_uniforms = 1.0 - self._gen.random(size)
        self._slots = self._gen.integers(0, self.capacity, size=size, dtype=np.int64)
        log_weight = self._log_weight + np.cumsum(np.log(weight_uniforms) / self.capacity)
        with np.errstate(divide="ignore", invalid="ignore"):
            skips = np.floor(np.log(skip_uniforms) / np.log1p(-np.exp(log_weight)))
        skips = np.nan_to_num(skips, nan=0.0, posinf=self._MAX_SKIP)
        steps = np.minimum(skips, self._MAX_SKIP).astype(np.int64) + 1
        self._positions = last_position + np.cumsum(steps)
        self._log_weight = float(log_weight[-1])
        self._index = 0


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
