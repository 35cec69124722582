"""The append-only JSON Lines writer the live processes use for their history.

The schema — the event kinds (`EVENT_FIELDS`), the record function (`event`) and its canonical
JSON (`dumps`) — lives in the dependency-free core, `reference_app/policy/events.py`, shared
with the model and the checkers; it is re-exported here so `from loopfix.reference_app.events import
EVENT_FIELDS, event, dumps` keeps working. This module adds only the I/O: one file per process.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from loopfix.reference_app.policy.events import EVENT_FIELDS, dumps, event

__all__ = ["EVENT_FIELDS", "HistoryWriter", "dumps", "event"]


class HistoryWriter:
    """Appends live events to `<dir>/<proc>-<pid>.jsonl`, one file per process.

    `epoch` (wall seconds) and `time_scale` turn wall time into policy seconds. Each write is
    one `write()` of one line on an O_APPEND file, flushed at once, so a crashed process loses
    at most the event it was writing. A writer with no directory records nothing.
    """

    def __init__(self, directory: str | os.PathLike | None, proc: str, time_scale: float = 1.0, epoch: float = 0.0,
                 source: str = "live"):
        self.proc, self.source = proc, source
        self.time_scale = time_scale
        self.epoch = epoch
        self._lock = threading.Lock()
        self._fh = None
        self._pid = None
        self._dir = Path(directory) if directory else None

    @property
    def enabled(self) -> bool:
        return self._dir is not None

    def now(self) -> float:
        """Current time in policy seconds since the run's epoch."""
        return (time.time() - self.epoch) / self.time_scale

    def _file(self):
        pid = os.getpid()
        if self._fh is None or self._pid != pid:  # reopen after fork: one file per process
            self._dir.mkdir(parents=True, exist_ok=True)
            self._fh = open(self._dir / f"{self.proc}-{pid}.jsonl", "a", buffering=1, encoding="utf-8")
            self._pid = pid
        return self._fh

    def emit(self, kind: str, **fields: Any) -> None:
        if self._dir is None:
            return
        line = dumps(event(kind, self.now(), self.source, self.proc, **fields)) + "\n"
        with self._lock:
            fh = self._file()
            fh.write(line)
            fh.flush()
