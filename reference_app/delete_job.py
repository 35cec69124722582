"""The lead bulk-delete job (seeds 000 and 003), at module level so RQ workers import it by path.

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
lock (by its owner only, in `fixed`) and are recorded in `finally`.

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

from loopfix.reference_app.flows.effects import Coord, drive
from loopfix.reference_app.flows.locks import keep_lock, release_lock, take_lock
from loopfix.reference_app.models import BackgroundJob, Lead
from loopfix.reference_app.policy import (
    BULK_DELETE_OP,
    BULK_JOB_FINISHED,
    bulk_batch_fails,
    bulk_job_timeout_s,
    bulk_should_pause,
    bulk_should_stop,
)
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
    """The RQ entry point. Its return value says how the run ended; {"status": "failed"} ends
    the RQ job FAILED with the reason (worker.LoopfixJob, worker.job_outcome)."""
    svc = get_services()
    current = get_current_job()
    with svc.sessions() as s:
        return DeleteRun(svc, s, job_id, current.id if current else None).run()


class LeadsAlreadyGone(Exception):
    """`before`: a batch found fewer leads than it asked for, and the job fails (000)."""


class DeleteRun:
    """One run of a delete job. `outcome` is what `finally` records: completed | failed |
    paused | superseded (another run owns the job now: record nothing) | None (not started)."""

    def __init__(self, svc: Services, session: Session, job_id: int, rq_id: str | None):
        self.svc, self.s, self.job_id = svc, session, job_id
        self.p = svc.policy
        self.emit = svc.history.emit
        self.rq_id = rq_id
        self.outcome: str | None = None
        self.reason: str | None = None
        self.business_id: int | None = None
        self.owner = str(job_id)

    # ---------------------------------------------------------------- run

    def run(self) -> dict:
        job = self.s.get(BackgroundJob, self.job_id)
        if job is None or job.status != "queued" or (self.rq_id is not None and job.rq_job_id != self.rq_id):
            return {"skipped": True}  # finished, or superseded by a later run
        self.rq_id = job.rq_job_id
        self.business_id, self.owner = job.business_id, job.lock_owner or str(job.id)
        ids: list[int] = json.loads(job.lead_ids)
        resumed = job.started_at is not None
        try:
            if not self._take_lock(resumed):
                holder = self.svc.coord.lock_holder(self.business_id, BULK_DELETE_OP)
                self.outcome, self.reason = "failed", f"BulkGate lock {BULK_DELETE_OP} is held by job {holder}"
                return {"status": "failed", "reason": self.reason}
            if not self._claim():
                self.outcome = "superseded"
                return {"skipped": True}
            self.emit("lead_job.start", business_id=self.business_id, job_id=self.owner)
            self._batches(ids)
            return {"status": self.outcome, "reason": self.reason}
        except Exception as exc:
            self.s.rollback()
            self.outcome, self.reason = "failed", f"{type(exc).__name__}: {exc}"[:500]
            raise
        finally:
            self._bookkeeping()

    def _take_lock(self, resumed: bool) -> bool:
        """A resumed run first refreshes the lock its job kept through the pause (or still
        holds after a crash); a fresh run, or one whose lock lapsed, takes it with SET NX."""
        return self._drive(take_lock(self.business_id, BULK_DELETE_OP, self.owner, resumed))

    def _drive(self, flow):
        """Run a lock flow (flows/locks.py) on Redis and the history writer."""
        coord, emit = self.svc.coord, self.emit
        return drive(flow, lambda e: getattr(coord, e.op)(*e.args) if isinstance(e, Coord) else emit(e.kind, **e.fields))

    def _claim(self) -> bool:
        """queued → running, only for the run the row names (one claim wins per run)."""
        now = time.time()
        won = self.s.execute(
            update(BackgroundJob)
            .where(BackgroundJob.id == self.job_id, BackgroundJob.rq_job_id == self.rq_id,
                   BackgroundJob.status == "queued")
            .values(status="running", heartbeat_at=now, started_at=func.coalesce(BackgroundJob.started_at, now))
        ).rowcount
        self.s.commit()
        return bool(won)

    # ---------------------------------------------------------------- batches

    def _batches(self, ids: list[int]) -> None:
        p = self.p
        started = time.monotonic()
        failures = 0
        while True:
            try:
                step, deleted, remaining = self._one_batch(ids)
            except LeadsAlreadyGone as exc:
                self.outcome, self.reason = "failed", str(exc)
                return
            except SQLAlchemyError as exc:
                self.s.rollback()
                failures += 1
                self._count_failure()
                if bulk_should_stop(failures, p):
                    self.outcome = "failed"
                    self.reason = f"{failures} batches failed in a row; last: {type(exc).__name__}: {exc}"[:500]
                    return
                time.sleep(p.wall(p.bulk_throttle_s))
                continue
            if step == "superseded":
                self.outcome = "superseded"
                return
            if step == "done":
                self.outcome = "completed"
                return
            failures = 0
            for lead_id in deleted:
                self.emit("lead.delete", business_id=self.business_id, lead_id=lead_id, job_id=self.owner)
            if not self._keep_lock():
                holder = self.svc.coord.lock_holder(self.business_id, BULK_DELETE_OP)
                self.outcome, self.reason = "failed", f"lost the BulkGate lock to {holder}"
                return
            if not remaining:
                continue  # the next pass finds the cursor at the end and completes
            time.sleep(p.wall(p.bulk_throttle_s))
            if bulk_should_pause(p.policy_seconds(time.monotonic() - started), p):
                self.outcome = "paused"
                return

    def _one_batch(self, ids: list[int]) -> tuple[str, list[int], int]:
        """One transaction: heartbeat (only while this run owns the job), delete the batch's
        remaining leads of this business, advance the cursor. Returns (step, deleted ids,
        ids left after this batch); step is batch | done | superseded."""
        s, b, n = self.s, self.business_id, self.p.bulk_batch_size
        owned = s.execute(
            update(BackgroundJob)
            .where(BackgroundJob.id == self.job_id, BackgroundJob.rq_job_id == self.rq_id,
                   BackgroundJob.status == "running")
            .values(heartbeat_at=time.time())
        ).rowcount
        if not owned:
            s.rollback()
            return "superseded", [], 0
        cursor = s.scalar(select(BackgroundJob.cursor).where(BackgroundJob.id == self.job_id))
        if cursor >= len(ids):
            s.commit()
            return "done", [], 0
        batch = ids[cursor : cursor + n]
        lead = Lead.__table__
        deleted = sorted(s.scalars(
            delete(lead).where(lead.c.id.in_(batch), lead.c.business_id == b).returning(lead.c.id)
        ).all())
        if bulk_batch_fails(len(batch), len(deleted), self.p):
            s.rollback()
            raise LeadsAlreadyGone(f"{len(batch) - len(deleted)} of {len(batch)} leads in the batch not found")
        s.execute(
            update(BackgroundJob).where(BackgroundJob.id == self.job_id)
            .values(cursor=cursor + len(batch), processed=BackgroundJob.processed + len(batch),
                    succeeded=BackgroundJob.succeeded + len(deleted))
        )
        s.commit()
        return "batch", deleted, len(ids) - cursor - len(batch)

    def _count_failure(self) -> None:
        try:
            self.s.execute(update(BackgroundJob).where(BackgroundJob.id == self.job_id,
                                                       BackgroundJob.rq_job_id == self.rq_id)
                           .values(failed_count=BackgroundJob.failed_count + 1))
            self.s.commit()
        except SQLAlchemyError:
            self.s.rollback()  # the database is failing: the count is best effort

    def _keep_lock(self) -> bool:
        """Refresh the lock (owner-checked in `fixed`); if it lapsed and nobody took it, take
        it back. False: another job holds it now, and this one must stop deleting."""
        return self._drive(keep_lock(self.business_id, BULK_DELETE_OP, self.owner))

    # ---------------------------------------------------------------- bookkeeping

    def _bookkeeping(self) -> None:
        """Record how this run ended. paused: status only, the lock stays. completed/failed:
        in one transaction, mark the row (only if this run still owns it), release the lock,
        then commit — the lock is free before the job stops counting as active, so a next job
        can never find it still held; a crash in between leaves a running job with no lock,
        which the resume rule treats as dead."""
        s, b = self.s, self.business_id
        if self.outcome not in ("paused", *BULK_JOB_FINISHED):
            return
        s.rollback()
        mine = (BackgroundJob.id == self.job_id, BackgroundJob.rq_job_id == self.rq_id)
        if self.outcome == "paused":
            won = s.execute(update(BackgroundJob).where(*mine, BackgroundJob.status == "running")
                            .values(status="paused")).rowcount
            s.commit()
            if won:
                self.emit("lead_job.pause", business_id=b, job_id=self.owner, processed=self._processed())
            return
        won = s.execute(
            update(BackgroundJob).where(*mine, BackgroundJob.status.in_(("queued", "running")))
            .values(status=self.outcome, active=None, finished_at=time.time(), last_error=self.reason)
        ).rowcount
        if not won:
            s.rollback()
            return
        self._drive(release_lock(b, BULK_DELETE_OP, self.owner))  # records lock.release just before the commit
        s.commit()
        self.emit("lead_job.end", business_id=b, job_id=self.owner, status=self.outcome, processed=self._processed())

    def _processed(self) -> int:
        return int(self.s.scalar(select(BackgroundJob.processed).where(BackgroundJob.id == self.job_id)) or 0)
