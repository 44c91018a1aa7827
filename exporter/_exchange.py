"""The exchange of window state between the worker processes that serve one model.

Each worker publishes its windows to a file of its own in the shared state directory (an atomic
rename, at most once per :data:`EXPORT_SECONDS`) and merges the other workers' files into its
own views when it computes drift, so any worker's scrape covers all of them. Streams are
addressed by name (:func:`stream_id`), never by position.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from exporter.windows import Stream, WindowSpec, WindowView, export_stream, merge_view

log = logging.getLogger("exporter.monitor")

#: How often a worker publishes its windows for the other workers (multi-worker mode).
EXPORT_SECONDS = 1.0


def stream_id(name: str) -> str:
    """A stream's key prefix in the exported state: hex, so any feature name is a safe key."""
    return "s" + name.encode("utf-8", "surrogatepass").hex()


def safe(text: str) -> str:
    """A name fit for a file name: anything but letters, digits, '.', '_' becomes '_'."""
    return "".join(c if c.isalnum() or c in "._" else "_" for c in text)[:64]


class WindowExchange:
    """This worker's state file in ``state_dir``, and the other workers' files beside it."""

    def __init__(self, state_dir: Path, name: str, version: str, sample_size: int, seed: int):
        self.state_dir = state_dir
        self.state_file = state_dir / f"windows-{safe(name)}-{safe(version)}-{os.getpid()}.npz"
        self.sample_size = sample_size
        self.next_export = 0.0
        self.rng = np.random.default_rng(seed)

    def publish_due(self, now: float, streams: dict[str, Stream], lock: threading.Lock) -> None:
        """Publish the streams when the last publication is :data:`EXPORT_SECONDS` old."""
        if now >= self.next_export:
            self.next_export = now + EXPORT_SECONDS
            self.publish(now, streams, lock)

    def publish(self, now: float, streams: dict[str, Stream], lock: threading.Lock) -> None:
        """Write this worker's windows where the other workers read them (atomic rename)."""
        arrays: dict[str, np.ndarray] = {}
        with lock:
            for name, stream in streams.items():
                for key, value in export_stream(stream, now).items():
                    arrays[f"{stream_id(name)}.{key}"] = value
        directory = self.state_file.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".windows-", suffix=".npz", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)  # type: ignore[arg-type]
            os.replace(tmp, self.state_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def other_workers(self) -> list[dict[str, np.ndarray]]:
        """The windows other live or recently dead workers of this model published."""
        states = []
        pattern = self.state_file.name.rsplit("-", 1)[0] + "-*.npz"
        for path in sorted(self.state_dir.glob(pattern)):
            if path == self.state_file:
                continue
            try:
                with np.load(path, allow_pickle=False) as data:
                    states.append({key: data[key] for key in data.files})
            except (OSError, ValueError, EOFError) as exc:  # a half-swept file: skip it
                log.warning("skipping unreadable worker state %s: %s", path, exc)
        return states

    def merge(
        self,
        views: dict[tuple[str, str], WindowView],
        others: list[dict[str, np.ndarray]],
        specs: list[WindowSpec],
        now: float,
    ) -> None:
        """Add the other workers' windows to ``views`` (by stream and window name), in place."""
        for (name, window), own in list(views.items()):
            prefix = f"{stream_id(name)}."
            stream_states = [
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                for state in others
            ]
            spec = next(s for s in specs if s.name == window)
            views[(name, window)] = merge_view(
                own, stream_states, spec, now, self.sample_size, self.rng
            )
