"""The bulk delete (seeds 000, 003), written once for the app (leads.request_bulk_delete and
delete_job.DeleteRun) and the model's deleters (sim/actors/deleters.py): the request's dedup
(policy.bulk_dedup_mode) and one run of the delete job — its BulkGate lock (flows.locks),
batches with throttle, a failed batch retried until bulk_should_stop, the `before` failure on
leads already gone, the pause after the runtime budget (lock kept), and the end recorded once
(lock released before the row stops counting as active). Which leads a batch holds, and the
transactions, are the drivers'.
"""
from __future__ import annotations


from loopfix.reference_app.flows.effects import (ActiveLeadJob, ClaimJob, Clock, Commit, Coord, DeleteBatch, Emit,
    EndJob, EnqueueLeadJob, Flow, Gap, NewLeadJob, OwnedLeads, Sleep)
from loopfix.reference_app.flows.locks import keep_lock, release_lock, take_lock
from loopfix.reference_app.policy import (BULK_DELETE_OP, BulkDedupMode, Policy, bulk_batch_fails, bulk_dedup_mode,
    bulk_should_pause, bulk_should_stop)

CLAIM_JOB, DELETE_BATCH, CLOCK, COMMIT, ROLLBACK = ClaimJob(), DeleteBatch(), Clock(), Commit(True), Commit(False)


def request_bulk_delete(business_id: int, client: str | None, p: Policy) -> Flow:
    """POST /api/leads/bulk-delete once its lead ids are parsed: the active job, or a new one
    (fixed: insert, and the one-active-job constraint turns a loser into a read of the winner;
    seed: check, the real work, then insert — concurrent requests all miss; before: a new job
    on every click). A new job's leads are recorded and its first run enqueued. Returns
    (job id, existing), or None when the business's jobs changed too fast (503)."""
    mode = bulk_dedup_mode(p)
    if mode == BulkDedupMode.CONSTRAINT:
        found = yield NewLeadJob(True)
    elif mode == BulkDedupMode.CHECK_THEN_INSERT:
        active = yield ActiveLeadJob()
        if active is not None:
            found = (active, True)
        else:
            yield Gap()  # the seed's work between its check and its insert: concurrent requests all miss
            found = yield NewLeadJob(False)
    else:
        found = yield NewLeadJob(False)
    if found is None:
        return None
    job_id, existing = found
    yield (Emit, "lead_job.request", {"business_id": business_id, "job_id": job_id, "existing": existing,
                                    "client": client})
    if not existing:
        for lead_id in (yield OwnedLeads()):
            yield (Emit, "lead.requested", {"business_id": business_id, "lead_id": lead_id, "job_id": job_id})
        yield EnqueueLeadJob(job_id)
    return found


def delete_run(business_id: int, owner: str, resumed: bool, p: Policy) -> Flow:
    """One run of a delete job whose lock owner (and job id in events) is `owner`; `resumed`: an
    earlier run started it (its lock was kept). Returns (outcome, reason): completed | failed |
    paused | superseded (another run owns the job now: nothing recorded). The end is recorded
    once, an unexpected error's too (then the error goes on)."""
    try:
        outcome, reason = yield from _batches(business_id, owner, resumed, p)
    except GeneratorExit:
        raise  # the process died mid-run: its batch rolls back, the lock stays until its TTL
    except BaseException as exc:
        yield from end_job(business_id, owner, "failed", f"{type(exc).__name__}: {exc}"[:500])
        raise
    if outcome != "superseded":
        yield from end_job(business_id, owner, outcome, reason)
    return outcome, reason


def _batches(b: int, owner: str, resumed: bool, p: Policy) -> Flow:
    """The lock, the claim and the batches; (outcome, reason), not yet recorded."""
    op = BULK_DELETE_OP
    if not (yield from take_lock(b, op, owner, resumed)):
        return "failed", f"BulkGate lock {op} is held by job {(yield (Coord, 'lock_holder', (b, op)))}"
    if not (yield CLAIM_JOB):
        return "superseded", None
    yield (Emit, "lead_job.start", {"business_id": b, "job_id": owner})
    started, failures = (yield CLOCK), 0
    while True:
        step = yield DELETE_BATCH
        kind = step[0]
        if kind == "error":  # the batch's transaction rolled back: the same batch is tried again
            failures += 1
            if bulk_should_stop(failures, p):
                return "failed", f"{failures} batches failed in a row; last: {step[1]}"[:500]
            yield Sleep(p.bulk_throttle_s)
            continue
        if kind == "superseded":
            return "superseded", None
        if kind == "done":
            return "completed", None
        _, asked, deleted, left = step
        if bulk_batch_fails(asked, len(deleted), p):
            yield ROLLBACK
            return "failed", f"{asked - len(deleted)} of {asked} leads in the batch not found"
        yield COMMIT
        failures = 0
        for lead_id in deleted:  # leads already gone are skipped
            yield (Emit, "lead.delete", {"business_id": b, "lead_id": lead_id, "job_id": owner})
        if not (yield from keep_lock(b, op, owner)):
            return "failed", f"lost the BulkGate lock to {(yield (Coord, 'lock_holder', (b, op)))}"
        if not left:
            continue  # the next pass finds nothing left and completes
        yield Sleep(p.bulk_throttle_s)
        if bulk_should_pause((yield CLOCK) - started, p):
            return "paused", None


def end_job(business_id: int, owner: str, status: str, reason: str | None) -> Flow:
    """Record how the run ended, once. paused: the status only, the lock stays. completed or
    failed: the row's end, then the lock released (by its owner only, in `fixed`), then the
    commit — the lock is free before the job stops counting as active."""
    processed = yield EndJob(status, reason)
    if processed is None:  # another run owns the job now
        return
    if status == "paused":
        yield (Emit, "lead_job.pause", {"business_id": business_id, "job_id": owner, "processed": processed})
        return
    yield from release_lock(business_id, BULK_DELETE_OP, owner)
    yield COMMIT
    yield (Emit, "lead_job.end", {"business_id": business_id, "job_id": owner, "status": status,
                                  "processed": processed})
