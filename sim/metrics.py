"""Capacity-planning figures from a history and the model's samples (pure functions).

time-to-playable (first request of a session → its 200), requests per playback, jobs and
downloads per recording, and queue depth / worker utilisation over time.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable, Mapping, Sequence


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


def _counting(step: Callable[[], None]) -> Callable[[Mapping[str, Any]], None]:
    """A handler of records that reads none of their fields: `step()` per record; `handler.step`
    is `step`, which the model's recorders (sim.records) call instead, no record built."""
    def handler(e: Mapping[str, Any]) -> None:
        step()
    handler.step = step  # type: ignore[attr-defined]
    return handler


class HistoryMetrics:
    """history_metrics as an online consumer (`handlers`, kind -> function of one event), fed in
    the same pass as the invariants (harness.stream.Fanout); `result(events)` the figures, given
    how many events the history held. It keeps per session its request count and, until it
    plays, its first request's time; per call its job (a set once it has two); per recording
    with a URL its downloads."""

    def __init__(self) -> None:
        self.first: dict[tuple[Any, Any], float] = {}
        self.played: dict[tuple[Any, Any], float] = {}
        self.requests: dict[tuple[Any, Any], int] = defaultdict(int)
        self.outcomes: dict[str, int] = defaultdict(int)
        self.jobs: dict[Any, Any] = {}  # recording's call -> its job id, or the set of them once two
        self.recordings: dict[Any, int] = {}  # recording with a URL -> its completed downloads
        self.early: dict[Any, int] = {}  # completed downloads of a recording not (yet) created
        self.runs = 0
        self.handlers = {"client.request": self.on_request, "client.end": self.on_end, "job.enqueue": self.on_enqueue,
                         "job.start": _counting(self.count_run), "download.end": self.on_download,
                         "recording.created": self.on_created}

    def on_request(self, e: Mapping[str, Any]) -> None:
        key = (e["client"], e["session"])
        n = self.requests[key] = self.requests[key] + 1
        if n == 1:
            self.first[key] = e["t"]
        if e["status"] in (200, 206) and key not in self.played:
            self.played[key] = e["t"] - self.first.pop(key)

    def on_end(self, e: Mapping[str, Any]) -> None:
        self.outcomes[e["outcome"]] += 1

    def on_enqueue(self, e: Mapping[str, Any]) -> None:
        call, job = e["call_sid"], e["job_id"]
        had = self.jobs.get(call, self)
        if had is self:
            self.jobs[call] = job
        elif isinstance(had, set):
            had.add(job)
        elif had != job:
            self.jobs[call] = {had, job}

    def count_run(self) -> None:  # job.start: no field read, so no record built (_counting)
        self.runs += 1

    def on_download(self, e: Mapping[str, Any]) -> None:
        if e["ok"] and not e["skipped"]:
            sid = e["recording_sid"]
            if sid in self.recordings:
                self.recordings[sid] += 1
            else:
                self.early[sid] = self.early.get(sid, 0) + 1

    def on_created(self, e: Mapping[str, Any]) -> None:
        if e["has_url"]:
            sid = e["recording_sid"]
            if sid not in self.recordings:
                self.recordings[sid] = self.early.pop(sid, 0) if self.early else 0

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
