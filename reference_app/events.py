"""The history's event kinds, and the append-only JSON Lines writer the live processes use.

One schema for a history whether it came from the SimPy model (`source: "sim"`), from a live
run (`source: "live"`) or from outside a service under test (`source: "target"`): a list of
flat records, each with `t` (policy seconds), `kind`, `source`, `proc` (which process wrote
it) and the fields listed for its kind below. Records
are plain dicts so that checkers stay pure functions over data. `harness/history.py` reads,
merges and validates histories; this module only defines the kinds and writes them.

Ids: `job_id` is the correlation id everywhere (the RecordingRun / BackgroundJob row key as a
string); `call_sid`, `recording_sid`, `business_id`, `lead_id` are the domain ids; `client`
names one simulated or Locust user and `session` one playback session of it.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

# kind -> fields it carries besides t/kind/source/proc (documentation and validation).
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    # browser players, click-stormers, refreshers
    "client.start": ("client", "session", "call_sid", "role"),
    "client.request": ("client", "session", "call_sid", "status", "retry_after", "n", "audio_ok"),
    "client.end": ("client", "session", "call_sid", "outcome", "requests"),
    # recording jobs (job_type full | download_only; via webhook | playback | enqueue_api | retry | defer | requeue)
    "job.enqueue": ("job_id", "call_sid", "job_type", "via"),
    "job.start": ("job_id", "call_sid", "attempt", "worker"),
    "job.retry": ("job_id", "call_sid", "attempt", "delay", "phase"),  # phase: the budget spent, calllog | fetch
    "job.end": ("job_id", "call_sid", "outcome"),  # done | retry | failed | deferred | crashed | skipped
    "job.stuck": ("job_id", "call_sid", "reason"),
    "enqueue.result": ("call_sid", "reason", "status"),  # enqueued | cached | duplicate | error
    "fail_fast.trip": ("call_sid", "count"),
    # downloads (ok: bytes written and renamed into place; skipped: already complete)
    "download.start": ("job_id", "call_sid", "recording_sid"),
    "download.end": ("job_id", "call_sid", "recording_sid", "ok", "skipped", "bytes"),
    # per-business download semaphore
    "slot.acquire": ("job_id", "business_id", "ok"),
    "slot.release": ("job_id", "business_id", "freed"),
    "worker.sleep": ("job_id", "seconds", "reason"),
    # BulkGate lock and lead deletion
    "lock.acquire": ("business_id", "op", "owner", "ok"),
    "lock.refresh": ("business_id", "op", "owner", "ok"),
    "lock.release": ("business_id", "op", "owner", "freed", "holder"),
    "lead_job.request": ("business_id", "job_id", "existing", "client"),
    "lead_job.start": ("business_id", "job_id"),
    "lead_job.pause": ("business_id", "job_id", "processed"),
    "lead_job.end": ("business_id", "job_id", "status", "processed"),
    "lead.delete": ("business_id", "lead_id", "job_id"),
    "lead.requested": ("business_id", "lead_id", "job_id"),
    # environment
    "recording.created": ("call_sid", "recording_sid", "business_id", "has_url"),
    # target mode, observed from outside the service (source "target"): each Twilio callback
    # sent (hook call_status | recording) and its answer; a delete job's state as the service
    # reported it; a business's lead ids as listed before (phase start) and after (end) the run
    "webhook.send": ("hook", "call_sid", "recording_sid", "business_id", "signed", "status"),
    "lead_job.observe": ("business_id", "job_id", "state"),
    "leads.listed": ("business_id", "lead_ids", "phase"),
    # how: stop | crash | redis_pause | redis_restart | degrade; workers: how many workers the
    # window takes down, 0 = every one (then nothing promotes due retries: the ticker is theirs)
    "outage.start": ("target", "how", "workers"),
    "outage.end": ("target", "how", "workers"),
}


def event(kind: str, t: float, source: str, proc: str, **fields: Any) -> dict[str, Any]:
    """One history record. Unknown kinds raise KeyError so typos fail loudly."""
    if kind not in EVENT_FIELDS:
        raise KeyError(f"unknown event kind {kind!r}")
    return {"t": round(t, 6), "kind": kind, "source": source, "proc": proc, **fields}


def dumps(record: dict[str, Any]) -> str:
    """Canonical JSON for one record: sorted keys, no spaces (byte-identical across runs)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


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
