"""The workers' sweep over recording runs (seed 002, liveness by heartbeat), once for the app's
jobs.cleanup_stuck_recording_jobs and the model's sweeper: what happens to a run the sweep
found stuck (policy.stuck_reason) or orphaned (policy.run_orphaned). Which runs to look at, and
when, is each driver's; the decisions are policy.py's.
"""
from __future__ import annotations

from loopfix.reference_app.flows.effects import ClaimRun, Coord, Emit, Flow, Park
from loopfix.reference_app.policy import Policy, stuck_run_over_budget


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
    yield Emit("job.stuck", {"job_id": job_id, "call_sid": call_sid, "reason": why})
    if owner and recording_sid:
        yield Coord("release_inflight", (recording_sid, owner))
        yield Coord("release_slot", (business_id, owner))
    if over:
        return False
    yield Park(0.0, "requeue")
    yield Emit("job.enqueue", {"job_id": job_id, "call_sid": call_sid, "job_type": job_type, "via": "requeue"})
    return True


def requeue_orphan(job_id: str, call_sid: str, job_type: str) -> Flow:
    """Enqueue a waiting run whose RQ job is gone (Redis restarted empty, or the enqueue never
    reached a paused Redis, or a worker died holding it). Once however many sweeps find it.
    True when this sweep re-enqueued it."""
    if not (yield ClaimRun({"status": "queued", "created_now": True, "next_attempt_at": None})):
        return False
    yield Park(0.0, "orphan")
    yield Emit("job.enqueue", {"job_id": job_id, "call_sid": call_sid, "job_type": job_type, "via": "orphan"})
    return True
