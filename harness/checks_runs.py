"""The invariants about sessions and recording jobs as online checks (harness/stream.py):
loops-terminate, no-duplicate-download, one-job-per-storm, backoff-schedule, fail-fast.

Each is fed the events of its kinds in history order and keeps only what its invariant must:
the open player sessions, per job its run count and first run, per recording its first
completed download, per clicked recording its current burst and fail-fast window, per job
that failed or retried its pending retry. Anomalies are noted with the place a pass over
the whole history would have found them (the first event it reads of the session, job or recording), so
the verdicts are the same as checking the whole history at once. The rules are DESIGN.md's; the
docstrings of harness/invariants.py's check_* functions state them.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from loopfix.harness.bounds import expected_delay, player_time_bound, retry_phase_of
from loopfix.harness.query import promotable_at
from loopfix.harness.stream import Check, handler_of, kept_get, restore
from loopfix.harness.verdicts import Anomaly, Event, Verdict, verdict
from loopfix.reference_app import policy as policy_mod
from loopfix.reference_app.policy import Policy

TERMINAL_OUTCOMES = ("played", "not_found", "worker_offline", "gave_up")


class LoopsTerminate(Check):
    name = "loops-terminate"
    needs_end_t = True

    def __init__(self, p: Policy):
        super().__init__()
        self.max_requests = 1 + p.player_max_retries
        self.time_bound = player_time_bound(p)
        self.max_runs = policy_mod.max_recording_runs(p)
        # open sessions: key -> [seq, start, first request, last request, requests, latency sum, end, start's t]
        self.open: dict[tuple[Any, Any], list[Any]] = {}
        self.sessions = 0
        self.most_requests = 0
        # job -> its first start (kept) while it ran once, then [runs, first, start #max_runs, last start]
        self.runs: dict[Any, Any] = {}
        self.deferred: set[Any] = set()  # jobs whose last job.end was a slot deferral
        self.most_runs = 0
        self.handlers = {"client.start": handler_of(self.on_client_start), "client.request": handler_of(self.on_request),
                         "client.end": handler_of(self.on_client_end), "job.start": handler_of(self.on_start),
                         "job.end": handler_of(self.on_end)}

    def session(self, key: tuple[Any, Any], start: Any = None, t: Any = None) -> list[Any]:
        """A new open session (a handler looks its session up first: most events find it)."""
        s = self.open[key] = [self.sessions, start, None, None, 0, 0, None, t]
        self.sessions += 1
        return s

    def on_client_start(self, client: Any = None, session: Any = None, t: Any = None, record: Any = None) -> None:
        key = (client, session)
        s = self.open.get(key)
        if s is None:
            self.session(key, record, t)
        else:
            s[1], s[7] = record, t

    def on_request(self, client: Any = None, session: Any = None, latency_s: Any = None, record: Any = None) -> None:
        key = (client, session)
        s = self.open.get(key) or self.session(key)
        if s[2] is None:
            s[2] = record
        s[3] = record
        n = s[4] = s[4] + 1
        s[5] += float(latency_s or 0.0)
        if n > self.most_requests:
            self.most_requests = n

    def on_client_end(self, client: Any = None, session: Any = None, outcome: Any = None, requests: Any = None,
                      t: Any = None, record: Any = None) -> None:
        key = (client, session)
        if not self.ordered:  # any list: a session is judged once the whole history is read, on its last end
            (self.open.get(key) or self.session(key))[6] = record
            return
        s = self.open.pop(key, None)  # the model's stream: nothing of a session follows its end, judge it now
        if s is None:
            s = self.session(key)
            del self.open[key]
        s[6] = record
        # _judge's tests for a session that ended in time, in its order, on the fields at hand and its start's t
        # (kept beside it): 3,300 sessions a simulated hour judged without a call (14 M instructions)
        t0 = s[7] if s[1] else kept_get(s[2] if s[4] else record, "t")
        if (max(s[4], int(requests or 0)) <= self.max_requests and outcome in TERMINAL_OUTCOMES
                and float(t) - float(t0) <= self.time_bound + s[5]):
            return
        self._judge(key, s)

    def _judge(self, key: tuple[Any, Any], s: list[Any]) -> None:
        seq, start, first_req, last_req, nreqs, latency, end, _ = s
        first = start or (first_req if nreqs else end)
        n = max(nreqs, int((kept_get(end, "requests") if end is not None else None) or 0))
        bound_s = self.time_bound + latency
        if n > self.max_requests:
            kind = "unbounded-session" if end else "looping-session"
            found = (kind, {"bound": self.max_requests, "ended": end is not None})
        elif end is None:
            age = self.end_t - float(kept_get(first, "t"))
            if age <= bound_s:
                return
            found = ("unterminated-session", {"age_s": age, "bound_s": bound_s})
        elif kept_get(end, "outcome") not in TERMINAL_OUTCOMES:
            found = ("non-terminal-outcome", {"outcome": kept_get(end, "outcome")})
        elif float(kept_get(end, "t")) - float(kept_get(first, "t")) > bound_s:
            duration = float(kept_get(end, "t")) - float(kept_get(first, "t"))
            found = ("session-too-long", {"duration_s": duration, "bound_s": bound_s})
        else:
            return  # a session that ended in time: the common case, nothing built
        client, session = key
        facts = {"client": client, "session": session, "call_sid": kept_get(first, "call_sid"), "requests": n,
                 **found[1]}
        self.note(seq, Anomaly(found[0], facts, tuple(restore(w) for w in (start, first_req, last_req, end) if w)))

    def on_end(self, outcome: Any = None, job_id: Any = None) -> None:
        if outcome == "deferred":
            self.deferred.add(job_id)
        elif self.deferred:
            self.deferred.discard(job_id)

    def on_start(self, job_id: Any = None, record: Any = None) -> None:
        jid = job_id
        if jid in self.deferred:
            return
        r = self.runs.get(jid)
        if r is None:  # one run: its start kept alone; a list once it runs again
            self.runs[jid] = record
            if self.most_runs < 1:
                self.most_runs = 1
            return
        if type(r) is not list:
            r = self.runs[jid] = [1, r]
        r[0] += 1
        if r[0] > self.most_runs:
            self.most_runs = r[0]
        if r[0] == self.max_runs + 1:
            r.append(record)
            r.append(r[-1])
        elif r[0] > self.max_runs + 1:
            r[3] = record

    def verdict(self) -> Verdict:
        for key, s in list(self.open.items()):
            self._judge(key, s)
        self.open.clear()
        found = self.noted()
        for jid, r in (self.runs.items() if self.most_runs > self.max_runs else ()):  # none ran too often: no pass
            if type(r) is list and r[0] > self.max_runs:
                first = restore(r[1])
                found.append(Anomaly("job-rerun-unbounded", {"job_id": jid, "call_sid": first.get("call_sid"),
                                                             "runs": r[0], "bound": self.max_runs},
                                     (first, restore(r[2]), restore(r[3]))))
        figure = {"sessions": self.sessions, "request_bound": self.max_requests, "time_bound_s": self.time_bound,
                  "max_requests_in_a_session": self.most_requests, "max_runs_of_a_job": self.most_runs,
                  "run_bound": self.max_runs}
        return verdict(self.name, found, figure)


class NoDuplicateDownload(Check):
    name = "no-duplicate-download"

    def __init__(self, p: Policy):
        super().__init__()
        # recording -> its completed download (kept) while one, then [count, first 5 (kept), job ids]
        self.done: dict[Any, Any] = {}
        self.completed = 0
        self.handlers = {"download.end": handler_of(self.on_end)}

    def on_end(self, ok: Any = None, skipped: Any = None, recording_sid: Any = None, call_sid: Any = None,
               job_id: Any = None, record: Any = None) -> None:
        if not ok or skipped:
            return
        self.completed += 1
        key = recording_sid or call_sid
        d = self.done.get(key)
        if d is None:
            self.done[key] = record
            return
        if type(d) is not list:
            d = self.done[key] = [1, [d], {str(restore(d).get("job_id"))}]
        d[0] += 1
        if len(d[1]) < 5:
            d[1].append(record)
        d[2].add(str(job_id))

    def verdict(self) -> Verdict:
        found = [Anomaly("duplicate-download", {"recording_sid": sid, "count": d[0], "job_ids": sorted(d[2])},
                         tuple(restore(w) for w in d[1]))
                 for sid, d in (self.done.items() if self.completed > len(self.done) else ())  # else no duplicate
                 if type(d) is list]
        figure = {"recordings_downloaded": len(self.done), "completed_downloads": self.completed}
        return verdict(self.name, found, figure)


class OneJobPerStorm(Check):
    name = "one-job-per-storm"
    SWEEP_MIN = 1024  # open bursts before a sweep for closed ones (ordered streams)

    def __init__(self, p: Policy, window_s: float | None = None):
        super().__init__()
        self.window = p.playback_mark_ttl_s if window_s is None else window_s
        # clicked recording -> its current burst [seq, first t, last t, job ids, first 5 (kept)], or
        # its seq alone once that burst is closed (ordered histories: no click can join it any more)
        self.bursts: dict[Any, Any] = {}
        self.open: list[Any] = []  # recordings whose burst may be open (ordered histories)
        self.sweep_at = self.SWEEP_MIN
        self.enqueues = 0
        self.handlers = {"job.enqueue": self.on_enqueue}
        self.filters = {"job.enqueue": ("via", ("playback", "enqueue_api"))}  # click-driven enqueues

    def on_enqueue(self, e: Event) -> None:
        self.enqueues += 1
        call_sid = e.get("call_sid")
        b = self.bursts.get(call_sid)
        t = float(e["t"])
        if type(b) is list:
            if t - b[1] < self.window:
                b[2] = t
                b[3].add(str(e.get("job_id")))
                if len(b[4]) < 5:
                    b[4].append(self.keep(e))
                return
            self._close(call_sid, b)
            b = b[0]
        self.bursts[call_sid] = [len(self.bursts) if b is None else b, t, t, {str(e.get("job_id"))}, [self.keep(e)]]
        if self.ordered:
            self.open.append(call_sid)
            if len(self.open) >= self.sweep_at:
                self._sweep(t)

    def _sweep(self, now: float) -> None:
        """Close the bursts no click can join any more (the history is in time order)."""
        still = []
        for call_sid in self.open:
            b = self.bursts[call_sid]
            if type(b) is list:
                if now - b[1] >= self.window:
                    self._close(call_sid, b)
                    self.bursts[call_sid] = b[0]
                else:
                    still.append(call_sid)
        self.open = still
        self.sweep_at = max(self.SWEEP_MIN, 2 * len(still))

    def _close(self, call_sid: Any, b: list[Any]) -> None:
        if len(b[3]) > 1:
            jobs = sorted(b[3])
            self.note(b[0], Anomaly(
                "storm-duplicate-enqueue",
                {"call_sid": call_sid, "jobs": len(jobs), "job_ids": jobs[:10], "window_s": self.window,
                 "span_s": b[2] - b[1]},
                tuple(restore(w) for w in b[4])))

    def verdict(self) -> Verdict:
        for call_sid, b in self.bursts.items():
            if type(b) is list:
                self._close(call_sid, b)
        figure = {"window_s": self.window, "recordings_clicked": len(self.bursts), "click_enqueues": self.enqueues}
        return verdict(self.name, self.noted(), figure)


class _Job:
    """A job's backoff bookkeeping: its pending retry, re-queue and failed run, and totals."""

    __slots__ = ("seq", "pending", "requeued", "last_fail", "failed", "total", "most")

    def __init__(self, seq: int):
        self.seq, self.pending, self.requeued, self.last_fail, self.failed = seq, None, None, None, 0
        self.total: dict[str, float] | None = None
        self.most: dict[str, int] | None = None


class BackoffSchedule(Check):
    name = "backoff-schedule"

    def __init__(self, p: Policy, rel_tol: float = 0.02, abs_tol_s: float = 1.0):
        super().__init__()
        self.p, self.rel_tol, self.abs_tol_s = p, rel_tol, abs_tol_s
        self.jobs: dict[Any, _Job | int] = {}  # a job with nothing pending or counted: its seq alone
        self.gaps_checked: dict[str, int] = defaultdict(int)
        self.first_gap: dict[str, tuple[int, int]] = {}  # phase -> where a job-by-job pass first counts it
        self.n = 0  # events that may note an anomaly, counted: their order within a job
        self.opened: dict[tuple[Any, Any], Event] = {}  # outages: open ones by (target, how)
        self.windows: list[tuple[Event, float]] = []  # and closed ones with their end
        self.late: list[tuple[Any, ...]] = []  # re-queues that may be late, judged at the end (any list)
        self.handlers = {"job.retry": self.on_retry, "job.start": handler_of(self.on_start),
                         "job.end": handler_of(self.on_end),
                         "job.enqueue": self.on_enqueue, "outage.start": self.on_outage, "outage.end": self.on_outage}
        # a delayed retry re-queued; a failed run (the next is timed from its end): the jobs that
        # end otherwise (all but 1 % in a day) have no place to take here that their start did not
        # give them, and no call is made for them (10,900 a simulated hour, 11 M instructions)
        self.filters = {"job.enqueue": ("via", ("retry",)), "job.end": ("outcome", ("retry", "failed"))}

    def tol(self, expected: float) -> float:
        return self.rel_tol * expected + self.abs_tol_s

    def job(self, jid: Any) -> _Job:
        j = self.jobs.get(jid)
        if j is None:
            j = self.jobs[jid] = _Job(len(self.jobs))
        elif type(j) is int:
            j = self.jobs[jid] = _Job(j)
        self.n += 1
        return j

    def on_outage(self, e: Event) -> None:
        key = (e.get("target"), e.get("how"))
        if e["kind"] == "outage.start":
            self.opened[key] = e
        elif key in self.opened:
            self.windows.append((self.opened.pop(key), float(e["t"])))

    def halts(self) -> list[tuple[float, float]]:
        """harness.query.promotion_halts of the history so far (open windows end at inf): a
        retry re-queued by now was due before any outage still to come starts."""
        windows = self.windows + [(start, float("inf")) for start in self.opened.values()]
        return sorted((float(s["t"]), end) for s, end in windows
                      if s.get("target") != "twilio" and not (s.get("target") == "workers" and s.get("workers", 0) != 0))

    def on_end(self, job_id: Any = None, record: Any = None) -> None:
        j = self.job(job_id)
        j.last_fail, j.failed = restore(record), j.failed + 1

    def on_enqueue(self, e: Event) -> None:
        self.job(e.get("job_id")).requeued = e

    def on_retry(self, e: Event) -> None:
        jid = e.get("job_id")
        j, p = self.job(jid), self.p
        attempt, phase = int(e.get("attempt") or 0), retry_phase_of(e)
        if j.most is None:
            j.most = defaultdict(int)
        j.most[phase] = max(j.most[phase], attempt)
        budget = policy_mod.retry_budget(phase, p)
        if attempt > budget:
            self.note((j.seq, self.n), Anomaly("too-many-attempts", {"job_id": jid, "attempt": attempt, "phase": phase,
                                                                     "max": budget}, (e,)))
        expected = expected_delay(attempt, p)
        recorded = float(e.get("delay") or 0.0)
        if abs(recorded - expected) > self.tol(expected):
            self.note((j.seq, self.n), Anomaly("delay-not-policy", {"job_id": jid, "attempt": attempt, "phase": phase,
                                                                    "delay_s": recorded, "expected_s": expected}, (e,)))
        j.pending, j.requeued, j.last_fail = e, None, None

    def on_start(self, job_id: Any = None, record: Any = None) -> None:
        jid = job_id
        j = self.jobs.get(jid)
        if j is None:
            self.jobs[jid] = len(self.jobs)
            return  # a job's first start: nothing pending
        if type(j) is int:
            return  # nothing pending, nothing to reset
        self.n += 1
        p, e = self.p, restore(record)
        pending, last_fail = j.pending, j.last_fail
        if pending is not None:
            attempt, phase = int(pending.get("attempt") or 0), retry_phase_of(pending)
            expected = expected_delay(attempt, p)
            gap = float(e["t"]) - float(pending["t"])
            self._add(j, phase, gap)
            requeued = j.requeued
            if gap < expected - self.tol(expected):
                self.note((j.seq, self.n), Anomaly("retry-too-soon", {"job_id": jid, "attempt": attempt, "phase": phase,
                                                                      "gap_s": gap, "expected_s": expected}, (pending, e)))
            elif requeued is not None and float(requeued["t"]) > float(pending["t"]) + expected + self.tol(expected):
                late = ((j.seq, self.n), jid, attempt, phase, expected, pending, requeued)
                if self.ordered:  # every halt that could cover the due time has begun by now
                    self._judge_late(late, self.halts())
                else:  # any list: judged against the whole history's halts
                    self.late.append(late)
        elif last_fail is not None:
            expected = expected_delay(j.failed, p)
            gap = float(e["t"]) - float(last_fail["t"])
            self._add(j, "calllog", gap)
            if gap < expected - self.tol(expected):
                self.note((j.seq, self.n), Anomaly("rerun-without-backoff", {"job_id": jid, "attempt": j.failed,
                                                                             "gap_s": gap, "expected_s": expected},
                                                   (last_fail, e)))
        j.pending = j.requeued = j.last_fail = None
        if not j.failed and j.total is None and j.most is None:
            self.jobs[jid] = j.seq

    def _judge_late(self, late: tuple[Any, ...], halts: list[tuple[float, float]]) -> None:
        order, jid, attempt, phase, expected, pending, requeued = late
        if float(requeued["t"]) > promotable_at(float(pending["t"]) + expected, halts) + self.tol(expected):
            late_gap = float(requeued["t"]) - float(pending["t"])
            self.note(order, Anomaly("retry-too-late", {"job_id": jid, "attempt": attempt, "phase": phase,
                                                        "gap_s": late_gap, "expected_s": expected}, (pending, requeued)))

    def _add(self, j: _Job, phase: str, gap: float) -> None:
        self.gaps_checked[phase] += 1
        at = (j.seq, self.n)
        if phase not in self.first_gap or at < self.first_gap[phase]:
            self.first_gap[phase] = at
        if j.total is None:
            j.total = defaultdict(float)
        j.total[phase] += gap

    def verdict(self) -> Verdict:
        p = self.p
        halts = self.halts()
        for late in self.late:
            self._judge_late(late, halts)
        totals: list[float] = []
        full_schedule: dict[str, list[float]] = defaultdict(list)
        for j in self.jobs.values():
            if type(j) is int:
                continue
            total = j.total if j.total is not None else defaultdict(float)
            if total:
                totals.append(sum(total.values()))
            for phase, most in (j.most or {}).items():
                if most >= policy_mod.retry_budget(phase, p) > 0:
                    full_schedule[phase].append(total[phase])
        claim = policy_mod.describe(p)["claim_52_min"]
        calllog_full = full_schedule.get("calllog", [])
        figure = {
            "rel_tol": self.rel_tol,
            "abs_tol_s": self.abs_tol_s,
            "gaps_checked": sum(self.gaps_checked.values()),
            "gaps_checked_by_phase": {ph: self.gaps_checked[ph] for ph in sorted(self.first_gap, key=self.first_gap.get)},
            "configured_schedule_s": policy_mod.backoff_schedule(p),
            "configured_total_s": policy_mod.backoff_total(p),
            "configured_fetch_schedule_s": policy_mod.backoff_schedule(p, "fetch"),
            "jobs_with_full_schedule": len(calllog_full),
            "measured_full_schedule_total_s": (sum(calllog_full) / len(calllog_full)) if calllog_full else None,
            "jobs_with_full_schedule_by_phase": {ph: len(v) for ph, v in full_schedule.items()},
            "measured_full_schedule_total_s_by_phase": {ph: sum(v) / len(v) for ph, v in full_schedule.items()},
            "measured_max_total_s": max(totals, default=0.0),
            "claim_52_min": claim,
        }
        return verdict(self.name, self.noted(), figure)


class FailFast(Check):
    name = "fail-fast"
    SWEEP_MIN = 1024  # open windows before a sweep for past ones (ordered streams)

    def __init__(self, p: Policy):
        super().__init__()
        self.window, self.limit = p.fail_fast_window_s, p.fail_fast_max_attempts
        # recording -> [seq, enqueues in the sliding window as (t, kept)]; its seq alone once the
        # window is past (ordered histories); None once broken
        self.by_call: dict[Any, Any] = {}
        self.open: list[Any] = []
        self.sweep_at = self.SWEEP_MIN
        self.worst = 0
        self.trips = 0
        self.handlers = {"job.enqueue": self.on_enqueue, "fail_fast.trip": self.on_trip}
        self.filters = {"job.enqueue": ("via", ("playback",))}

    def on_trip(self, e: Event) -> None:
        self.trips += 1

    def on_enqueue(self, e: Event) -> None:
        call_sid = e.get("call_sid")
        if call_sid not in self.by_call:
            c = self.by_call[call_sid] = [len(self.by_call), []]
        else:
            c = self.by_call[call_sid]
            if c is None:
                return
            if type(c) is int:
                c = self.by_call[call_sid] = [c, []]
        enq = c[1]
        if self.ordered and not enq:
            self.open.append(call_sid)
        t = float(e["t"])
        enq.append((t, self.keep(e)))
        while t - enq[0][0] >= self.window:
            del enq[0]
        count = len(enq)
        self.worst = max(self.worst, count)
        if count > self.limit:
            self.note(c[0], Anomaly("too-many-jobs", {"call_sid": call_sid, "jobs": count, "limit": self.limit,
                                                      "window_s": self.window},
                                    tuple(restore(k) for _, k in enq[:6])))
            self.by_call[call_sid] = None
        elif self.ordered and len(self.open) >= self.sweep_at:
            self._sweep(t)

    def _sweep(self, now: float) -> None:
        """Forget the enqueues past the window of every recording (the history is in time order)."""
        still = []
        for call_sid in self.open:
            c = self.by_call[call_sid]
            if type(c) is list:
                if now - c[1][-1][0] >= self.window:
                    self.by_call[call_sid] = c[0]
                else:
                    still.append(call_sid)
        self.open = still
        self.sweep_at = max(self.SWEEP_MIN, 2 * len(still))

    def verdict(self) -> Verdict:
        figure = {"window_s": self.window, "limit": self.limit, "worst_count": self.worst, "trips": self.trips}
        return verdict(self.name, self.noted(), figure)
