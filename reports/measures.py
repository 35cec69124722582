"""Figures read off one history — the same functions for a model run and a live run.

Calibration compares the model with the live stack, so both are measured by one set of
functions over the shared event schema (`reference_app/events.py`), never by the model's own
counters. Every function is pure: a list of event records in, plain numbers out.

Definitions (all times in policy seconds):
- a *playback* is one client session that got a 200/206; its time to playable runs from the
  session's first request to that response, its requests are all the session's requests;
- *jobs per recording*: distinct job ids enqueued per call_sid, over calls that had a job;
- *downloads per recording*: completed (not skipped) downloads per recording, over recordings
  downloaded at least once — 1.0 means no duplicate download;
- *backlog*: jobs enqueued and not yet started (a job leaves it when it starts, fails, or is
  declared stuck, and re-enters on every re-enqueue), sampled on a fixed step;
- *recovery*: how long after the last outage ends the backlog first falls back to its
  pre-outage level;
- *not played*: sessions that gave up or ended on an error, over sessions that asked for a
  recording that exists (a 404 for a call without one is the right answer, not a failure);
- *after the outage*: what the workers did from the outage's end until recovery — the job runs
  that downloaded, and those that did not (deferred for a business's busy slots, a worker
  asleep), jobs declared stuck and re-enqueued, new jobs arriving.
"""
from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from loopfix.reference_app.policy.events import from_record

Event = Mapping[str, Any]
BACKLOG_STEP_S = 60.0
# The figures of `summary` that calibration compares between the model and a live run.
CALIBRATION_METRICS = ("ttp_p50_s", "ttp_p95_s", "requests_per_playback", "jobs_per_recording",
                       "downloads_per_recording")


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of `values`; None when empty."""
    xs = sorted(values)
    if not xs:
        return None
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class Session:
    """One client playback session: its requests, when it played (None: never), how it ended."""

    call_sid: str
    start_t: float
    requests: int
    time_to_playable_s: float | None
    outcome: str | None


def sessions(history: Iterable[Event]) -> list[Session]:
    return _scan(history)[0]


def times_to_playable(history: Iterable[Event]) -> list[float]:
    return [s.time_to_playable_s for s in sessions(history) if s.time_to_playable_s is not None]


def summary(history: Iterable[Event]) -> dict[str, Any]:
    """The calibration figures of one run (see the module docstring for each definition)."""
    return _summarise(*_scan(history)[:3])


def summary_and_queue_waits(history: Iterable[Event], after_t: float = 0.0) -> tuple[dict[str, Any], list[float]]:
    """(summary(history), queue_waits(history, after_t)) in one pass over the history (a sweep
    row reads both)."""
    return scan(history, after_t).summary_and_queue_waits()


def queue_waits(history: Iterable[Event], after_t: float = 0.0) -> list[float]:
    """Per job run started after `after_t`: time from its latest enqueue to its start."""
    return _scan(history, after_t)[3]


class Scan:
    """The fold behind `summary` and `queue_waits`: `handlers` maps each kind it reads to a
    function of one record of that kind (harness.stream's consumer protocol), which hands the
    fields its step names to the step, by keyword (`from_record`). A pass over a history feeds
    every record to its kind's handler (`scan`); a model run can call the same steps with the
    same fields as it makes its records, no record built (`handler.step`: sim.records' routed
    recorders, sim.sweep.KeptKinds' `feed`), and keep none. What it gathers: the client
    sessions, the job ids enqueued per call_sid (one id, or the set of them when there are
    several: a set per call costs more than the pass), the completed downloads per
    recording_sid, the queue waits of job runs enqueued at or after `after_t`, and `job_runs()`,
    every job run started."""

    KINDS = ("job.enqueue", "job.start", "download.end", "client.request", "client.end")

    def __init__(self, after_t: float = 0.0) -> None:
        # the steps are closures over plain dicts and lists: a model run calls them per record
        first: dict[tuple[Any, Any], float] = {}
        calls: dict[tuple[Any, Any], str] = {}
        count: dict[tuple[Any, Any], int] = defaultdict(int)
        played: dict[tuple[Any, Any], float] = {}
        ended: dict[tuple[Any, Any], str] = {}  # a session's outcome
        jobs: dict[Any, Any] = {}
        downloads: dict[Any, int] = {}
        enqueued: dict[Any, float] = {}
        waits: list[float] = []
        unwaited = [0]  # job runs started without a wait counted (enqueued before after_t, or never)
        pop, wait = enqueued.pop, waits.append

        def job_enqueue(job_id: Any, call_sid: Any, t: float) -> None:
            ids = jobs.get(call_sid)  # its one job id, or a set once it has two
            if ids is None:
                jobs[call_sid] = job_id
            elif ids.__class__ is set:
                ids.add(job_id)
            elif ids != job_id:
                jobs[call_sid] = {ids, job_id}
            enqueued[job_id] = float(t)

        def job_start(job_id: Any, t: float) -> None:
            t0 = pop(job_id, None)
            if t0 is not None and t0 >= after_t:
                wait(float(t) - t0)
            else:
                unwaited[0] += 1

        def download_end(recording_sid: Any, ok: Any = None, skipped: Any = None) -> None:
            if ok and not skipped:
                downloads[recording_sid] = downloads.get(recording_sid, 0) + 1

        def client_request(client: Any, session: Any, t: float, call_sid: Any = None, status: Any = None) -> None:
            key = (client, session)
            first.setdefault(key, float(t))
            calls.setdefault(key, str(call_sid))
            count[key] += 1
            if status in (200, 206) and key not in played:
                played[key] = float(t) - first[key]

        def client_end(client: Any, session: Any, outcome: Any = None) -> None:
            ended[(client, session)] = str(outcome)

        self.handlers: dict[str, Any] = dict(zip(self.KINDS, map(from_record, (
            job_enqueue, job_start, download_end, client_request, client_end))))
        self._state = (first, calls, count, played, ended, jobs, downloads, waits, unwaited)

    def gathered(self) -> tuple[list[Session], dict[Any, Any], dict[Any, int], list[float]]:
        """(the sessions, job ids per call_sid, completed downloads per recording_sid, queue waits)."""
        first, calls, count, played, outcome, jobs, downloads, waits, _ = self._state
        ss = [Session(calls[k], first[k], count[k], played.get(k), outcome.get(k)) for k in first]
        return ss, jobs, downloads, waits

    def summary_and_queue_waits(self) -> tuple[dict[str, Any], list[float]]:
        """(summary, queue_waits) of the records fed so far."""
        ss, jobs, downloads, waits = self.gathered()
        return _summarise(ss, jobs, downloads), waits

    def job_runs(self) -> int:
        """Job runs started (job.start records fed so far): those with a queue wait and the others."""
        return len(self._state[-2]) + self._state[-1][0]


def scan(history: Iterable[Event], after_t: float = 0.0) -> Scan:
    """A Scan fed every record of `history`, in order: its figures are those of one pass."""
    scan = Scan(after_t)
    steps = scan.handlers.get
    for e in history:
        step = steps(e.get("kind"))
        if step is not None:
            step(e)
    return scan


def _scan(history: Iterable[Event], after_t: float = 0.0) -> tuple[list[Session], dict[Any, Any], dict[Any, int],
                                                                 list[float]]:
    """One pass (Scan): the sessions, job ids per call_sid, downloads per recording, queue waits."""
    return scan(history, after_t).gathered()


def _summarise(ss: list[Session], jobs: Mapping[Any, Any], downloads: Mapping[Any, int]) -> dict[str, Any]:
    ttp = [s.time_to_playable_s for s in ss if s.time_to_playable_s is not None]
    reqs = [float(s.requests) for s in ss if s.time_to_playable_s is not None]
    outcomes: dict[str, int] = defaultdict(int)
    for s in ss:
        outcomes[s.outcome or "open"] += 1
    return {
        "sessions": len(ss),
        "playbacks": len(ttp),
        "ttp_p50_s": percentile(ttp, 0.5),
        "ttp_p95_s": percentile(ttp, 0.95),
        "requests_per_playback": mean(reqs),
        "jobs_per_recording": mean([float(len(v)) if v.__class__ is set else 1.0 for v in jobs.values()]),
        "downloads_per_recording": mean([float(v) for v in downloads.values()]),
        "outcomes": dict(sorted(outcomes.items())),
    }


def outage_windows(history: Iterable[Event]) -> list[tuple[float, float, str]]:
    """(start, end, target) of every outage; an outage with no end runs to the last event."""
    open_at: dict[str, list[float]] = defaultdict(list)
    out: list[tuple[float, float, str]] = []
    history = history if isinstance(history, Sequence) else list(history)
    for e in history:
        kind = e.get("kind")
        if kind == "outage.start":
            open_at[str(e.get("target"))].append(float(e["t"]))
        elif kind == "outage.end" and open_at[str(e.get("target"))]:
            out.append((open_at[str(e["target"])].pop(0), float(e["t"]), str(e["target"])))
    if any(open_at.values()):
        last = max(float(e.get("t", 0.0)) for e in history)
        out.extend((t, last, target) for target, ts in open_at.items() for t in ts)
    return sorted(out)


def _track_waiting(waiting: set[Any], e: Event) -> bool:
    """Apply one event to the set of jobs waiting (enqueued, not started); True when a job run
    started."""
    kind = e.get("kind")
    if kind == "job.enqueue":
        waiting.add(e["job_id"])
    elif kind == "job.start":
        waiting.discard(e["job_id"])
        return True
    elif kind == "job.stuck" or (kind == "job.end" and e.get("outcome") == "failed"):
        waiting.discard(e["job_id"])
    return False


def backlog(history: Iterable[Event], step_s: float = BACKLOG_STEP_S) -> list[tuple[float, int, int]]:
    """(t, jobs waiting, job runs started in the step before t), one sample per `step_s`."""
    waiting: set[Any] = set()
    samples: list[tuple[float, int, int]] = []
    next_t, started = step_s, 0
    for e in history:
        t = float(e.get("t", 0.0))
        while t >= next_t:
            samples.append((next_t, len(waiting), started))
            next_t, started = next_t + step_s, 0
        started += _track_waiting(waiting, e)
    samples.append((next_t, len(waiting), started))
    return samples


def recovery_s(history: Sequence[Event], until_s: float | None = None,
               step_s: float = BACKLOG_STEP_S, series: Sequence[tuple[float, int, int]] | None = None) -> float | None:
    """Seconds from the end of the last outage until the backlog first falls back to its
    pre-outage level (its maximum before the outage, plus two jobs of slack), judged up to
    `until_s` (pass when arrivals stop: a queue that drains only once the load is gone has not
    recovered), to the sampling step; None when there is no outage or it is still high at
    `until_s` — the system is stuck in its degraded state while the load goes on. `series`:
    the history's `backlog(history, step_s)` when the caller has it already."""
    windows = outage_windows(history)
    if not windows:
        return None
    first_start, last_end = windows[0][0], max(end for _, end, _ in windows)
    series = backlog(history, step_s) if series is None else series
    normal = max([w for t, w, _ in series if t <= first_start] + [0]) + 2
    for t, w, _ in series:
        if t >= last_end and (until_s is None or t <= until_s) and w <= normal:
            return t - last_end
    return None


def unplayed_share(outcomes: Mapping[str, int]) -> float | None:
    """Sessions that did not play (gave up, an error, still open), over the sessions whose
    recording exists — `outcomes` as `summary` counts them; None when there is none."""
    asked = sum(n for k, n in outcomes.items() if k != "not_found")
    return None if not asked else (asked - outcomes.get("played", 0)) / asked


def row_outcomes(row: Mapping[str, Any]) -> dict[str, int]:
    """A sweep row's `sessions_<outcome>` columns back into `summary`'s outcomes."""
    return {k[len("sessions_"):]: int(v or 0) for k, v in row.items() if k.startswith("sessions_")}


def after_outage(history: Sequence[Event], until_s: float | None = None,
                 step_s: float = BACKLOG_STEP_S) -> dict[str, Any] | None:
    """What happened from the end of the last outage until the backlog recovered (`recovery_s`,
    judged up to `until_s`), or until `until_s` when it did not: the jobs waiting at the
    outage's end and at the window's end, the job runs started and how they ended (a download,
    deferred, failed), workers' sleeps, jobs declared stuck, new jobs and re-enqueued ones.
    None when the history has no outage."""
    windows = outage_windows(history)
    if not windows:
        return None
    end = max(e for _, e, _ in windows)
    recovery = recovery_s(history, until_s, step_s)
    stop = end + recovery if recovery is not None else (until_s if until_s is not None else math.inf)
    waiting: set[Any] = set()
    seen: set[Any] = set()
    counts = {"job_runs": 0, "downloads": 0, "deferred": 0, "failed": 0, "worker_sleeps": 0, "stuck": 0,
              "new_jobs": 0, "re_enqueued": 0}
    at_end = None
    for e in history:
        t, kind = float(e.get("t", 0.0)), e.get("kind")
        if t >= end and at_end is None:
            at_end = len(waiting)
        if t > stop:
            break
        if end <= t:
            if kind == "job.enqueue":
                counts["re_enqueued" if e["job_id"] in seen else "new_jobs"] += 1
            counts["job_runs"] += kind == "job.start"
            counts["downloads"] += kind == "download.start"
            counts["deferred"] += kind == "job.end" and e.get("outcome") == "deferred"
            counts["failed"] += kind == "job.end" and e.get("outcome") == "failed"
            counts["worker_sleeps"] += kind == "worker.sleep"
            counts["stuck"] += kind == "job.stuck"
        if kind == "job.enqueue":
            seen.add(e["job_id"])
        _track_waiting(waiting, e)
    return {"outage_end_s": end, "recovery_s": recovery, "window_s": stop - end if stop != math.inf else None,
            "waiting_at_outage_end": at_end if at_end is not None else len(waiting),
            "waiting_at_window_end": len(waiting), **counts}


def retry_timeline(history: Sequence[Event]) -> dict[str, Any] | None:
    """The job with the most recording retries: each retry's time and announced delay, and
    when its next run started — the raw material of the backoff figure."""
    retries: dict[Any, list[Event]] = defaultdict(list)
    starts: dict[Any, list[float]] = defaultdict(list)
    for e in history:
        if e.get("kind") == "job.retry":
            retries[e["job_id"]].append(e)
        elif e.get("kind") == "job.start":
            starts[e["job_id"]].append(float(e["t"]))
    if not retries:
        return None
    job = max(retries, key=lambda j: (len(retries[j]), -float(retries[j][0]["t"])))
    rows = []
    for r in retries[job]:
        t = float(r["t"])
        later = starts[job][bisect.bisect_right(starts[job], t):]
        rows.append({"t": t, "attempt": r.get("attempt"), "delay_s": r.get("delay"),
                     "next_start_t": later[0] if later else None})
    return {"job_id": job, "call_sid": retries[job][0].get("call_sid"), "retries": rows,
            "starts": starts[job]}


def calls_with_pending_jobs(history: Iterable[Event]) -> set[Any]:
    """The call_sids that still have a job in flight when the history ends: enqueued, running,
    or waiting for a retry (its last record is not an end that settles it: done, failed,
    skipped, crashed, or declared stuck). Work still queued, not work lost."""
    last: dict[Any, Event] = {}
    for e in history:
        if e.get("kind") in ("job.enqueue", "job.start", "job.retry", "job.end", "job.stuck"):
            last[e["job_id"]] = e
    settled = ("done", "failed", "skipped", "crashed")
    return {e.get("call_sid") for e in last.values()
            if not (e["kind"] == "job.stuck" or (e["kind"] == "job.end" and e.get("outcome") in settled))}


def worker_time_per_job(history: Sequence[Event]) -> dict[str, Any]:
    """What a worker spends per job besides Twilio's download, medians over the run:
    `in_job_s` — a run's time from job.start to job.end minus its download (start to end), over
    runs that downloaded; `between_jobs_s` — from a worker's job.end to its next job.start when
    that next job was already enqueued at the end (RQ's dequeue, the fork of a work horse, its
    imports); and their sum `overhead_s`, what the model charges per job as
    `workers.job_overhead_s`."""
    started: dict[Any, float] = {}
    enqueued: dict[Any, float] = {}
    dl_start: dict[Any, float] = {}
    dl_time: dict[Any, float] = {}
    last_end: dict[str, float] = {}
    in_job: list[float] = []
    between: list[float] = []
    for e in history:
        kind, t = e.get("kind"), float(e.get("t", 0.0))
        if kind == "job.enqueue":
            enqueued[e["job_id"]] = t
        elif kind == "job.start":
            worker = str(e.get("worker") or e.get("proc"))
            started[e["job_id"]] = t
            dl_time.pop(e["job_id"], None)
            end = last_end.pop(worker, None)
            if end is not None and enqueued.get(e["job_id"], math.inf) <= end:
                between.append(t - end)
        elif kind == "download.start":
            dl_start[e["job_id"]] = t
        elif kind == "download.end" and e["job_id"] in dl_start:
            dl_time[e["job_id"]] = t - dl_start.pop(e["job_id"])
        elif kind == "job.end" and e["job_id"] in started:
            last_end[str(e.get("worker") or e.get("proc"))] = t
            t0 = started.pop(e["job_id"])
            if e["job_id"] in dl_time:
                in_job.append(t - t0 - dl_time.pop(e["job_id"]))
    a, b = percentile(in_job, 0.5), percentile(between, 0.5)
    return {"in_job_s": a, "in_job_n": len(in_job), "between_jobs_s": b, "between_jobs_n": len(between),
            "overhead_s": None if a is None else a + (b or 0.0)}


def blocked_after_failure(history: Iterable[Event]) -> list[float]:
    """Per call whose job failed: how long after the failure enqueue requests were still
    answered 'duplicate' (the dedup key outliving the job), until one was enqueued again."""
    failed_at: dict[Any, float] = {}
    blocked: dict[Any, float] = {}
    for e in history:
        kind = e.get("kind")
        if kind == "job.end" and e.get("outcome") == "failed":
            failed_at.setdefault(e["call_sid"], float(e["t"]))
        elif kind == "enqueue.result" and e["call_sid"] in failed_at:
            if e.get("reason") == "duplicate":
                blocked[e["call_sid"]] = float(e["t"]) - failed_at[e["call_sid"]]
            elif e.get("reason") == "enqueued":
                del failed_at[e["call_sid"]]
    return sorted(blocked.values())
