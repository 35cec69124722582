"""The lead bulk-delete job (seeds 000 and 003), at module level so RQ workers import it by path.
Its order is flows.delete.delete_run (shared with the model); this module drives it on the
database, Redis and the history writer.

`delete_leads(job_id)` runs one *run* of a BackgroundJob: it takes the business's BulkGate lock
(owner = the job id; a resumed run first refreshes the lock its job kept), then deletes the job's
lead ids batch by batch. Each batch is one database transaction that

  1. stamps the heartbeat — only while the row still names this run's RQ job id, so a run that
     was superseded (resumed elsewhere after it looked dead) stops before touching anything;
  2. deletes the batch's leads *of this business that still exist* (DELETE ... RETURNING:
     already-gone leads and other tenants' ids are skipped, not errors);
  3. advances the cursor and the counters.

A crash anywhere rolls the batch back whole, and a resumed run starts at the committed cursor,
so no lead is deleted twice and none is skipped. Between batches the run refreshes its lock
(owner-checked), throttles, and pauses once it has used its runtime budget — status paused,
lock *kept*, resumable with POST /api/jobs/<id>/resume. A batch that raises is retried; after
bulk_max_batch_failures failures in a row the job fails. Completion and failure release the
lock (by its owner only, in `fixed`) and are recorded once, an unexpected error's too.

Variants: `before` fails the job when a batch's leads are already gone; `seed` and `before`
use the Coordinator's plain-DEL release and EXISTS-then-EXPIRE refresh. A run that finds the
lock held by another job fails (seed 003: the failure path releases — in `seed` that frees the
other job's lock).
"""
from __future__ import annotations

import json
import time
import uuid

from rq import get_current_job
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from loopfix.reference_app.flows.delete import delete_run
from loopfix.reference_app.flows.effects import ClaimJob, Clock, Commit, Coord, DeleteBatch, EndJob, Sleep, drive
from loopfix.reference_app.models import BackgroundJob, Lead
from loopfix.reference_app.policy import bulk_job_timeout_s
from loopfix.reference_app.services import LEADS_QUEUE, Services, get_services

JOB_FUNC = "loopfix.reference_app.delete_job.delete_leads"


# --------------------------------------------------------------------------- enqueue


def new_rq_id(job_id: int) -> str:
    """A fresh RQ job id for one run of BackgroundJob `job_id`."""
    return f"lead{job_id}-{uuid.uuid4().hex[:8]}"


def enqueue_run(svc: Services, job: BackgroundJob) -> str:
    """Put the run named by `job.rq_job_id` (already committed on the row) on the leads queue.

    No RQ Retry: a run that died is resumed through the API once it is evidently dead
    (policy.bulk_resume_decision), never re-run blindly by RQ.
    """
    p = svc.policy
    queue = svc.queue(LEADS_QUEUE)
    timeout = max(30, int(p.wall(bulk_job_timeout_s(p))) + 30)
    rq_job = queue.create_job(JOB_FUNC, args=(job.id,), job_id=job.rq_job_id, timeout=timeout,
                              result_ttl=600, failure_ttl=3600)
    queue.enqueue_job(rq_job)
    return job.rq_job_id


# --------------------------------------------------------------------------- the job


def delete_leads(job_id: int) -> dict:
    svc = get_services()
    current = get_current_job()
    with svc.sessions() as s:
        return DeleteRun(svc, s, job_id, current.id if current else None).run()


class DeleteRun:
    """One run of a delete job: the app's driver of flows.delete.delete_run on the database,
    Redis and the history writer."""

    def __init__(self, svc: Services, session: Session, job_id: int, rq_id: str | None):
        self.svc, self.s, self.job_id = svc, session, job_id
        self.p = svc.policy
        self.emit = svc.history.emit
        self.rq_id = rq_id

    def run(self) -> dict:
        job = self.s.get(BackgroundJob, self.job_id)
        if job is None or job.status != "queued" or (self.rq_id is not None and job.rq_job_id != self.rq_id):
            return {"skipped": True}  # finished, or superseded by a later run
        self.rq_id = job.rq_job_id
        self.mine = (BackgroundJob.id == self.job_id, BackgroundJob.rq_job_id == self.rq_id)
        ids: list[int] = json.loads(job.lead_ids)
        flow = delete_run(job.business_id, job.lock_owner or str(job.id), job.started_at is not None, self.p)
        outcome, reason = self._drive(flow, job.business_id, ids)
        return {"skipped": True} if outcome == "superseded" else {"status": outcome, "reason": reason}

    def _drive(self, flow, business_id: int, ids: list[int]):
        coord, emit, p, s = self.svc.coord, self.emit, self.p, self.s

        def handle(effect):
            kind = type(effect)
            if kind is tuple:  # (Coord, op, args) or (Emit, kind, fields)
                if effect[0] is Coord:
                    return getattr(coord, effect[1])(*effect[2])
                return emit(effect[1], **effect[2])
            if kind is DeleteBatch:
                try:
                    return self._one_batch(business_id, ids)
                except SQLAlchemyError as exc:
                    s.rollback()
                    self._count_failure()
                    return "error", f"{type(exc).__name__}: {exc}"
            if kind is Commit:
                return s.commit() if effect.keep else s.rollback()
            if kind is Sleep:
                return time.sleep(p.wall(effect.seconds))
            if kind is Clock:
                return p.policy_seconds(time.monotonic())
            if kind is ClaimJob:
                return self._claim()
            if kind is EndJob:
                return self._end(effect.status, effect.reason)
            raise TypeError(f"not a delete run effect: {effect!r}")

        return drive(flow, handle)

    def _claim(self) -> bool:
        """queued → running, only for the run the row names (one claim wins per run)."""
        now = time.time()
        won = self.s.execute(
            update(BackgroundJob).where(*self.mine, BackgroundJob.status == "queued")
            .values(status="running", heartbeat_at=now, started_at=func.coalesce(BackgroundJob.started_at, now))
        ).rowcount
        self.s.commit()
        return bool(won)

    def _one_batch(self, business_id: int, ids: list[int]) -> tuple:
        """One transaction, left open for the flow to commit: heartbeat (only while this run owns
        the job), delete the batch's remaining leads of this business, advance the cursor."""
        s, n = self.s, self.p.bulk_batch_size
        owned = s.execute(
            update(BackgroundJob).where(*self.mine, BackgroundJob.status == "running").values(heartbeat_at=time.time())
        ).rowcount
        if not owned:
            s.rollback()
            return ("superseded",)
        cursor = s.scalar(select(BackgroundJob.cursor).where(BackgroundJob.id == self.job_id))
        if cursor >= len(ids):
            s.commit()
            return ("done",)
        batch = ids[cursor : cursor + n]
        lead = Lead.__table__
        deleted = sorted(s.scalars(
            delete(lead).where(lead.c.id.in_(batch), lead.c.business_id == business_id).returning(lead.c.id)
        ).all())
        s.execute(
            update(BackgroundJob).where(BackgroundJob.id == self.job_id)
            .values(cursor=cursor + len(batch), processed=BackgroundJob.processed + len(batch),
                    succeeded=BackgroundJob.succeeded + len(deleted))
        )
        return "batch", len(batch), deleted, len(ids) - cursor - len(batch)

    def _count_failure(self) -> None:
        try:
            self.s.execute(update(BackgroundJob).where(*self.mine).values(failed_count=BackgroundJob.failed_count + 1))
            self.s.commit()
        except SQLAlchemyError:
            self.s.rollback()  # the database is failing: the count is best effort

    def _end(self, status: str, reason: str | None) -> int | None:
        """The run's end on its row, if this run still owns it: paused (committed at once), or
        completed/failed (left open: the flow releases the lock, then commits). The processed
        count, or None."""
        s = self.s
        s.rollback()
        if status == "paused":
            won = s.execute(update(BackgroundJob).where(*self.mine, BackgroundJob.status == "running")
                            .values(status="paused")).rowcount
            s.commit()
            return self._processed() if won else None
        won = s.execute(
            update(BackgroundJob).where(*self.mine, BackgroundJob.status.in_(("queued", "running")))
            .values(status=status, active=None, finished_at=time.time(), last_error=reason)
        ).rowcount
        if not won:
            s.rollback()
            return None
        return self._processed()

    def _processed(self) -> int:
        return int(self.s.scalar(select(BackgroundJob.processed).where(BackgroundJob.id == self.job_id)) or 0)
