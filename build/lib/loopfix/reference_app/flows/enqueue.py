"""Enqueue with dedup (seeds 001, 004), once for the app's enqueue_recording and the model's:
claim the dedup key first, create the run and its job, release the claim if that failed — so a
failure never leaves a key that answers 'duplicate'.

The seeds' shapes stay reachable: `dedup_set_before_enqueue` (before) claims first and keeps
the claim after a failure; `dedup_check_then_set` (seed) checks, enqueues, then sets, so
concurrent requests all pass the check. Redis being unreachable is the drivers' (the app falls
back on the database, `pending_run` below, in both).
"""
from __future__ import annotations

from loopfix.reference_app.flows.effects import ActiveRun, Coord, CreateRun, Flow
from loopfix.reference_app.policy import Policy


def dedup_enqueue(call_sid: str, job_type: str, via: str, dedup: bool, p: Policy) -> Flow:
    """Returns 'enqueued' | 'duplicate' | 'error' (before policy.reported_enqueue_reason).
    `dedup=False`: no dedup key at all (policy.playback_dedups: the `before` play route)."""
    if not dedup:
        return "enqueued" if (yield CreateRun(job_type, via)) else "error"
    faults = p.faults  # read on every enqueue: membership, without has()'s check of the name
    keep_failed_claim = "dedup_set_before_enqueue" in faults
    if "dedup_check_then_set" in faults and not keep_failed_claim:
        if (yield Coord("dedup_held", (call_sid, job_type))):
            return "duplicate"
        if not (yield CreateRun(job_type, via)):
            return "error"
        yield Coord("set_dedup", (call_sid, job_type))
        return "enqueued"
    token = yield Coord("claim_dedup", (call_sid, job_type))
    if token is None:
        return "duplicate"
    if (yield CreateRun(job_type, via)):
        return "enqueued"
    if not keep_failed_claim:
        yield Coord("release_dedup", (call_sid, job_type, token))
    return "error"


def pending_run(committed: bool, job_type: str, via: str) -> Flow:
    """Redis unreachable, so no dedup answer from it: the database decides. A run committed
    before Redis failed (`committed`) is the enqueued one; else the call's active run is the
    duplicate; else a new queued run, which the workers' sweep enqueues once Redis answers
    (policy.run_orphaned). Returns 'enqueued' | 'duplicate'."""
    if committed:
        return "enqueued"
    if (yield ActiveRun()):
        return "duplicate"
    yield CreateRun(job_type, via)
    return "enqueued"
