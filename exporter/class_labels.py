"""The class labels a classifier's series may carry: at most ``cap`` of them, in one order, the
same in every worker of a service and across a worker's restart.

Each class becomes a label value (``predicted``, ``actual``, ``class``) and a slot of the windowed
performance sums. Counted per process, a cap of 50 let 2 workers and two ``kill -9`` restarts
create 260 distinct labels, and each worker numbered the slots in the order it met the classes, so
the per-class sums that workers exchange did not line up. Here the classes are an append-only file
in the service's shared state directory, one JSON string per line, its position the slot: every
worker reads the same order, a restarted worker reads what it learned before, and the cap counts
the classes of all of them. The file is touched only when a process meets a class it does not know
yet and the cap is not reached; once full, nothing is read or written again.

Without a directory (a library monitor in one process) the classes live in memory only. A file that
cannot be read or written is logged once and the classes stay in memory: monitoring never breaks
the prediction it watches.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class ClassLabels:
    """Known classes by slot; :meth:`index` learns a new one while fewer than ``cap`` are known."""

    def __init__(self, cap: int, path: str | os.PathLike[str] | None = None) -> None:
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        self.cap = cap
        self._path = Path(path) if path is not None else None
        self._names: list[str] = []
        self._slots: dict[str, int] = {}
        #: Bytes of the file already read: later reads parse only what other workers appended.
        self._offset = 0
        self._lock = threading.Lock()
        if self._path is not None:
            self._shared(self._catch_up)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._slots

    def get(self, name: str) -> int | None:
        """The slot of a known class, else None (learns nothing)."""
        return self._slots.get(name)

    def names(self) -> list[str]:
        """The known classes, by slot."""
        return list(self._names)

    def index(self, name: str) -> int | None:
        """The slot of ``name``, learning it if fewer than ``cap`` classes are known (here or, with
        a file, in any worker); None once the cap is reached without it."""
        slot = self._slots.get(name)
        if slot is not None or len(self._names) >= self.cap:
            return slot
        with self._lock:
            if self._path is None or not self._shared(lambda: self._learn_shared(name)):
                self._learn(name)
        return self._slots.get(name)

    # -- internals ---------------------------------------------------------------------------------

    def _learn(self, name: str) -> None:
        if name not in self._slots and len(self._names) < self.cap:
            self._slots[name] = len(self._names)
            self._names.append(name)

    def _learn_shared(self, name: str) -> None:
        """Under the file lock: read what others appended, then append ``name`` if still new."""
        assert self._path is not None
        self._catch_up()
        if name in self._slots or len(self._names) >= self.cap:
            return
        with open(self._path, "ab") as out:
            # A worker killed in the middle of a line left it without its newline: end it, so it
            # stays one unreadable line (skipped by every reader alike) instead of swallowing ours.
            if out.tell() > self._offset:
                out.write(b"\n")
            out.write(json.dumps(name).encode() + b"\n")
        self._catch_up()

    def _catch_up(self) -> None:
        assert self._path is not None
        try:
            with open(self._path, "rb") as source:
                source.seek(self._offset)
                data = source.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        for line in data[:end].splitlines():
            try:
                name = json.loads(line)
            except ValueError:
                continue  # a line torn by a killed worker
            if isinstance(name, str):
                self._learn(name)
        self._offset += end

    def _shared(self, action: object) -> bool:
        """Run ``action`` holding the file's lock; False (logged once) if the file is unusable."""
        assert self._path is not None and callable(action)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._path.with_name(self._path.name + ".lock"), "ab") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    action()
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
            return True
        except OSError as exc:
            log.warning(
                "class labels file %s unusable (%s): classes are capped in this process only",
                self._path, exc,
            )  # fmt: skip
            self._path = None
            return False


__all__ = ["ClassLabels"]
