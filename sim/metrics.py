"""Capacity-planning figures from a history and the model's samples (pure functions).

time-to-playable (first request of a session → its 200), requests per playback, jobs and
downloads per recording, and queue depth / worker utilisation over time.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

from loopfix.reference_app.policy.events import from_record


def quantiles(values: Sequence[float], qs: Iterable[float] = (0.5, 0.9, 0.99)) -> dict[str, float | None]:
    """Nearest-rank quantiles plus mean and max; None for an empty sample."""
    xs = sorted(values)
    out: dict[str, float | None] = {}
    for q in qs:
        out[f"p{round(q * 100):d}"] = xs[min(len(xs) - 1, max(0, int(round(q * len(xs) + 0.5)) - 1))] if xs else None
    out["mean"] = sum(xs) / len(xs) if xs else None
    out["max"] = xs[-1] if xs else None
    out["n"] = len(xs)
    return out


class HistoryMetrics:
    """history_metrics as an online consumer (`handlers`, kind -> function of one event), fed in
    the same pass as the invariants (harness.stream.Fanout); `result(events)` the figures, given
    how many events the history held. It keeps per session its request count and, until it
    plays, its first request's time; per call its job (a set once it has two); per recording
    with a URL its downloads.

    Each step does as few dict operations as it can for the common event: a tuple key is hashed
    anew by each operation on it, and most sessions play on their first request (callgrind, an
    hour of the day scenario: feeding the model's records cost 74 M instructions; these steps
    do it in 10.5 M fewer than a lookup, then a store, per figure)."""

    # the kinds whose records it only counts (job.start: job_runs); a source that counts its
    # records by kind (sim.records.CompactHistory.count) need not hand it each one — a call per
    # job, 9 M instructions an hour of the day — but gives it their number (add_count)
    counted = ("job.start",)

    def __init__(self) -> None:
        self.first: dict[tuple[Any, Any], float] = {}  # session -> its first request's time, until it plays
        self.played: dict[tuple[Any, Any], float] = {}
        self.requests: dict[tuple[Any, Any], int] = {}
        self.outcomes: dict[str, int] = defaultdict(int)
        self.jobs: dict[Any, Any] = {}  # recording's call -> its job id, or the set of them once two
        self.recordings: dict[Any, int] = {}  # recording with a URL -> its completed downloads
        self.early: dict[Any, int] = {}  # completed downloads of a recording not (yet) created
        self.runs = 0
        # each a step taking the fields it reads: the model's recorders call it with them and
        # build no record (sim.records); a pass over a history reads them from each record
        self.handlers = {kind: from_record(step) for kind, step in (
            ("client.request", self.on_request), ("client.end", self.on_end), ("job.enqueue", self.on_enqueue),
            ("job.start", self.on_start), ("download.end", self.on_download),
            ("recording.created", self.on_created))}
        # what to feed a source that counts its records by kind: all but the counted kinds'
        # handlers (their numbers then come from it: take_counts)
        self.uncounted = {k: h for k, h in self.handlers.items() if k not in self.counted}

    def on_request(self, client: Any, session: Any, status: int, t: float) -> None:
        key = (client, session)
        requests = self.requests
        n = requests.get(key, 0)
        requests[key] = n + 1
        if n == 0:
            if status in (200, 206):
                self.played[key] = t - t  # played on its first request (t - t: 0 of t's type)
            else:
                self.first[key] = t
        elif status in (200, 206):
            first = self.first.pop(key, None)  # None: it played already
            if first is not None:
                self.played[key] = t - first

    def on_end(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    def on_enqueue(self, call_sid: Any, job_id: Any) -> None:
        had = self.jobs.setdefault(call_sid, job_id)
        if had is not job_id and had != job_id:
            if isinstance(had, set):
                had.add(job_id)
            else:
                self.jobs[call_sid] = {had, job_id}

    def on_start(self) -> None:
        self.runs += 1

    def add_count(self, kind: str, n: int) -> None:
        """`n` records of `kind` (one of `counted`) that were not fed one by one."""
        if kind != "job.start":
            raise ValueError(f"{kind!r} records are not counted: feed them")
        self.runs += n

    def take_counts(self, source: Any) -> None:
        """The counted kinds' numbers from `source`, fed `uncounted` (anything with
        `count(kind)`: sim.records.CompactHistory, harness.stream.Fanout)."""
        for kind in self.counted:
            self.add_count(kind, source.count(kind))

    def on_download(self, ok: bool, skipped: bool, recording_sid: Any) -> None:
        if ok and not skipped:
            recordings = self.recordings
            n = recordings.get(recording_sid)
            if n is not None:
                recordings[recording_sid] = n + 1
            else:
                self.early[recording_sid] = self.early.get(recording_sid, 0) + 1

    def on_created(self, has_url: bool, recording_sid: Any) -> None:
        if has_url:  # (a recording in `early` is not in `recordings`: popping it first changes nothing)
            self.recordings.setdefault(recording_sid, self.early.pop(recording_sid, 0) if self.early else 0)

    def result(self, events: int) -> dict[str, Any]:
        return {
            "events": events,
            "time_to_playable_s": quantiles(list(self.played.values())),
            "requests_per_playback": quantiles([self.requests[k] for k in self.played]),
            "session_outcomes": dict(sorted(self.outcomes.items())),
            "jobs_per_recording": quantiles([len(v) if isinstance(v, set) else 1 for v in self.jobs.values()]),
            "downloads_per_recording": quantiles(list(self.recordings.values())),
            "job_runs": self.runs,
        }


def history_metrics(history: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The capacity figures of a history, in one pass (HistoryMetrics)."""
    m, events = HistoryMetrics(), 0
    handlers = m.handlers
    for e in history:
        events += 1
        h = handlers.get(e["kind"])
        if h is not None:
            h(e)
    return m.result(events)


def queue_metrics(samples: Sequence[Any], workers: int) -> dict[str, Any]:
    """Queue depth and utilisation (busy / workers up) from periodic samples."""
    depth = [s.queue_depth for s in samples]
    util = [s.busy_workers / s.workers_up if s.workers_up else 1.0 for s in samples]
    return {
        "queue_depth": quantiles(depth),
        "utilisation": quantiles(util),
        "workers": workers,
        "timeline": [{"t": s.t, "queue_depth": s.queue_depth, "busy": s.busy_workers, "up": s.workers_up}
                     for s in samples],
    }
