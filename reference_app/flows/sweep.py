"""The workers' sweep over recording runs (seed 002, liveness by heartbeat), once for the app's
jobs.cleanup_stuck_recording_jobs and the model's sweeper: `sweep` reads worker liveness once,
then takes the active runs in the driver's order — a run policy.stuck_reason calls stuck is
re-queued (or failed past its budget), a waiting one that is not is asked about its RQ job
and re-enqueued when policy.run_orphaned says nothing will run it. When to sweep is each
driver's (the workers' ticker: every heartbeat interval).
"""
from __future__ import annotations

from typing import Any, Iterable, NamedTuple

from loopfix.reference_app.flows.effects import ClaimRun, Coord, Emit, Flow, Park
from loopfix.reference_app.policy import (WAITING_RUN_STATUSES, Policy, RunState, run_orphaned, stuck_reason,
    stuck_run_over_budget)


class SweptRun(NamedTuple):
    """An active run as the sweep reads it. `ref`: the driver's run (a RecordingRun row, the
    model's Run), which the flow never reads; `owner`: the job id holding its claims, if any."""

    ref: Any
    job_id: str
    call_sid: str
    job_type: str
    retry_count: int
    business_id: int
    recording_sid: str | None
    owner: str | None
    state: RunState


class Focus(NamedTuple):
    """The next effects are about this run (`ref`: SweptRun.ref) until the next Focus."""

    ref: Any


class JobStatus(NamedTuple):
    """RQ's status of the focused run's job and since when (policy seconds): ('started', t),
    ('dequeued', t) — popped, not started — , a live status, or (None, None) when Redis has no
    such job."""


JOB_STATUS = JobStatus()


def sweep(runs: Iterable[SweptRun], now: float, p: Policy) -> Flow:
    """One sweep at `now` over `runs` (the active ones; the driver may leave out a run that can
    be neither stuck nor orphaned now). Returns how many runs it re-queued."""
    alive = yield (Coord, "worker_alive", ())
    moved = 0
    for run in runs:
        state = run.state
        waiting = state.status in WAITING_RUN_STATUSES
        why = stuck_reason(state, now, p, alive if waiting else None)
        if why is None and not waiting:
            continue
        yield Focus(run.ref)
        if why is not None:
            moved += (yield from requeue_stuck(run.job_id, run.call_sid, run.job_type, run.retry_count, why,
                                               run.business_id, run.recording_sid, run.owner, p))
            continue
        job_status, since = yield JOB_STATUS
        if run_orphaned(state, job_status, now, p, since):
            moved += (yield from requeue_orphan(run.job_id, run.call_sid, run.job_type))
    return moved


def requeue_stuck(job_id: str, call_sid: str, job_type: str, retry_count: int, why: str, business_id: int,
                  recording_sid: str | None, owner: str | None, p: Policy) -> Flow:
    """Fail the stuck run for good once its retries are spent, else re-queue it spending one;
    either way free the dead owner's in-flight claim and slot (`owner`: its job id, None when it
    never had one). Once however many sweeps find it (ClaimRun). True when re-queued."""
    over = stuck_run_over_budget(retry_count, p)
    won = yield ClaimRun({"status": "failed" if over else "queued", "retry_count": retry_count + (0 if over else 1),
                          "created_now": True, "next_attempt_at": None, "error": f"stuck: {why}"})
    if not won:
        return False
    yield (Emit, "job.stuck", {"job_id": job_id, "call_sid": call_sid, "reason": why})
    if owner and recording_sid:
        yield (Coord, "release_inflight", (recording_sid, owner))
        yield (Coord, "release_slot", (business_id, owner))
    if over:
        return False
    yield Park(0.0, "requeue")
    yield (Emit, "job.enqueue", {"job_id": job_id, "call_sid": call_sid, "job_type": job_type, "via": "requeue"})
    return True


def requeue_orphan(job_id: str, call_sid: str, job_type: str) -> Flow:
    """Enqueue a waiting run whose RQ job is gone (Redis restarted empty, or the enqueue never
    reached a paused Redis, or a worker died holding it). Once however many sweeps find it.
    True when this sweep re-enqueued it."""
    if not (yield ClaimRun({"status": "queued", "created_now": True, "next_attempt_at": None}, True)):
        return False
    yield Park(0.0, "orphan")
    yield (Emit, "job.enqueue", {"job_id": job_id, "call_sid": call_sid, "job_type": job_type, "via": "orphan"})
    return True
