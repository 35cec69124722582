"""The recording job, written once for the app's RQ job (jobs.RecordingJob) and the model's
workers (sim/actors/workers.py): `recording_job` is its whole order — start the run, wait
(with backoff) for the CallLog, take a download slot (seed 004; `before`'s 60 x 1 s wait in
the worker) or defer, claim the recording, fetch it, retry a failed fetch on its own budget
(seed 000's backoff, per phase), finish, and release the claim and the slot in `finally`.
The run these act on is the driver's (a RecordingRun row, or the model's Run): the flows name
what changes (`Save`, `StartRun`, `Finish`), and the driver writes it.
"""
from __future__ import annotations

from typing import NamedTuple

from loopfix.reference_app.flows.effects import (Coord, Emit, FetchAudio, Finish, Flow, Park, Release, RetryByRQ, Save,
    Sleep, StartRun, Transcribe)
from loopfix.reference_app.policy import Policy, recording_retry_decision, retry_budget, slot_defer_delay


class Job(NamedTuple):
    """The run one job acts on, as it was when the job started. `owner`: the job's token on its
    slot and in-flight claim; `slot_owner`: whose slot it releases (the API's under
    `semaphore_in_api`); `transcribe`: a full job's transcription follows the download (the
    model's scenarios only). (job.start, with the process that runs the job, is the driver's
    record of StartRun.)"""

    job_id: str
    call_sid: str
    business_id: int
    retry_count: int
    fetch_retry_count: int
    defer_count: int
    owner: str
    slot_owner: str
    transcribe: bool = False


START_RUN, FETCH_AUDIO, TRANSCRIBE, FINISH_DONE = StartRun(), FetchAudio(), Transcribe(), Finish("done", None)


def ended(status: str, error: str | None) -> dict:
    """What a job that finished its run returns (RQ keeps it as the job's result)."""
    return {"status": status, "error": error, "permanent": status == "failed"}


# A done job's result, made once (read, never changed: RQ keeps a copy): nearly every job the
# model runs ends done, and building it cost about a tenth of the job's flow (measured).
DONE = ended("done", None)


def recording_job(job: Job, p: Policy) -> Flow:
    """The recording job's whole order; returns what the app's job returns ({'status': ...},
    {'retry': attempt, 'delay': s}, {'deferred': s}). (Flat on the common path: the model runs
    it for every job.)"""
    # unpacked, not read by name: the model passes a plain tuple in Job's order (cheaper to build)
    (job_id, call_sid, business_id, retry_count, fetch_retry_count, defer_count, owner, slot_owner, transcribe) = job
    faults = p.faults
    sid = yield START_RUN  # the driver records job.start
    if sid is None:
        return (yield from _retry(job_id, call_sid, retry_count, fetch_retry_count, "calllog", "CallLog not found",
                                  p))
    if not sid:
        yield Finish("failed", "no recording URL for this call")
        return ended("failed", "no recording URL for this call")
    ids = (job_id, business_id)  # slot.acquire's and slot.release's values (one tuple for both)
    if "semaphore_in_api" not in faults:  # before: the API took the slot
        if "blocking_slot_loop" not in faults:  # take one or defer: slot.acquire records the answer
            ok = yield (Coord, "acquire_slot", (business_id, owner, call_sid), "slot.acquire", ids)
        else:  # before: no free slot, wait for one in the worker, then record
            ok = yield (Coord, "acquire_slot", (business_id, owner, call_sid))
            if not ok:
                ok = yield from wait_for_slot(job_id, business_id, owner, call_sid, p)
            yield (Emit, "slot.acquire", {"job_id": job_id, "business_id": business_id, "ok": ok})
        if not ok:
            return {"deferred": (yield from defer(job_id, call_sid, defer_count, p))}
    # The claim and the slot are released last, after the job's own end (a deferral included),
    # and when a step raises; not when the worker dies mid-job (the generator is closed): its
    # claims lapse with their TTLs.
    claimed = died = False
    claim = (sid, owner)  # taken, then released, with the same arguments
    try:
        claimed = yield (Coord, "claim_inflight", claim)
        if not claimed:  # another job is downloading this recording right now
            result = {"deferred": (yield from defer(job_id, call_sid, defer_count, p))}
        else:
            fetched, detail = yield FETCH_AUDIO
            if fetched == "ok" or fetched == "skipped":
                result = None  # done, after the model's transcription if any
                if not transcribe:
                    yield FINISH_DONE
                    result = DONE
            elif fetched == "refused":
                yield Finish("failed", detail)
                result = ended("failed", detail)
            else:
                why = f"audio not available ({detail})" if detail else "audio not available"
                result = yield from _retry(job_id, call_sid, retry_count, fetch_retry_count, "fetch", why, p)
    except GeneratorExit:
        died = True
        raise
    finally:
        if not died:  # the claim (if taken), then the slot: one effect
            yield (Release, claim if claimed else None, (business_id, slot_owner), ids)
    if result is not None:
        return result
    yield TRANSCRIBE  # the model's transcription holds no claim or slot
    yield FINISH_DONE
    return DONE


def _retry(job_id: str, call_sid: str, retry_count: int, fetch_retry_count: int, phase: str, why: str,
           p: Policy) -> Flow:
    """retry_later on the job's counts; the job's result."""
    d = yield from retry_later(job_id, call_sid, retry_count, fetch_retry_count, phase, why, p)
    if d.action == "fail":
        return ended("failed", f"{why} after {d.attempt} {d.phase} retries")
    return {"retry": d.attempt, "delay": d.delay_s}


def wait_for_slot(job_id: str, business_id: int, owner: str, call_sid: str, p: Policy) -> Flow:
    """`blocking_slot_loop` (seed 004's first fix): no slot was free, so the worker waits for
    one, 1 s at a time, up to before_slot_wait_s. True when it took one."""
    for _ in range(int(p.before_slot_wait_s)):
        yield (Emit, "worker.sleep", {"job_id": job_id, "seconds": 1.0, "reason": "slot"})
        yield Sleep(1.0)
        if (yield (Coord, "acquire_slot", (business_id, owner, call_sid))):
            return True
    return False


def defer(job_id: str, call_sid: str, defer_count: int, p: Policy) -> Flow:
    """No free slot, or the recording in flight elsewhere (004): re-park the job after
    policy.slot_defer_delay — never sleeping in the worker, except under `slot_defer_sleeps`
    (the seed's 'non-blocking' code that still sleeps before re-queuing). Returns the delay."""
    delay = slot_defer_delay(defer_count, p)
    yield Save({"defer_count": defer_count + 1, "status": "queued", "next_attempt_in_s": delay})
    if "slot_defer_sleeps" in p.faults:
        yield (Emit, "worker.sleep", {"job_id": job_id, "seconds": delay, "reason": "slot"})
        yield Sleep(delay)
        yield Park(0.0, "defer")
    else:
        yield Park(delay, "defer")
    yield (Emit, "job.end", {"job_id": job_id, "call_sid": call_sid, "outcome": "deferred"})
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
    yield (Emit, "job.retry", {"job_id": job_id, "call_sid": call_sid, "attempt": d.attempt, "delay": d.delay_s,
                             "phase": d.phase})
    if d.action == "raise":
        yield Save({"status": "queued"})
        yield (Emit, "job.end", {"job_id": job_id, "call_sid": call_sid, "outcome": "retry"})
        yield RetryByRQ(error)
        return d
    yield Save({"status": "retry_wait", "next_attempt_in_s": d.delay_s})
    yield Park(d.delay_s, "retry")
    yield (Emit, "job.end", {"job_id": job_id, "call_sid": call_sid, "outcome": "retry"})
    return d
