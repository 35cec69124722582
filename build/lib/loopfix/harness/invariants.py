"""The ten invariants of DESIGN.md as pure functions `history, policy -> Verdict`.

A checker never drives the system: it reads a list of event records (sim or live, the same
schema) and the `Policy` whose bounds it checks against (the caller passes it explicitly; the
CLI takes it from the run directory's `run.json`, see harness/history.py). Each verdict says
whether the invariant holds (`True`), is broken (`False`) or could not be decided
(`"unknown"`), lists the anomalies grouped by type with the witness events that prove each,
and a `figure` dict of measured numbers. An exception inside a checker yields `"unknown"`,
never a pass. Explanations are data (`Anomaly.facts`); `render_*` turns them into text
(harness/verdicts.py holds the verdict types and their rendering, harness/query.py the history
queries the checkers share; both re-exported here).

Conventions the live app must follow for these checks to mean what they say:
- a recording retry is `job.retry(attempt, delay, phase)` (with the delay actually applied;
  phase is the budget it spends, `calllog` or `fetch`, each numbered from 1; absent means
  `calllog`) and
  `job.end(outcome="retry")`, in either order, and, when the scheduler moves the delayed job
  back onto the queue, `job.enqueue(via="retry")`. The backoff check measures `job.retry` →
  the job's next `job.start` for "too soon", and `job.retry` → that re-enqueue for "too
  late" (queue wait is capacity, not policy; with no re-enqueue event "too late" is not
  judged);
- slot-contention deferrals end a run with outcome `deferred`; they are not retries;
- playback-path enqueues carry `via="playback"`, the enqueue API's `via="enqueue_api"`.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Iterable, Sequence

from loopfix.harness.bounds import expected_delay, player_time_bound, retry_after_granted_s, retry_phase_of  # noqa: F401
from loopfix.harness.query import of, outage_windows, promotable_at, promotion_halts
from loopfix.harness.verdicts import (MAX_EXAMPLES, NOT_OBSERVABLE, TEMPLATES, UNKNOWN, Anomaly, Event, Verdict,  # noqa: F401
                              guarded, overall, render_anomaly, render_event, render_verdict, valid_label,
                              verdict)
from loopfix.reference_app import policy as policy_mod
from loopfix.reference_app.policy import Policy

TERMINAL_OUTCOMES = ("played", "not_found", "worker_offline", "gave_up")


Checker = Callable[..., Verdict]
CHECKERS: dict[str, Checker] = {}


def _checker(name: str) -> Callable[[Checker], Checker]:
    """Register a checker; an exception inside it becomes an `unknown` verdict."""

    def wrap(fn: Checker) -> Checker:
        CHECKERS[name] = guarded(name, fn)
        return CHECKERS[name]

    return wrap


# --------------------------------------------------------------------------- loops-terminate


@_checker("loops-terminate")
def check_loops_terminate(history: Sequence[Event], p: Policy) -> Verdict:
    """Every client session ends in a terminal outcome within 1 + player_max_retries requests
    and the player's time bound; no recording job is run more than policy.max_recording_runs
    times (1 + both retry budgets; runs after a slot deferral do not count: they are not
    retries). A live session's
    bound grows by the response times its requests report (`latency_s`, policy seconds): the
    player's waits are policy, a loaded server's latency is not (the model has none)."""
    max_requests = 1 + p.player_max_retries
    time_bound = player_time_bound(p)
    end_t = max((float(e["t"]) for e in history), default=0.0)
    sessions: dict[tuple[Any, Any], dict[str, Any]] = {}
    for e in of(history, "client.start", "client.request", "client.end"):
        s = sessions.setdefault((e.get("client"), e.get("session")), {"start": None, "requests": [], "end": None})
        if e["kind"] == "client.start":
            s["start"] = e
        elif e["kind"] == "client.request":
            s["requests"].append(e)
        else:
            s["end"] = e
    found: list[Anomaly] = []
    for (client, session), s in sessions.items():
        reqs, end = s["requests"], s["end"]
        first = s["start"] or (reqs[0] if reqs else end)
        n = max(len(reqs), int((end or {}).get("requests") or 0))
        facts = {"client": client, "session": session, "call_sid": first.get("call_sid"), "requests": n}
        witnesses = tuple(w for w in (s["start"], reqs[0] if reqs else None, reqs[-1] if reqs else None, end) if w)
        bound_s = time_bound + sum(float(r.get("latency_s") or 0.0) for r in reqs)
        if n > max_requests:
            kind = "unbounded-session" if end else "looping-session"
            found.append(Anomaly(kind, {**facts, "bound": max_requests, "ended": end is not None}, witnesses))
        elif end is None:
            age = end_t - float(first["t"])
            if age > bound_s:
                found.append(Anomaly("unterminated-session", {**facts, "age_s": age, "bound_s": bound_s}, witnesses))
        elif end.get("outcome") not in TERMINAL_OUTCOMES:
            found.append(Anomaly("non-terminal-outcome", {**facts, "outcome": end.get("outcome")}, witnesses))
        elif float(end["t"]) - float(first["t"]) > bound_s:
            dur = float(end["t"]) - float(first["t"])
            found.append(Anomaly("session-too-long", {**facts, "duration_s": dur, "bound_s": bound_s}, witnesses))
    runs: dict[Any, list[Event]] = defaultdict(list)
    last_end: dict[Any, Event] = {}
    for e in of(history, "job.start", "job.end"):
        jid = e.get("job_id")
        if e["kind"] == "job.end":
            last_end[jid] = e
        elif last_end.get(jid, {}).get("outcome") != "deferred":
            runs[jid].append(e)
    max_runs = policy_mod.max_recording_runs(p)
    for jid, starts in runs.items():
        if len(starts) > max_runs:
            found.append(
                Anomaly(
                    "job-rerun-unbounded",
                    {"job_id": jid, "call_sid": starts[0].get("call_sid"), "runs": len(starts), "bound": max_runs},
                    (starts[0], starts[max_runs], starts[-1]),
                )
            )
    figure = {
        "sessions": len(sessions),
        "request_bound": max_requests,
        "time_bound_s": time_bound,
        "max_requests_in_a_session": max((len(s["requests"]) for s in sessions.values()), default=0),
        "max_runs_of_a_job": max((len(v) for v in runs.values()), default=0),
        "run_bound": max_runs,
    }
    return verdict("loops-terminate", found, figure)


# --------------------------------------------------------------------------- no-duplicate-download


@_checker("no-duplicate-download")
def check_no_duplicate_download(history: Sequence[Event], p: Policy) -> Verdict:
    """At most one completed (ok, not skipped) download per recording, crashes included."""
    done: dict[Any, list[Event]] = defaultdict(list)
    for e in of(history, "download.end"):
        if e.get("ok") and not e.get("skipped"):
            done[e.get("recording_sid") or e.get("call_sid")].append(e)
    found = [
        Anomaly(
            "duplicate-download",
            {"recording_sid": sid, "count": len(ends), "job_ids": sorted({str(x.get("job_id")) for x in ends})},
            tuple(ends[:5]),
        )
        for sid, ends in done.items()
        if len(ends) > 1
    ]
    figure = {"recordings_downloaded": len(done), "completed_downloads": sum(len(v) for v in done.values())}
    return verdict("no-duplicate-download", found, figure)


# --------------------------------------------------------------------------- one-job-per-storm


@_checker("one-job-per-storm")
def check_one_job_per_storm(history: Sequence[Event], p: Policy, window_s: float | None = None) -> Verdict:
    """Click-driven enqueues (via playback or enqueue_api) of one recording: no two distinct
    jobs within `window_s` (default: the playback in-progress mark, playback_mark_ttl_s)."""
    window = p.playback_mark_ttl_s if window_s is None else window_s
    by_call: dict[Any, list[Event]] = defaultdict(list)
    for e in of(history, "job.enqueue"):
        if e.get("via") in ("playback", "enqueue_api"):
            by_call[e.get("call_sid")].append(e)
    found: list[Anomaly] = []
    for call_sid, enq in by_call.items():
        burst: list[Event] = [enq[0]]
        for e in enq[1:] + [None]:  # type: ignore[list-item]
            if e is not None and float(e["t"]) - float(burst[0]["t"]) < window:
                burst.append(e)
                continue
            jobs = sorted({str(x.get("job_id")) for x in burst})
            if len(jobs) > 1:
                found.append(
                    Anomaly(
                        "storm-duplicate-enqueue",
                        {"call_sid": call_sid, "jobs": len(jobs), "job_ids": jobs[:10], "window_s": window,
                         "span_s": float(burst[-1]["t"]) - float(burst[0]["t"])},
                        tuple(burst[:5]),
                    )
                )
            if e is not None:
                burst = [e]
    figure = {"window_s": window, "recordings_clicked": len(by_call), "click_enqueues": sum(map(len, by_call.values()))}
    return verdict("one-job-per-storm", found, figure)


# --------------------------------------------------------------------------- backoff-schedule


@_checker("backoff-schedule")
def check_backoff_schedule(
    history: Sequence[Event], p: Policy, rel_tol: float = 0.02, abs_tol_s: float = 1.0
) -> Verdict:
    """Retry gaps follow backoff_delay within rel_tol * delay + abs_tol_s (abs_tol_s is one
    scheduler tick), per retry budget: a job.retry's `phase` (calllog | fetch) names the budget,
    its attempt is numbered within it and may not exceed policy.retry_budget(phase), and the
    measured total of a phase whose budget a job used up matches that phase's schedule sum.
    A re-run straight after a failed attempt with no (or a zero) delay counts as too soon. A
    retry that came due while nothing could promote it (every worker down, the scheduler
    stopped, Redis paused or gone) is late only if re-queued later than that window's end."""

    def tol(expected: float) -> float:
        return rel_tol * expected + abs_tol_s

    found: list[Anomaly] = []
    halts = promotion_halts(history)
    per_job: dict[Any, list[Event]] = defaultdict(list)
    for e in history:
        k = e.get("kind")
        if k in ("job.retry", "job.start", "job.end") or (k == "job.enqueue" and e.get("via") == "retry"):
            per_job[e.get("job_id")].append(e)
    totals: dict[Any, float] = {}
    full_schedule: dict[str, list[float]] = defaultdict(list)
    gaps_checked: dict[str, int] = defaultdict(int)
    for jid, evs in per_job.items():
        pending: Event | None = None
        requeued: Event | None = None
        last_fail: Event | None = None
        failed_attempts = 0
        total: dict[str, float] = defaultdict(float)
        max_attempt: dict[str, int] = defaultdict(int)
        for e in evs:
            k = e["kind"]
            if k == "job.end":
                if e.get("outcome") in ("retry", "failed"):
                    last_fail, failed_attempts = e, failed_attempts + 1
                continue
            if k == "job.enqueue":
                requeued = e
                continue
            if k == "job.retry":
                attempt, phase = int(e.get("attempt") or 0), retry_phase_of(e)
                max_attempt[phase] = max(max_attempt[phase], attempt)
                budget = policy_mod.retry_budget(phase, p)
                if attempt > budget:
                    found.append(Anomaly("too-many-attempts", {"job_id": jid, "attempt": attempt, "phase": phase,
                                                                "max": budget}, (e,)))
                expected = expected_delay(attempt, p)
                recorded = float(e.get("delay") or 0.0)
                if abs(recorded - expected) > tol(expected):
                    found.append(Anomaly("delay-not-policy", {"job_id": jid, "attempt": attempt, "phase": phase,
                                                               "delay_s": recorded, "expected_s": expected}, (e,)))
                pending, requeued, last_fail = e, None, None
                continue
            # job.start
            if pending is not None:
                attempt, phase = int(pending.get("attempt") or 0), retry_phase_of(pending)
                expected = expected_delay(attempt, p)
                gap = float(e["t"]) - float(pending["t"])
                gaps_checked[phase] += 1
                total[phase] += gap
                if gap < expected - tol(expected):
                    found.append(Anomaly("retry-too-soon", {"job_id": jid, "attempt": attempt, "phase": phase,
                                                             "gap_s": gap, "expected_s": expected}, (pending, e)))
                elif requeued is not None and float(requeued["t"]) > promotable_at(
                        float(pending["t"]) + expected, halts) + tol(expected):
                    late_gap = float(requeued["t"]) - float(pending["t"])
                    found.append(Anomaly("retry-too-late", {"job_id": jid, "attempt": attempt, "phase": phase,
                                                             "gap_s": late_gap, "expected_s": expected},
                                         (pending, requeued)))
            elif last_fail is not None:
                expected = expected_delay(failed_attempts, p)
                gap = float(e["t"]) - float(last_fail["t"])
                gaps_checked["calllog"] += 1
                total["calllog"] += gap
                if gap < expected - tol(expected):
                    found.append(Anomaly("rerun-without-backoff", {"job_id": jid, "attempt": failed_attempts,
                                                                    "gap_s": gap, "expected_s": expected},
                                         (last_fail, e)))
            pending, requeued, last_fail = None, None, None
        if total:
            totals[jid] = sum(total.values())
        for phase, most in max_attempt.items():
            if most >= policy_mod.retry_budget(phase, p) > 0:
                full_schedule[phase].append(total[phase])
    configured = policy_mod.backoff_total(p)
    claim = policy_mod.describe(p)["claim_52_min"]
    calllog_full = full_schedule.get("calllog", [])
    figure = {
        "rel_tol": rel_tol,
        "abs_tol_s": abs_tol_s,
        "gaps_checked": sum(gaps_checked.values()),
        "gaps_checked_by_phase": dict(gaps_checked),
        "configured_schedule_s": policy_mod.backoff_schedule(p),
        "configured_total_s": configured,
        "configured_fetch_schedule_s": policy_mod.backoff_schedule(p, "fetch"),
        "jobs_with_full_schedule": len(calllog_full),
        "measured_full_schedule_total_s": (sum(calllog_full) / len(calllog_full)) if calllog_full else None,
        "jobs_with_full_schedule_by_phase": {ph: len(v) for ph, v in full_schedule.items()},
        "measured_full_schedule_total_s_by_phase": {ph: sum(v) / len(v) for ph, v in full_schedule.items()},
        "measured_max_total_s": max(totals.values(), default=0.0),
        "claim_52_min": claim,
    }
    return verdict("backoff-schedule", found, figure)


# --------------------------------------------------------------------------- fail-fast


@_checker("fail-fast")
def check_fail_fast(history: Sequence[Event], p: Policy) -> Verdict:
    """Per call_sid, playback-path enqueues in any fail_fast_window_s (sliding) are at most
    fail_fast_max_attempts — the same sliding window the app's and the model's counters keep
    (the Coordination contract; the seed's fixed INCR-then-EXPIRE window is the fault
    fail_fast_incr_then_expire)."""
    window, limit = p.fail_fast_window_s, p.fail_fast_max_attempts
    by_call: dict[Any, list[Event]] = defaultdict(list)
    for e in of(history, "job.enqueue"):
        if e.get("via") == "playback":
            by_call[e.get("call_sid")].append(e)
    found: list[Anomaly] = []
    worst = 0
    for call_sid, enq in by_call.items():
        lo = 0
        for hi in range(len(enq)):
            while float(enq[hi]["t"]) - float(enq[lo]["t"]) >= window:
                lo += 1
            count = hi - lo + 1
            worst = max(worst, count)
            if count > limit:
                found.append(Anomaly("too-many-jobs", {"call_sid": call_sid, "jobs": count, "limit": limit,
                                                        "window_s": window}, tuple(enq[lo:hi + 1][:6])))
                break
    trips = len(of(history, "fail_fast.trip"))
    figure = {"window_s": window, "limit": limit, "worst_count": worst, "trips": trips}
    return verdict("fail-fast", found, figure)


# --------------------------------------------------------------------------- status-semantics


@_checker("status-semantics")
def check_status_semantics(history: Sequence[Event], p: Policy) -> Verdict:
    """202 has a Retry-After; 404 only for calls with no recording URL (or unknown calls);
    200 carries audio; an enqueue error is a 500."""
    has_url: dict[Any, bool] = {}
    created: dict[Any, Event] = {}
    for e in of(history, "recording.created"):
        has_url[e.get("call_sid")] = bool(e.get("has_url"))
        created[e.get("call_sid")] = e
    found: list[Anomaly] = []
    counts: dict[int, int] = defaultdict(int)
    for e in of(history, "client.request", "enqueue.result"):
        status = e.get("status")
        if e["kind"] == "enqueue.result":
            if e.get("reason") == "error" and status != 500:
                found.append(Anomaly("error-not-500", {"call_sid": e.get("call_sid"), "status": status}, (e,)))
            continue
        counts[status] += 1
        if status == 202 and e.get("retry_after") is None:
            found.append(Anomaly("202-without-retry-after", {"call_sid": e.get("call_sid")}, (e,)))
        elif status == 404 and has_url.get(e.get("call_sid")) is True:
            found.append(Anomaly("404-with-recording-url", {"call_sid": e.get("call_sid")},
                                 (created[e.get("call_sid")], e)))
        elif status in (200, 206) and e.get("audio_ok") is not True:
            found.append(Anomaly("200-without-audio", {"call_sid": e.get("call_sid"), "status": status}, (e,)))
    figure = {"responses": {str(k): v for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))}}
    return verdict("status-semantics", found, figure)


# --------------------------------------------------------------------------- idempotent-delete


@_checker("idempotent-delete")
def check_idempotent_delete(history: Sequence[Event], p: Policy) -> Verdict:
    """While a business has an active delete job (requested, not yet ended; paused counts as
    active), every bulk-delete request of that business names that job."""
    active: dict[Any, dict[Any, Event]] = defaultdict(dict)
    found: list[Anomaly] = []
    requests = 0
    for e in of(history, "lead_job.request", "lead_job.end"):
        b, jid = e.get("business_id"), e.get("job_id")
        if e["kind"] == "lead_job.end":
            if e.get("status") != "paused":
                active[b].pop(jid, None)
            continue
        requests += 1
        others = {k: v for k, v in active[b].items() if k != jid}
        if others:
            first_jid, first = next(iter(others.items()))
            found.append(Anomaly("second-job-while-active", {"business_id": b, "active_job": first_jid,
                                                               "new_job": jid}, (first, e)))
        active[b].setdefault(jid, e)
    jobs = {e.get("job_id") for e in of(history, "lead_job.request")}
    return verdict("idempotent-delete", found, {"requests": requests, "jobs": len(jobs)})


# --------------------------------------------------------------------------- lock-exclusive


@_checker("lock-exclusive")
def check_lock_exclusive(history: Sequence[Event], p: Policy) -> Verdict:
    """Never two delete jobs of one business running at once (running: lead_job.start until
    its pause or end); a paused job keeps its lock; a release frees only its owner's lock."""
    running: dict[Any, dict[Any, Event]] = defaultdict(dict)
    paused: dict[Any, set[Any]] = defaultdict(set)
    found: list[Anomaly] = []
    starts = 0
    for e in of(history, "lead_job.start", "lead_job.pause", "lead_job.end", "lock.release"):
        k, b = e["kind"], e.get("business_id")
        if k == "lead_job.start":
            starts += 1
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
    return verdict("lock-exclusive", found, {"job_runs": starts})


# --------------------------------------------------------------------------- nothing-lost


@_checker("nothing-lost")
def check_nothing_lost(history: Sequence[Event], p: Policy) -> Verdict:
    """Once outages are over, every recording with a URL has a completed download; every
    requested lead is deleted exactly once; no lead is deleted outside its business's request."""
    open_outages = [start for start, end in outage_windows(history) if end == math.inf]
    completed = {e.get("recording_sid") for e in of(history, "download.end") if e.get("ok") and not e.get("skipped")}
    found: list[Anomaly] = []
    recordings = [e for e in of(history, "recording.created") if e.get("has_url")]
    for e in recordings:
        if e.get("recording_sid") not in completed:
            found.append(Anomaly("recording-not-downloaded", {"call_sid": e.get("call_sid"),
                                                                "recording_sid": e.get("recording_sid")}, (e,)))
    requested: dict[tuple[Any, Any], Event] = {}
    owner: dict[Any, Any] = {}
    for e in of(history, "lead.requested"):
        requested.setdefault((e.get("business_id"), e.get("lead_id")), e)
        owner.setdefault(e.get("lead_id"), e.get("business_id"))
    deletes: dict[tuple[Any, Any], list[Event]] = defaultdict(list)
    for e in of(history, "lead.delete"):
        deletes[(e.get("business_id"), e.get("lead_id"))].append(e)
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
    figure = {"recordings_with_url": len(recordings), "downloaded": len(completed),
              "leads_requested": len(requested), "lead_deletes": sum(map(len, deletes.values()))}
    undecided = None
    if open_outages:
        names = ", ".join(f"{e.get('target')}/{e.get('how')}" for e in open_outages)
        undecided = f"the history ends during an outage ({names}): nothing-lost is judged only once outages are over"
        if found:  # lead deletion faults (twice, other tenant) are violations even mid-outage
            found = [a for a in found if a.type not in ("recording-not-downloaded", "lead-not-deleted")]
    return verdict("nothing-lost", found, figure, undecided)


# --------------------------------------------------------------------------- worker-never-blocks


@_checker("worker-never-blocks")
def check_worker_never_blocks(history: Sequence[Event], p: Policy) -> Verdict:
    """No worker sleeps (on slot contention or anything else): any worker.sleep breaks it."""
    sleeps = of(history, "worker.sleep")
    found = [Anomaly("worker-slept", {"job_id": e.get("job_id"), "seconds": e.get("seconds"),
                                      "reason": e.get("reason")}, (e,)) for e in sleeps]
    figure = {"sleeps": len(sleeps), "slept_s": sum(float(e.get("seconds") or 0) for e in sleeps)}
    return verdict("worker-never-blocks", found, figure)


# --------------------------------------------------------------------------- composition

INVARIANTS: tuple[str, ...] = tuple(CHECKERS)


def check_all(history: Sequence[Event], p: Policy, only: Iterable[str] | None = None) -> list[Verdict]:
    """Every invariant (or those in `only`), in DESIGN.md's order."""
    names = list(only) if only is not None else list(INVARIANTS)
    unknown = [n for n in names if n not in CHECKERS]
    if unknown:
        raise ValueError(f"unknown invariant(s) {', '.join(unknown)}; known: {', '.join(INVARIANTS)}")
    return [CHECKERS[n](history, p) for n in names]


