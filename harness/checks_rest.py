"""The invariants about answers, deletes, locks, losses and sleeps as online checks
(harness/stream.py): status-semantics, idempotent-delete, lock-exclusive, nothing-lost,
worker-never-blocks. Fed in history order, each keeps only what its invariant must (the last
recording.created of each call, the active delete jobs, the recordings not yet downloaded,
the leads asked for); the docstrings of harness/invariants.py's check_* functions state the
rules.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from loopfix.harness.stream import Check, handler_of, kept_get, restore
from loopfix.harness.verdicts import Anomaly, Event, Verdict, verdict
from loopfix.reference_app.policy import Policy


class StatusSemantics(Check):
    name = "status-semantics"

    def __init__(self, p: Policy):
        super().__init__()
        self.created: dict[Any, Any] = {}  # call -> its last recording.created (kept)
        self.counts: dict[Any, int] = defaultdict(int)
        self.found: list[Anomaly] = []
        self.handlers = {"recording.created": handler_of(self.on_created),
                         "client.request": handler_of(self.on_request),
                         "enqueue.result": self.on_result}
        self.filters = {"enqueue.result": ("reason", ("error",))}

    def on_created(self, call_sid: Any = None, record: Any = None) -> None:
        self.created[call_sid] = record

    def on_result(self, e: Event) -> None:
        if e.get("status") != 500:
            self.found.append(Anomaly("error-not-500", {"call_sid": e.get("call_sid"), "status": e.get("status")}, (e,)))

    def on_request(self, status: Any = None, retry_after: Any = None, call_sid: Any = None, audio_ok: Any = None,
                   record: Any = None) -> None:
        self.counts[status] += 1
        if status == 202:
            if retry_after is None:
                self.found.append(Anomaly("202-without-retry-after", {"call_sid": call_sid}, (restore(record),)))
        elif status == 404:
            created = self.created.get(call_sid)
            if created is not None and bool(kept_get(created, "has_url")) is True:
                self.found.append(Anomaly("404-with-recording-url", {"call_sid": call_sid},
                                          (restore(created), restore(record))))
        elif status in (200, 206) and audio_ok is not True:
            self.found.append(Anomaly("200-without-audio", {"call_sid": call_sid, "status": status},
                                      (restore(record),)))

    def verdict(self) -> Verdict:
        figure = {"responses": {str(k): v for k, v in sorted(self.counts.items(), key=lambda kv: str(kv[0]))}}
        return verdict(self.name, self.found, figure)


class IdempotentDelete(Check):
    name = "idempotent-delete"

    def __init__(self, p: Policy):
        super().__init__()
        self.active: dict[Any, dict[Any, Event]] = defaultdict(dict)
        self.found: list[Anomaly] = []
        self.requests = 0
        self.jobs: set[Any] = set()
        self.handlers = {"lead_job.request": self.on_event, "lead_job.end": self.on_event}

    def on_event(self, e: Event) -> None:
        b, jid = e.get("business_id"), e.get("job_id")
        if e["kind"] == "lead_job.end":
            if e.get("status") != "paused":
                self.active[b].pop(jid, None)
            return
        self.requests += 1
        self.jobs.add(jid)
        others = {k: v for k, v in self.active[b].items() if k != jid}
        if others:
            first_jid, first = next(iter(others.items()))
            self.found.append(Anomaly("second-job-while-active", {"business_id": b, "active_job": first_jid,
                                                                  "new_job": jid}, (first, e)))
        self.active[b].setdefault(jid, e)

    def verdict(self) -> Verdict:
        return verdict(self.name, self.found, {"requests": self.requests, "jobs": len(self.jobs)})


class LockExclusive(Check):
    name = "lock-exclusive"

    def __init__(self, p: Policy):
        super().__init__()
        self.running: dict[Any, dict[Any, Event]] = defaultdict(dict)
        self.paused: dict[Any, set[Any]] = defaultdict(set)
        self.found: list[Anomaly] = []
        self.starts = 0
        self.handlers = {k: self.on_event for k in ("lead_job.start", "lead_job.pause", "lead_job.end", "lock.release")}

    def on_event(self, e: Event) -> None:
        k, b = e["kind"], e.get("business_id")
        running, paused, found = self.running, self.paused, self.found
        if k == "lead_job.start":
            self.starts += 1
            jid = e.get("job_id")
            paused[b].discard(jid)
            for other, since in running[b].items():
                if other != jid:
                    found.append(Anomaly("concurrent-delete-jobs", {"business_id": b, "running_job": other,
                                                                    "started_job": jid}, (since, e)))
            running[b][jid] = e
        elif k == "lead_job.pause":
            running[b].pop(e.get("job_id"), None)
            paused[b].add(e.get("job_id"))
        elif k == "lead_job.end":
            running[b].pop(e.get("job_id"), None)
            paused[b].discard(e.get("job_id"))
        else:  # lock.release
            owner, holder = e.get("owner"), e.get("holder")
            if e.get("freed") and holder is not None and str(holder) != str(owner):
                found.append(Anomaly("released-anothers-lock", {"business_id": b, "owner": owner,
                                                                "holder": holder}, (e,)))
            if e.get("freed") and owner in paused[b]:
                found.append(Anomaly("lock-released-during-pause", {"business_id": b, "owner": owner}, (e,)))

    def verdict(self) -> Verdict:
        return verdict(self.name, self.found, {"job_runs": self.starts})


class NothingLost(Check):
    name = "nothing-lost"

    def __init__(self, p: Policy):
        super().__init__()
        self.opened: dict[tuple[Any, Any], Event] = {}  # outages still open, by (target, how)
        self.completed: set[Any] = set()
        self.waiting: list[tuple[Any, Any]] = []  # (recording, its recording.created kept) not yet seen downloaded
        self.purge_at = 1024
        self.recordings = 0
        self.requested: dict[tuple[Any, Any], Event] = {}
        self.owner: dict[Any, Any] = {}
        self.deletes: dict[tuple[Any, Any], list[Event]] = defaultdict(list)
        self.handlers = {"outage.start": self.on_outage, "outage.end": self.on_outage,
                         "download.end": handler_of(self.on_download), "recording.created": handler_of(self.on_created),
                         "lead.requested": self.on_requested,
                         "lead.delete": self.on_delete}

    def on_outage(self, e: Event) -> None:
        key = (e.get("target"), e.get("how"))
        if e["kind"] == "outage.start":
            self.opened[key] = e
        else:
            self.opened.pop(key, None)

    def on_download(self, ok: Any = None, skipped: Any = None, recording_sid: Any = None) -> None:
        if ok and not skipped:
            self.completed.add(recording_sid)

    def on_created(self, has_url: Any = None, recording_sid: Any = None, record: Any = None) -> None:
        if not has_url:
            return
        self.recordings += 1
        self.waiting.append((recording_sid, record))
        if len(self.waiting) >= self.purge_at:  # drop the downloaded ones, amortised
            self.waiting = [w for w in self.waiting if w[0] not in self.completed]
            self.purge_at = max(1024, 2 * len(self.waiting))

    def on_requested(self, e: Event) -> None:
        self.requested.setdefault((e.get("business_id"), e.get("lead_id")), e)
        self.owner.setdefault(e.get("lead_id"), e.get("business_id"))

    def on_delete(self, e: Event) -> None:
        self.deletes[(e.get("business_id"), e.get("lead_id"))].append(e)

    def verdict(self) -> Verdict:
        found = [Anomaly("recording-not-downloaded", {"call_sid": kept_get(k, "call_sid"), "recording_sid": sid},
                         (restore(k),)) for sid, k in self.waiting if sid not in self.completed]
        requested, deletes, owner = self.requested, self.deletes, self.owner
        for key, req in requested.items():
            n = len(deletes.get(key, ()))
            if n == 0:
                found.append(Anomaly("lead-not-deleted", {"business_id": key[0], "lead_id": key[1]}, (req,)))
            elif n > 1:
                found.append(Anomaly("lead-deleted-twice", {"business_id": key[0], "lead_id": key[1], "count": n},
                                     (req, *deletes[key][:3])))
        for key, dels in deletes.items():
            if key not in requested:
                kind = "other-tenant-touched" if key[1] in owner else "unrequested-delete"
                found.append(Anomaly(kind, {"business_id": key[0], "lead_id": key[1], "owner": owner.get(key[1])},
                                     tuple(dels[:3])))
        figure = {"recordings_with_url": self.recordings, "downloaded": len(self.completed),
                  "leads_requested": len(requested), "lead_deletes": sum(map(len, deletes.values()))}
        undecided = None
        if self.opened:
            names = ", ".join(f"{e.get('target')}/{e.get('how')}" for e in self.opened.values())
            undecided = f"the history ends during an outage ({names}): nothing-lost is judged only once outages are over"
            if found:  # lead deletion faults (twice, other tenant) are violations even mid-outage
                found = [a for a in found if a.type not in ("recording-not-downloaded", "lead-not-deleted")]
        return verdict(self.name, found, figure, undecided)


class WorkerNeverBlocks(Check):
    name = "worker-never-blocks"

    def __init__(self, p: Policy):
        super().__init__()
        self.found: list[Anomaly] = []
        self.slept: float = 0
        self.handlers = {"worker.sleep": self.on_sleep}

    def on_sleep(self, e: Event) -> None:
        self.found.append(Anomaly("worker-slept", {"job_id": e.get("job_id"), "seconds": e.get("seconds"),
                                                   "reason": e.get("reason")}, (e,)))
        self.slept += float(e.get("seconds") or 0)

    def verdict(self) -> Verdict:
        return verdict(self.name, self.found, {"sleeps": len(self.found), "slept_s": self.slept})
