"""The recording pipeline's request side: enqueue with dedup (001/004), the playback decision
with stuck detection, playback dedup and fail-fast (002/003). Routes call these and map the
`Answer` to HTTP; the rules themselves are policy.py's."""
from __future__ import annotations

import os
import time
from typing import NamedTuple

import redis
from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.orm import Session

from loopfix.reference_app.compiled_select import CompiledSelect
from loopfix.reference_app.db import RequestDb, session_of
from loopfix.reference_app.flows.effects import ActiveRun, Coord, CreateRun, Enqueue, FailStuck, drive, fields_of
from loopfix.reference_app.flows.enqueue import dedup_enqueue, enqueue_request
from loopfix.reference_app.flows.enqueue import pending_run as pending_run_flow
from loopfix.reference_app.flows.playback import PollCall, poll
from loopfix.reference_app.jobs import api_slot_owner, enqueue_run, run_state
from loopfix.reference_app.models import Business, CallLog, RecordingFile, RecordingRun
from loopfix.reference_app.policy import ACTIVE_RUN_STATUSES, Policy, reported_enqueue_reason
from loopfix.reference_app.services import Services


class ReadyFile(NamedTuple):
    """A downloaded recording, as serving it needs it (a RecordingFile's columns). (This and the
    two below are NamedTuples: built on every poll, a frozen dataclass costs twice as much.)"""

    path: str
    sha256: str
    content_type: str


class RunRow(NamedTuple):
    """A call's latest RecordingRun, as the playback decision and the stuck-run fail need it."""

    id: int
    call_sid: str
    job_type: str
    status: str
    created_at: float
    started_at: float | None
    heartbeat_at: float | None
    next_attempt_at: float | None


class CallRecording(NamedTuple):
    """What the recording routes know of one call: its recording, the file if it is on disk,
    and the call's latest run."""

    call_sid: str
    recording_sid: str | None
    recording_url: str | None
    file: ReadyFile | None
    run: RunRow | None


class Answer(NamedTuple):
    """What a route sends: a status, a JSON body or a file, and a Retry-After in policy seconds.
    (A NamedTuple, as the rows above: one per poll.)"""

    status: int
    body: dict
    file: ReadyFile | None = None
    retry_after_s: float | None = None


def _call_recording_select(scoped: bool):
    """One SELECT for the business whose API token is `:token` and its call `:call_sid` with the
    call's file and latest run (the poll's hot path: the token's lookup and three ORM queries cost
    more than the whole bare endpoint): the business's id and token, then the call's id (None: no
    such call; `scoped`: none of this business's) and its columns. Built once; executed as Core
    (compiled_select)."""
    latest = select(func.max(RecordingRun.id)).where(RecordingRun.call_sid == bindparam("call_sid")).scalar_subquery()
    call_of = CallLog.call_sid == bindparam("call_sid")
    return (select(Business.id, Business.api_token, CallLog.id, CallLog.recording_sid, CallLog.recording_url,
                   RecordingFile.path, RecordingFile.sha256, RecordingFile.content_type,
                   RecordingRun.id, RecordingRun.job_type, RecordingRun.status, RecordingRun.created_at,
                   RecordingRun.started_at, RecordingRun.heartbeat_at, RecordingRun.next_attempt_at)
            .select_from(Business)
            .outerjoin(CallLog, and_(call_of, CallLog.business_id == Business.id) if scoped else call_of)
            .outerjoin(RecordingFile, RecordingFile.recording_sid == CallLog.recording_sid)
            .outerjoin(RecordingRun, RecordingRun.id == latest)
            .where(Business.api_token == bindparam("token")))


TOKEN_AND_CALL = {scoped: CompiledSelect(_call_recording_select(scoped)) for scoped in (True, False)}


def token_and_call(db: Session | RequestDb, token: str, call_sid: str, p: Policy) -> tuple | None:
    """auth.require_business's lookup for the routes of one call: (business id, its API token,
    the call or None) for the business whose token is `token`, or None; one SELECT for both.
    The call is the business's, or None — another business's call is indistinguishable from none
    (`tenant_unscoped_lookup`: anyone's call). Its file counts only while it is on disk."""
    row = TOKEN_AND_CALL[not p.has("tenant_unscoped_lookup")].first(db, token=token, call_sid=call_sid)
    if row is None:
        return None
    return row[0], row[1], None if row[2] is None else _call_recording(call_sid, row[3:])


def _call_recording(call_sid: str, row: tuple) -> CallRecording:
    (rec_sid, url, path, sha256, content_type, run_id, job_type, status, created, started, beat, next_at) = row
    file = ReadyFile(path, sha256, content_type) if path is not None and os.path.isfile(path) else None
    run = RunRow(run_id, call_sid, job_type, status, created, started, beat, next_at) if run_id is not None else None
    return CallRecording(call_sid, rec_sid, url, file, run)


def enqueue_recording(svc: Services, s: Session, *, business_id: int, call_sid: str, recording_sid: str | None,
                      recording_url: str | None, job_type: str, via: str,
                      dedup: bool = True) -> tuple[str, RecordingRun | None]:
    """Create a RecordingRun and its RQ job unless one was enqueued within the dedup window
    (`dedup=False`: no dedup key at all, the `before` play route's enqueue).

    Returns seed 001's reason: 'enqueued' | 'duplicate' | 'error'.

    Redis unreachable (paused, restarting): the run row is the record. A run committed before
    Redis failed stays queued, and with no dedup answer from Redis the database decides (an
    active run of the call is the duplicate, else a new queued run); the sweeper enqueues it
    once Redis answers (the workers' sweep, flows.sweep). `orphan_runs_not_swept` (seed): the error
    propagates and the run fails, a webhook's recording is lost.
    """
    p = svc.policy
    redis_down: list[RecordingRun | None] = []

    def create_and_enqueue() -> RecordingRun:
        run = RecordingRun(business_id=business_id, call_sid=call_sid, recording_sid=recording_sid,
                           recording_url=recording_url, job_type=job_type, status="queued", created_at=time.time())
        s.add(run)
        s.commit()
        try:
            if p.has("semaphore_in_api") and job_type == "download_only":
                if not svc.coord.acquire_slot(business_id, api_slot_owner(run.id), call_sid):
                    raise RuntimeError("no download slot free")
            enqueue_run(svc, s, run, via=via, note_queued=True)  # with mark_queued: one round trip
        except Exception as exc:
            if isinstance(exc, redis.exceptions.RedisError) and not p.has("orphan_runs_not_swept"):
                redis_down.append(run)
                raise
            run.status, run.error, run.finished_at = "failed", f"enqueue failed: {exc}"[:500], time.time()
            s.commit()
            raise
        svc.history.emit("job.enqueue", job_id=str(run.id), call_sid=call_sid, job_type=job_type, via=via)
        return run

    created: list[RecordingRun] = []

    def handle(effect):
        if isinstance(effect, CreateRun):
            try:
                created.append(create_and_enqueue())
            except Exception:
                return False
            return True
        return getattr(svc.coord, effect[1])(*effect[2])  # (Coord, op, args)

    reason = "error"
    try:
        reason = drive(dedup_enqueue(call_sid, job_type, via, dedup, p), handle)
    except redis.exceptions.RedisError:
        if p.has("orphan_runs_not_swept"):
            raise
        redis_down.append(None)
    run = created[0] if created else None
    if redis_down:
        return pending_run(s, redis_down[0], business_id=business_id, call_sid=call_sid, recording_sid=recording_sid,
                           recording_url=recording_url, job_type=job_type)
    return reported_enqueue_reason(reason, p), run


def pending_run(s: Session, run: RecordingRun | None, **fields) -> tuple[str, RecordingRun]:
    """With Redis unreachable (flows.enqueue.pending_run): `run` if one was committed, else the
    call's active run ('duplicate'), else a new queued run ('enqueued') that the sweeper will
    enqueue."""
    found = [run]

    def handle(effect):
        if isinstance(effect, ActiveRun):
            found[0] = s.scalar(select(RecordingRun).where(RecordingRun.call_sid == fields["call_sid"],
                                                           RecordingRun.status.in_(ACTIVE_RUN_STATUSES))
                                .order_by(RecordingRun.id.desc()))
            return found[0] is not None
        found[0] = RecordingRun(status="queued", created_at=time.time(), **fields)  # CreateRun: the row alone
        s.add(found[0])
        s.commit()
        return True

    reason = drive(pending_run_flow(run is not None, fields["job_type"], "pending"), handle)
    return reason, found[0]


def recording_known(s: Session, recording_sid: str) -> bool:
    """Has this RecordingSid a run or a file already (a callback for it was handled before)?"""
    return any(s.scalar(select(model.id).where(model.recording_sid == recording_sid).limit(1)) is not None
               for model in (RecordingRun, RecordingFile))


def latest_run(s: Session, call_sid: str) -> RecordingRun | None:
    return s.scalar(select(RecordingRun).where(RecordingRun.call_sid == call_sid).order_by(RecordingRun.id.desc()))


def playback(svc: Services, db: Session | RequestDb, business: Business, call_sid: str,
             call: CallRecording | None) -> Answer:
    """GET /api/recordings/file/<call_sid>, `call` as token_and_call found it: 200 ready, 202
    processing, 404 never, 500 fail-fast (flows.playback.poll, driven with Redis, the database and
    the history writer). The ORM session is opened only for a write (a stuck run failed, a run
    enqueued)."""
    if call is None:
        return Answer(404, {"error": "not_found"})
    run = call.run
    flow = poll(PollCall(business.id, call_sid, bool(call.recording_url), call.file is not None,
                         run_state(svc, run) if run else None), svc.policy_now(), svc.policy)

    enqueue_effects = enqueuer(svc, db, business.id, call_sid, call.recording_sid, call.recording_url)

    def handle(effect):
        if type(effect) is tuple and effect[0] is Coord:
            return getattr(svc.coord, effect[1])(*effect[2])
        if type(effect) is tuple or isinstance(effect, Enqueue):  # an Emit, or the Enqueue
            return enqueue_effects(effect)
        if isinstance(effect, FailStuck):
            return _fail_stuck(svc, session_of(db), run, effect.reason)
        return None  # Gap: the round trips themselves are the gap

    reply = drive(flow, handle)
    return Answer(reply.status, reply.body or {}, file=call.file if reply.serve else None,
                  retry_after_s=reply.retry_after_s)


def _fail_stuck(svc: Services, s: Session, run: RunRow, why: str) -> None:
    """Seed 002: mark the stuck run failed (once, compare-and-set) so a new one can start
    (when: policy.fails_stuck_run)."""
    won = s.execute(
        update(RecordingRun).where(RecordingRun.id == run.id, RecordingRun.status == run.status)
        .values(status="failed", error=why[:500], finished_at=time.time())
    ).rowcount
    s.commit()
    if won:
        svc.history.emit("job.stuck", job_id=str(run.id), call_sid=run.call_sid, reason=why)
        svc.coord.clear_dedup(run.call_sid, run.job_type)


def enqueue_api(svc: Services, db: Session | RequestDb, business: Business, call_sid: str,
                call: CallRecording | None) -> Answer:
    """POST /api/calls/<sid>/recording/enqueue, `call` as token_and_call found it: seed 001's
    (success, reason) → 202/200/200/500 (flows.enqueue.enqueue_request)."""
    if call is None:
        return Answer(404, {"error": "not_found"})
    answered = drive(enqueue_request(call_sid, bool(call.recording_url), call.file is not None),
                     enqueuer(svc, db, business.id, call_sid, call.recording_sid, call.recording_url))
    if answered is None:
        return Answer(404, {"error": "no_recording_url"})
    reason, status = answered
    return Answer(status, {"success": reason == "enqueued", "reason": reason})


def enqueuer(svc: Services, db: Session | RequestDb, business_id: int, call_sid: str, recording_sid: str | None,
             recording_url: str | None):
    """The effects of flows.enqueue's request flows on the app: Enqueue (enqueue_recording) and
    EmitValues (the history writer)."""

    def handle(effect):
        if type(effect) is tuple:  # (EmitValues, kind, values)
            return svc.history.emit(effect[1], **fields_of(effect))
        if isinstance(effect, Enqueue):
            reason, _run = enqueue_recording(svc, session_of(db), business_id=business_id, call_sid=call_sid,
                                             recording_sid=recording_sid, recording_url=recording_url,
                                             job_type=effect.job_type, via=effect.via, dedup=effect.dedup)
            return reason
        raise TypeError(f"not an enqueue request effect: {effect!r}")

    return handle
