"""The recording job's steps that the app's RQ job (jobs.RecordingJob) and the model's workers
(sim/actors/workers.py) both take, written once: take a download slot (seed 004; `before`'s
60 x 1 s wait in the worker), defer when none is free, and retry when the CallLog or the audio
is not there yet (seed 000's backoff, per phase budget). The run these act on is the driver's
(a RecordingRun row, or the model's Run): the flows name what changes (`Save`), and the driver
writes it.
"""
from __future__ import annotations

from loopfix.reference_app.flows.effects import Coord, Emit, Finish, Flow, Park, RetryByRQ, Save, Sleep
from loopfix.reference_app.policy import Policy, recording_retry_decision, retry_budget, slot_defer_delay


def take_slot(job_id: str, business_id: int, owner: str, call_sid: str, p: Policy) -> Flow:
    """Take one of the business's download slots; with `blocking_slot_loop` (seed 004's first
    fix) wait for one in the worker, 1 s at a time. True when taken (slot.acquire records it)."""
    ok = yield Coord("acquire_slot", (business_id, owner, call_sid))
    if not ok and "blocking_slot_loop" in p.faults:
        for _ in range(int(p.before_slot_wait_s)):
            yield Emit("worker.sleep", {"job_id": job_id, "seconds": 1.0, "reason": "slot"})
            yield Sleep(1.0)
            ok = yield Coord("acquire_slot", (business_id, owner, call_sid))
            if ok:
                break
    yield Emit("slot.acquire", {"job_id": job_id, "business_id": business_id, "ok": ok})
    return ok


def defer(job_id: str, call_sid: str, defer_count: int, p: Policy) -> Flow:
    """No free slot, or the recording in flight elsewhere (004): re-park the job after
    policy.slot_defer_delay — never sleeping in the worker, except under `slot_defer_sleeps`
    (the seed's 'non-blocking' code that still sleeps before re-queuing). Returns the delay."""
    delay = slot_defer_delay(defer_count, p)
    yield Save({"defer_count": defer_count + 1, "status": "queued", "next_attempt_in_s": delay})
    if "slot_defer_sleeps" in p.faults:
        yield Emit("worker.sleep", {"job_id": job_id, "seconds": delay, "reason": "slot"})
        yield Sleep(delay)
        yield Park(0.0, "defer")
    else:
        yield Park(delay, "defer")
    yield Emit("job.end", {"job_id": job_id, "call_sid": call_sid, "outcome": "deferred"})
    return delay


def retry_later(job_id: str, call_sid: str, retry_count: int, fetch_retry_count: int, phase: str, why: str,
                p: Policy) -> Flow:
    """No CallLog yet (`phase` 'calllog') or the audio fetch failed ('fetch'): retry after the
    backoff against that phase's budget (policy.recording_retry_decision), or fail for good once
    it is spent. seed (`raise`): the job raises and RQ's Retry re-runs it at once."""
    d = recording_retry_decision(retry_count, p, phase, fetch_retry_count)
    if d.action == "fail":
        yield Finish("failed", f"{why} after {d.attempt} {d.phase} retries")
        return d
    error = f"{why} ({d.phase} attempt {d.attempt}/{retry_budget(phase, p)})"
    yield Save({"fetch_retry_count" if d.phase == "fetch" else "retry_count": d.attempt, "error": error})
    yield Emit("job.retry", {"job_id": job_id, "call_sid": call_sid, "attempt": d.attempt, "delay": d.delay_s,
                             "phase": d.phase})
    if d.action == "raise":
        yield Save({"status": "queued"})
        yield Emit("job.end", {"job_id": job_id, "call_sid": call_sid, "outcome": "retry"})
        yield RetryByRQ(error)
        return d
    yield Save({"status": "retry_wait", "next_attempt_in_s": d.delay_s})
    yield Park(d.delay_s, "retry")
    yield Emit("job.end", {"job_id": job_id, "call_sid": call_sid, "outcome": "retry"})
    return d
