"""Enqueue with dedup (seeds 001, 004), once for the app's enqueue_recording and the model's,
and the two requests that enqueue besides a playback poll: the recording callback (the
webhook's full job) and the enqueue API. Enqueue with dedup:
claim the dedup key first, create the run and its job, release the claim if that failed — so a
failure never leaves a key that answers 'duplicate'.

The seeds' shapes stay reachable: `dedup_set_before_enqueue` (before) claims first and keeps
the claim after a failure; `dedup_check_then_set` (seed) checks, enqueues, then sets, so
concurrent requests all pass the check. Redis being unreachable is the drivers' (the app falls
back on the database, `pending_run` below, in both).
"""
from __future__ import annotations

from functools import cache

from loopfix.reference_app.flows.effects import ActiveRun, Coord, CreateRun, EmitValues, Enqueue, Flow, in_schema_order
from loopfix.reference_app.policy import Policy, enqueue_status, recording_callback_enqueues, reported_enqueue_reason


WEBHOOK_JOB_TYPE, WEBHOOK_VIA = "full", "webhook"  # the webhook's enqueue, with dedup
WEBHOOK_ENQUEUE = Enqueue(WEBHOOK_JOB_TYPE, WEBHOOK_VIA, True)
# create_run(job_type, via): the CreateRun effect for (job type, path), built once (the model
# enqueues on every call), and looked up without a Python call
create_run = cache(CreateRun)
# The records these flows make (EmitValues: the model records a webhook's two on every call)
in_schema_order("flows.enqueue", {"enqueue.result": ("call_sid", "reason", "status"),
                                  "recording.created": ("call_sid", "recording_sid", "business_id", "has_url")})


def dedup_enqueue(call_sid: str, job_type: str, via: str, dedup: bool, p: Policy) -> Flow:
    """Returns 'enqueued' | 'duplicate' | 'error' (before policy.reported_enqueue_reason).
    `dedup=False`: no dedup key at all (policy.playback_dedups: the `before` play route)."""
    if not dedup:
        return "enqueued" if (yield create_run(job_type, via)) else "error"
    faults = p.faults  # read on every enqueue: membership, without has()'s check of the name
    keep_failed_claim = "dedup_set_before_enqueue" in faults
    if "dedup_check_then_set" in faults and not keep_failed_claim:
        if (yield (Coord, "dedup_held", (call_sid, job_type))):
            return "duplicate"
        if not (yield create_run(job_type, via)):
            return "error"
        yield (Coord, "set_dedup", (call_sid, job_type))
        return "enqueued"
    token = yield (Coord, "claim_dedup", (call_sid, job_type))
    if token is None:
        return "duplicate"
    if (yield create_run(job_type, via)):
        return "enqueued"
    if not keep_failed_claim:
        yield (Coord, "release_dedup", (call_sid, job_type, token))
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
    yield create_run(job_type, via)
    return "enqueued"


def recording_callback(business_id: int, call_sid: str, recording_sid: str, has_url: bool, known: bool,
                       p: Policy, inline: bool = False) -> Flow:
    """A completed-recording callback, once validated (000/001): a replay of a `known` recording
    (it has a run or a file already) answers 'duplicate' without a second run
    (policy.recording_callback_enqueues); else the recording is recorded and its full job
    enqueued (with dedup). Returns the reported reason, None when there is nothing to enqueue
    (no URL); the caller answers 204, or 500 on 'error'.

    `inline`: the enqueue's own steps (dedup_enqueue's Coord and CreateRun, then
    policy.reported_enqueue_reason) are yielded by this flow in place of the Enqueue effect — for
    a driver with Redis reachable and no fallback to choose (the model's webhook, one flow to drive
    instead of two, and dedup_enqueue's end costs no StopIteration inside a `yield from`:
    measured, `full 1`'s instructions -0.75 %)."""
    if has_url and not recording_callback_enqueues(known, p):
        yield (EmitValues, "enqueue.result", (call_sid, "duplicate", 204))
        return "duplicate"
    yield (EmitValues, "recording.created", (call_sid, recording_sid, business_id, has_url))
    if not has_url:
        return None
    if inline:
        reason = reported_enqueue_reason((yield from dedup_enqueue(call_sid, WEBHOOK_JOB_TYPE, WEBHOOK_VIA, True, p)), p)
    else:
        reason = yield WEBHOOK_ENQUEUE
    yield (EmitValues, "enqueue.result", (call_sid, reason, 204 if reason != "error" else 500))
    return reason


def enqueue_request(call_sid: str, has_url: bool, file_ready: bool) -> Flow:
    """POST /api/calls/<sid>/recording/enqueue for a call that exists (001): 404 without a
    recording URL; 'cached' when the file is ready; else the download-only enqueue. Returns
    (reason, status) by policy.enqueue_status, or None for the 404."""
    if not has_url:
        return None
    reason = "cached" if file_ready else (yield Enqueue("download_only", "enqueue_api", True))
    status = enqueue_status(reason)
    yield (EmitValues, "enqueue.result", (call_sid, reason, status))
    return reason, status
