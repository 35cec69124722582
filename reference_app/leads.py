"""The lead-deletion request side (seed 000, issue 3): bulk-delete idempotency, job progress,
resume, and the business's remaining leads. Routes call one function each and map the
`Answer` to HTTP; the rules are policy.py's, the work is delete_job.py's.

Idempotency (`fixed`): the request *inserts* the job, and the database's one-active-job-per-
business constraint (models.BackgroundJob) decides — every concurrent loser gets an
IntegrityError and answers with the winner's id, `existing: true`. There is no window between
a check and an insert because there is no check. `seed` checks, counts the leads, then inserts
(the race); `before` inserts a new job on every click.

A job of another business is indistinguishable from no job: both are 404 `not_found`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from sqlalchemy import func, null, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loopfix.reference_app.delete_job import enqueue_run, new_rq_id
from loopfix.reference_app.flows.delete import request_bulk_delete as request_bulk_delete_flow
from loopfix.reference_app.flows.effects import ActiveLeadJob, EnqueueLeadJob, Gap, NewLeadJob, OwnedLeads, drive
from loopfix.reference_app.models import BackgroundJob, Business, Lead
from loopfix.reference_app.policy import (
    BULK_DELETE_JOB_TYPE,
    BULK_DELETE_OP,
    BULK_JOB_ACTIVE,
    LEAD_ID_MAX,
    BadLeadIds,
    Policy,
    bulk_resume_decision,
    parse_lead_ids,
)
from loopfix.reference_app.services import Services

LEADS_PAGE_DEFAULT = 100
LEADS_PAGE_MAX = 1000
JOB_ID_MAX = 2**31 - 1  # job ids are 32-bit integer keys
_CLAIM_ATTEMPTS = 5  # insert → lost → the winner finished meanwhile → insert again


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict = field(default_factory=dict)


def _bad(code: str, message: str, status: int = 400) -> Answer:
    return Answer(status, {"error": code, "message": message})


NOT_FOUND = Answer(404, {"error": "not_found", "message": "no such job"})


# --------------------------------------------------------------------------- bulk delete


def request_bulk_delete(svc: Services, s: Session, business: Business, body: object) -> Answer:
    """POST /api/leads/bulk-delete {"lead_ids": [...]} → 202 {"job_id", "existing", "status"}
    (flows.delete.request_bulk_delete on the database and Redis)."""
    if not isinstance(body, dict):
        return _bad("body_not_a_json_object", 'send a JSON object: {"lead_ids": [1, 2, 3]}')
    try:
        ids = parse_lead_ids(body.get("lead_ids"))
    except BadLeadIds as exc:
        return _bad(exc.code, str(exc))
    client = body.get("client") if isinstance(body.get("client"), str) else None
    found: list[BackgroundJob | None] = [None]
    owned: list[list[int]] = []

    def handle(effect):
        kind = type(effect)
        if kind is tuple:  # (Emit, kind, fields)
            return svc.history.emit(effect[1], **effect[2])
        if kind is NewLeadJob:
            job, existing = _insert_or_join(s, business.id, ids) if effect.join else (
                _insert(s, business.id, ids, active=None), False)
            found[0] = job
            return None if job is None else (str(job.id), existing)
        if kind is ActiveLeadJob:
            found[0] = _active_job(s, business.id)
            return None if found[0] is None else str(found[0].id)
        if kind is Gap:  # the seed's real work between its check and its insert
            return owned.append(_owned(s, business.id, ids))
        if kind is OwnedLeads:
            return owned[0] if owned else _owned(s, business.id, ids)
        if kind is EnqueueLeadJob:
            return _enqueue_or_fail(svc, s, found[0])
        raise TypeError(f"not a bulk-delete request effect: {effect!r}")

    answer = drive(request_bulk_delete_flow(business.id, client, svc.policy), handle)
    if answer is None:
        return _bad("busy", "the business's delete jobs changed too fast; retry", 503)
    job = found[0]
    return Answer(202, {"job_id": job.id, "existing": answer[1], "status": job.status})


def _insert_or_join(s: Session, business_id: int, ids: list[int]) -> tuple[BackgroundJob | None, bool]:
    for _ in range(_CLAIM_ATTEMPTS):
        try:
            return _insert(s, business_id, ids, active=True), False
        except IntegrityError:
            s.rollback()
        job = _active_job(s, business_id)
        if job is not None:
            return job, True
    return None, False


def _insert(s: Session, business_id: int, ids: list[int], active: bool | None) -> BackgroundJob:
    now = time.time()
    # null(): a plain None would let the column's default (True) fill it in
    job = BackgroundJob(business_id=business_id, job_type=BULK_DELETE_JOB_TYPE, status="queued",
                        active=True if active else null(),
                        total=len(ids), lead_ids=json.dumps(ids), cursor=0, created_at=now, queued_at=now)
    s.add(job)
    s.flush()  # fixed: the one-active-job constraint decides here
    job.lock_owner = str(job.id)
    job.rq_job_id = new_rq_id(job.id)
    s.commit()
    return job


def _active_job(s: Session, business_id: int) -> BackgroundJob | None:
    return s.scalar(
        select(BackgroundJob)
        .where(BackgroundJob.business_id == business_id, BackgroundJob.job_type == BULK_DELETE_JOB_TYPE,
               BackgroundJob.status.in_(BULK_JOB_ACTIVE))
        .order_by(BackgroundJob.id)
    )


def _owned(s: Session, business_id: int, ids: list[int]) -> list[int]:
    """Which of `ids` are this business's leads right now, in request order."""
    found: set[int] = set()
    for i in range(0, len(ids), 1000):
        chunk = ids[i : i + 1000]
        found.update(s.scalars(select(Lead.id).where(Lead.business_id == business_id, Lead.id.in_(chunk))))
    return [i for i in ids if i in found]


def _enqueue_or_fail(svc: Services, s: Session, job: BackgroundJob) -> None:
    """Enqueue the job's first run; if Redis refuses, the job fails at once (never an active
    job that nothing will run) and the error reaches the client as a 503."""
    try:
        enqueue_run(svc, job)
    except Exception as exc:
        s.execute(update(BackgroundJob).where(BackgroundJob.id == job.id, BackgroundJob.status == "queued")
                  .values(status="failed", active=None, finished_at=time.time(),
                          last_error=f"enqueue failed: {type(exc).__name__}: {exc}"[:500]))
        s.commit()
        svc.history.emit("lead_job.end", business_id=job.business_id, job_id=str(job.id), status="failed",
                         processed=0)
        raise


# --------------------------------------------------------------------------- jobs


def find_job(s: Session, business: Business, job_id: int, p: Policy) -> BackgroundJob | None:
    """The business's delete job, or None — another business's job is indistinguishable from none
    (`tenant_unscoped_lookup`: anyone's job)."""
    if not 1 <= job_id <= JOB_ID_MAX:
        return None
    scope = () if p.has("tenant_unscoped_lookup") else (BackgroundJob.business_id == business.id,)
    return s.scalar(select(BackgroundJob).where(BackgroundJob.id == job_id, *scope,
                                                BackgroundJob.job_type == BULK_DELETE_JOB_TYPE))


def _lock_held(svc: Services, job: BackgroundJob) -> bool:
    return svc.coord.lock_holder(job.business_id, BULK_DELETE_OP) == (job.lock_owner or str(job.id))


def job_progress(svc: Services, s: Session, business: Business, job_id: int) -> Answer:
    """GET /api/jobs/<id>: status and counters. skipped = processed but not deleted here
    (already gone, or not this business's lead); lock_held: the job holds its BulkGate lock."""
    job = find_job(s, business, job_id, svc.policy)
    if job is None:
        return NOT_FOUND
    now = svc.policy_now()
    heartbeat = svc.policy_time(job.heartbeat_at)
    return Answer(200, {
        "job_id": job.id,
        "job_type": job.job_type,
        "status": job.status,
        "total": job.total,
        "processed": job.processed,
        "succeeded": job.succeeded,
        "skipped": job.processed - job.succeeded,
        "failed_batches": job.failed_count,
        "progress": round(job.processed / job.total, 4) if job.total else 1.0,
        "lock_held": _lock_held(svc, job),
        "heartbeat_age_s": None if heartbeat is None else round(now - heartbeat, 3),
        "last_error": job.last_error,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    })


def resume_job(svc: Services, s: Session, business: Business, job_id: int) -> Answer:
    """POST /api/jobs/<id>/resume: start a new run of a paused job, or of one whose run is
    evidently dead (policy.bulk_resume_decision). The new run supersedes the old: the row names
    the new RQ job id, and a run that no longer finds its own id there stops before its next
    batch. 202 {"job_id", "resumed", "status"}; 409 when running or finished."""
    job = find_job(s, business, job_id, svc.policy)
    if job is None:
        return NOT_FOUND
    decision = bulk_resume_decision(job.status, svc.policy_now(), svc.policy_time(job.heartbeat_at),
                                    svc.policy_time(job.queued_at), _lock_held(svc, job), svc.policy)
    if decision.kind != "resume":
        body = {"job_id": job.id, "resumed": False, "status": job.status, "reason": decision.reason}
        if decision.status >= 400:
            body["error"] = f"job_{decision.kind}"
        return Answer(decision.status, body)
    rq_id = new_rq_id(job.id)
    won = s.execute(
        update(BackgroundJob)
        .where(BackgroundJob.id == job.id, BackgroundJob.status == job.status,
               BackgroundJob.rq_job_id == job.rq_job_id)
        .values(status="queued", rq_job_id=rq_id, queued_at=time.time())
    ).rowcount
    s.commit()
    if not won:
        return _bad("job_changed", "the job changed while resuming it; GET it and try again", 409)
    s.refresh(job)
    enqueue_run(svc, job)
    return Answer(202, {"job_id": job.id, "resumed": True, "status": "queued", "reason": decision.reason})


# --------------------------------------------------------------------------- leads


def list_leads(s: Session, business: Business, args: dict) -> Answer:
    """GET /api/leads?after=<id>&limit=<n>: the business's remaining leads by id (keyset pages
    stay correct while a job deletes); `next_after` is null on the last page."""
    try:
        after = int(args.get("after", 0))
        limit = int(args.get("limit", LEADS_PAGE_DEFAULT))
    except (TypeError, ValueError):
        return _bad("bad_page", "after and limit must be integers")
    if after < 0 or not 1 <= limit <= LEADS_PAGE_MAX:
        return _bad("bad_page", f"after must be >= 0 and limit from 1 to {LEADS_PAGE_MAX}")
    after = min(after, LEAD_ID_MAX)  # no lead id is larger, and a larger int overflows the DB driver
    rows = s.execute(
        select(Lead.id, Lead.name, Lead.phone).where(Lead.business_id == business.id, Lead.id > after)
        .order_by(Lead.id).limit(limit + 1)
    ).all()
    page = rows[:limit]
    total = s.scalar(select(func.count()).select_from(Lead).where(Lead.business_id == business.id))
    return Answer(200, {
        "leads": [{"id": r.id, "name": r.name, "phone": r.phone} for r in page],
        "next_after": page[-1].id if len(rows) > limit else None,
        "total": total,
    })
