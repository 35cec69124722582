"""RQ jobs of the recording pipeline, at module level so workers import them by dotted path.

`process_recording(run_id)` fetches one recording: it waits (with the policy's backoff,
actually applied) for a missing CallLog, and again for audio Twilio failed to serve, each
against a retry budget of its own (policy.recording_retry_decision's phases), takes a
download slot in the worker (never sleeping on contention: it re-parks itself), downloads
idempotently by RecordingSid (temp file + atomic rename; skipped if complete) while a
heartbeat thread keeps its run alive, and finishes its bookkeeping in `finally`. `cleanup_stuck_recording_jobs()` (seed 002, by
heartbeat) re-queues runs whose worker died. The RecordingRun id is the job id in every event.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
from rq import Retry
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loopfix.reference_app.flows.effects import (ClaimRun, FetchAudio, Finish, Park, RetryByRQ, Save, Sleep,
    StartRun, Transcribe, drive, tagged)
from loopfix.reference_app.flows.recording import Job, recording_job
from loopfix.reference_app.flows.sweep import Focus, JobStatus, SweptRun, sweep
from loopfix.reference_app.models import Business, CallLog, RecordingFile, RecordingRun
from loopfix.reference_app.policy import (ACTIVE_RUN_STATUSES, RunState, enqueue_retry_is_int, media_host_allowed,
    run_attempt)
from loopfix.reference_app.coordination import crash_point_on, enqueue_noting_queued
from loopfix.reference_app.parking import schedule_in
from loopfix.reference_app.services import RECORDINGS_QUEUE, Services, get_services

CONTENT_TYPES = {".mp3": "audio/mpeg", ".wav": "audio/wav", ".json": "application/json"}
JOB_FUNC = "loopfix.reference_app.jobs.process_recording"


# --------------------------------------------------------------------------- enqueue


def enqueue_run(svc: Services, s: Session, run: RecordingRun, delay_policy_s: float = 0.0, via: str = "retry",
                note_queued: bool = False) -> str:
    """Put `run` on the recordings queue, now or after `delay_policy_s`; returns the RQ job id.

    The new RQ job id is committed on the run first: a job that starts and finds another id
    on its run was superseded (re-queued as stuck) and does nothing.

    The RQ Retry object covers crashes and unexpected errors (001: always `Retry(max=3)`,
    never an int); waiting for a CallLog or audio is the job's own schedule, not RQ's.
    `retry_as_int` (before) passes `retry=3` on the enqueue API's path (`via`; see
    policy.enqueue_retry_is_int) and RQ raises at enqueue.

    `note_queued` (a new run's first enqueue): the job goes on the queue now and its download is
    noted as waiting (Coordinator.mark_queued) in the same pipeline, one Redis round trip.
    """
    p = svc.policy
    queue = svc.queue(RECORDINGS_QUEUE)
    rq_id = f"rec{run.id}-{uuid.uuid4().hex[:8]}"
    retry = 3 if enqueue_retry_is_int(via, p) else Retry(max=p.enqueue_retry_max)
    timeout = max(60, int(p.wall(3 * p.inflight_ttl_s)) + 30)
    run.rq_job_id = rq_id
    s.commit()
    job = queue.create_job(
        JOB_FUNC, args=(run.id,), job_id=rq_id, timeout=timeout, result_ttl=600, failure_ttl=3600, retry=retry
    )
    if note_queued and delay_policy_s <= 0:
        enqueue_noting_queued(svc.coord, queue, job, run.business_id, run.call_sid)
    else:
        schedule_in(queue, job, p.wall(delay_policy_s))
    return rq_id


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class Fetch:
    """How one download attempt ended: ok | skipped | missing (404: not there yet) | transient | refused."""

    outcome: str
    size: int = 0
    detail: str = ""


def process_recording(run_id: int) -> dict:
    """The RQ entry point. Its return value says how the run ended; {"status": "failed"} (for
    good) ends the RQ job FAILED without RQ's retries (worker.LoopfixJob, worker.job_outcome)."""
    svc = get_services()
    with svc.sessions() as s:
        return RecordingJob(svc, s, run_id).run()


class RecordingJob:
    """The app's driver of flows.recording.recording_job: Redis, RQ, the run's row, the media
    host and the history writer."""

    def __init__(self, svc: Services, session: Session, run_id: int):
        self.svc, self.s, self.run_id = svc, session, run_id
        self.p = svc.policy
        self.emit = svc.history.emit
        from rq import get_current_job

        current = get_current_job()
        self.rq_id = current.id if current else f"inline-{uuid.uuid4().hex[:8]}"

    def run(self) -> dict:
        run = self.s.get(RecordingRun, self.run_id)
        if run is None or run.status in ("done", "failed") or run.rq_job_id not in (None, self.rq_id):
            return {"skipped": True}
        hang_once(self.svc, HANG_BEFORE_RUN_START)  # after RQ started the job, before its run began
        self.worker = os.environ.get("LOOPFIX_PROC", "worker")
        job = Job(str(run.id), run.call_sid, run.business_id, run.retry_count, run.fetch_retry_count,
                  run.defer_count, self.rq_id, self.slot_owner(run))
        return self._drive(recording_job(job, self.p), run)

    def _drive(self, flow, run: RecordingRun):
        """Run the job's flow on Redis, RQ, the run's row and the history writer; returns the
        flow's value."""
        coord, emit, p, s = self.svc.coord, self.emit, self.p, self.s

        def handle(effect):
            kind = type(effect)
            if kind is tuple:  # (Coord, op, args[, kind, values]), (Release, ...) or (Emit, kind, fields)
                return tagged(effect, coord, emit)
            if kind is Save:
                for name, value in effect.fields.items():
                    if name == "next_attempt_in_s":
                        run.next_attempt_at = time.time() + p.wall(value)
                    else:
                        setattr(run, name, value)
                return s.commit()
            if kind is Park:
                return enqueue_run(self.svc, s, run, effect.delay_s)
            if kind is FetchAudio:
                return self._fetch(run)
            if kind is StartRun:
                now = time.time()
                run.status, run.started_at, run.heartbeat_at, run.rq_job_id = "running", now, now, self.rq_id
                s.commit()
                sid = self._look_up_call(run)
                self.emit("job.start", job_id=str(run.id), call_sid=run.call_sid,
                          attempt=run_attempt(run.retry_count, run.fetch_retry_count), worker=self.worker)
                return sid
            if kind is Sleep:
                return time.sleep(p.wall(effect.seconds))
            if kind is Finish:
                return self._finish(run, effect.status, effect.error)
            if kind is RetryByRQ:
                raise RuntimeError(effect.error)  # seed: RQ's Retry(max=3) re-runs it at once
            if kind is Transcribe:
                return None  # the app has no transcription step
            raise TypeError(f"not a recording job effect: {effect!r}")

        return drive(flow, handle)

    def _look_up_call(self, run: RecordingRun) -> str | None:
        """The call's CallLog (None: not yet), its recording copied onto the run or back; the
        RecordingSid ('' when neither has a recording URL)."""
        call_log = self.s.scalar(select(CallLog).where(CallLog.call_sid == run.call_sid))
        if call_log is None:
            return None
        if not run.recording_url and call_log.recording_url:
            run.recording_sid, run.recording_url = call_log.recording_sid, call_log.recording_url
        elif run.recording_url and not call_log.recording_url:
            call_log.recording_sid, call_log.recording_url = run.recording_sid, run.recording_url
        self.s.commit()
        return run.recording_sid if run.recording_url and run.recording_sid else ""

    def slot_owner(self, run: RecordingRun) -> str:
        return self.rq_id if not self.p.has("semaphore_in_api") else api_slot_owner(run.id)

    def _fetch(self, run: RecordingRun) -> tuple[str, str]:
        """One download while a heartbeat keeps the run alive: (outcome, detail)."""
        beat = None if self.p.has("no_heartbeat") else Heartbeat(self.svc, run, self.rq_id, self.slot_owner(run))
        if beat:
            beat.begin()
        try:
            fetch = fetch_recording(self.svc, self.s, run, self.rq_id)
        finally:
            if beat:
                beat.stop()
        return fetch.outcome, fetch.detail

    def _finish(self, run: RecordingRun, status: str, error: str | None) -> None:
        run.status, run.error, run.finished_at = status, error, time.time()
        self.s.commit()
        self.emit("job.end", job_id=str(run.id), call_sid=run.call_sid, outcome=status)


class Heartbeat:
    """While a download runs, refresh the run's heartbeat_at and its Redis claims every
    heartbeat interval, so liveness is judged by signs of life, not by age (fault 8's fix)."""

    def __init__(self, svc: Services, run: RecordingRun, owner: str, slot_owner: str):
        self.svc, self.run_id, self.business_id = svc, run.id, run.business_id
        self.recording_sid, self.owner, self.slot_owner = run.recording_sid, owner, slot_owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run.id}", daemon=True)

    def begin(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        interval = self.svc.policy.wall(self.svc.policy.heartbeat_interval_s)
        while not self._stop.wait(interval):
            try:
                with self.svc.sessions() as s:
                    s.execute(update(RecordingRun).where(RecordingRun.id == self.run_id).values(heartbeat_at=time.time()))
                    s.commit()
                self.svc.coord.refresh_slot(self.business_id, self.slot_owner)
                self.svc.coord.refresh_inflight(self.recording_sid, self.owner)
            except Exception:  # a missed beat is survivable; the next one tries again
                continue


HANG_BEFORE_RUN_START = "recording_hang_before_start"
HANG_AFTER_DEQUEUE = "worker_hang_after_dequeue"


def hang_once(svc: Services, point: str) -> None:
    """Fault injection (LOOPFIX_CRASH_POINTS names `point`): the first process to get here
    hangs for good, so a test can kill it at exactly that moment. Once per data directory (a
    marker file named `point`), so the job's next run proceeds."""
    if not crash_point_on(point):
        return
    svc.config.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(svc.config.data_dir / point, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    threading.Event().wait()


def api_slot_owner(run_id: int) -> str:
    """Who holds the slot when the API takes it (before: `semaphore_in_api`)."""
    return f"api-{run_id}"


def recording_path(svc: Services, recording_sid: str, url: str) -> Path:
    ext = Path(url.split("?", 1)[0]).suffix.lower() or ".mp3"
    return svc.config.recordings_dir / f"{recording_sid}{ext}"


class RedirectRefused(Exception):
    """A redirect off the media allowlist, or too many redirects: permanent, never retried."""


def get_media(svc: Services, url: str, auth: tuple[str, str], timeout: tuple[float, float]) -> requests.Response:
    """GET a media URL, streaming. Redirects are followed by hand, at most `media_redirects_max`,
    each only to an allowed media host (checked before connecting: no request ever leaves the
    allowlist); the credentials go only to the first URL's origin. `redirect_followed_anywhere`:
    requests' default, which follows every hop wherever it points."""
    p = svc.policy
    if p.has("redirect_followed_anywhere"):
        return requests.get(url, stream=True, timeout=timeout, auth=auth)
    origin = urlsplit(url)[:2]
    for _ in range(p.media_redirects_max + 1):
        resp = requests.get(url, stream=True, allow_redirects=False, timeout=timeout,
                            auth=auth if urlsplit(url)[:2] == origin else None)
        if not resp.is_redirect:
            return resp
        resp.close()
        url = urljoin(url, resp.headers["Location"])
        if not media_host_allowed(url, svc.config.media_hosts):
            raise RedirectRefused(f"redirect to a host that is not an allowed media host: {url[:200]}")
    raise RedirectRefused(f"more than {p.media_redirects_max} redirects")


def fetch_recording(svc: Services, s: Session, run: RecordingRun, owner: str) -> Fetch:
    """Download `run`'s recording once. fixed: skipped if a complete RecordingFile exists;
    bytes go to a temp file renamed into place only when complete; the unique RecordingSid
    row decides which of two racing downloads completed. seed (`download_not_idempotent`):
    always downloads, writes in place, and overwrites the row."""
    p, emit, job_id = svc.policy, svc.history.emit, str(run.id)
    idempotent = not p.has("download_not_idempotent")
    sid = run.recording_sid
    existing = s.scalar(select(RecordingFile).where(RecordingFile.recording_sid == sid))
    if idempotent and existing and Path(existing.path).is_file():
        emit("download.end", job_id=job_id, call_sid=run.call_sid, recording_sid=sid, ok=True, skipped=True, bytes=0)
        return Fetch("skipped")
    url = run.recording_url
    if not media_host_allowed(url, svc.config.media_hosts):
        return Fetch("refused", detail="recording host not allowed")
    business = s.get(Business, run.business_id)
    final = recording_path(svc, sid, url)
    final.parent.mkdir(parents=True, exist_ok=True)
    target = final.with_name(f".{final.name}.{owner}.part") if idempotent else final
    emit("download.start", job_id=job_id, call_sid=run.call_sid, recording_sid=sid)
    digest, size = hashlib.sha256(), 0
    try:
        with get_media(svc, url, (business.twilio_account_sid, business.twilio_auth_token),
                       timeout=(5, max(5.0, p.wall(120)))) as resp:
            if resp.status_code == 404:
                return _fail_fetch(emit, run, "missing", "404 from media host")
            if resp.status_code != 200:
                return _fail_fetch(emit, run, "transient", f"HTTP {resp.status_code} from media host")
            expected = int(resp.headers.get("Content-Length", "-1"))
            with open(target, "wb") as fh:
                for chunk in resp.iter_content(64 * 1024):
                    fh.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
        if expected >= 0 and size != expected:
            raise OSError(f"truncated body: {size} of {expected} bytes")
    except RedirectRefused as exc:
        return _fail_fetch(emit, run, "refused", str(exc))
    except (requests.RequestException, OSError) as exc:
        if idempotent:
            target.unlink(missing_ok=True)
        return _fail_fetch(emit, run, "transient", str(exc)[:200])
    content_type = CONTENT_TYPES.get(final.suffix, "application/octet-stream")
    if idempotent:
        os.replace(target, final)
    row = dict(business_id=run.business_id, call_sid=run.call_sid, path=str(final), size=size,
               sha256=digest.hexdigest(), content_type=content_type, created_at=time.time())
    try:
        if existing is not None:
            if idempotent and Path(existing.path).is_file():
                raise IntegrityError("recording completed concurrently", None, Exception())
            for key, value in row.items():
                setattr(existing, key, value)
        else:
            s.add(RecordingFile(recording_sid=sid, **row))
        s.commit()
    except IntegrityError:
        # The bytes were fetched in full, but another job's row won: still a second download
        # from Twilio, so the history says so (skipped means "nothing fetched").
        s.rollback()
        emit("download.end", job_id=job_id, call_sid=run.call_sid, recording_sid=sid, ok=True, skipped=False, bytes=size)
        return Fetch("skipped", size)
    emit("download.end", job_id=job_id, call_sid=run.call_sid, recording_sid=sid, ok=True, skipped=False, bytes=size)
    return Fetch("ok", size)


def _fail_fetch(emit, run: RecordingRun, outcome: str, detail: str) -> Fetch:
    emit("download.end", job_id=str(run.id), call_sid=run.call_sid, recording_sid=run.recording_sid,
         ok=False, skipped=False, bytes=0)
    return Fetch(outcome, detail=detail)


# --------------------------------------------------------------------------- stuck runs (002)


def run_state(svc: Services, run: RecordingRun) -> RunState:
    t = svc.policy_time
    return RunState(run.status, t(run.created_at), t(run.started_at), t(run.heartbeat_at), t(run.next_attempt_at))


def cleanup_stuck_recording_jobs(svc: Services | None = None) -> int:
    """The workers' sweep (flows.sweep.sweep) over the active runs: re-queue the stuck, enqueue
    the orphaned; returns how many were re-queued.

    Each re-queue is a compare-and-set on the run as this sweep read it — (status, heartbeat_at)
    for a stuck run, (status, RQ job id) for an orphan, which also gets a fresh job id — so
    concurrent sweeps in several workers move a run once. A stuck re-queue spends one retry of
    the run's budget; past the budget the run fails for good. The dead owner's Redis claims are
    released.
    """
    svc = svc or get_services()
    p = svc.policy
    with svc.sessions() as s:
        rows = s.scalars(select(RecordingRun).where(RecordingRun.status.in_(ACTIVE_RUN_STATUSES))).all()
        runs = (SweptRun(run, str(run.id), run.call_sid, run.job_type, run.retry_count, run.business_id,
                         run.recording_sid, run.rq_job_id, run_state(svc, run)) for run in rows)
        return _drive_sweep(svc, s, sweep(runs, svc.policy_now(), p))


def _drive_sweep(svc: Services, s: Session, flow) -> int:
    """Run the sweep flow on the database, Redis, RQ and the history writer. ClaimRun is an
    UPDATE on the focused run's id where it is as this sweep read it."""
    focus: list[RecordingRun] = []

    def handle(effect):
        kind = type(effect)
        if kind is Focus:
            focus[:] = [effect.ref]
            return None
        run = focus[0] if focus else None
        if kind is ClaimRun:
            values = {k: v for k, v in effect.fields.items() if k != "created_now"}
            if effect.fields.get("created_now"):
                values["created_at"] = time.time()
            if effect.fresh_job:  # an orphan: compare on its job id, and give it a new one
                old = run.rq_job_id
                same = RecordingRun.rq_job_id.is_(None) if old is None else RecordingRun.rq_job_id == old
                values["rq_job_id"] = f"orphan-{uuid.uuid4().hex[:8]}"
            else:
                same = (RecordingRun.heartbeat_at.is_(None) if run.heartbeat_at is None
                        else RecordingRun.heartbeat_at == run.heartbeat_at)
            won = s.execute(update(RecordingRun).where(RecordingRun.id == run.id, RecordingRun.status == run.status,
                                                       same).values(**values)).rowcount
            s.commit()
            return bool(won)
        if kind is JobStatus:
            status, started = svc.coord.job_status(run.rq_job_id)
            return status, svc.policy_time(started)
        if kind is tuple:  # (Coord, op, args) or (Emit, kind, fields)
            return tagged(effect, svc.coord, svc.history.emit)
        if kind is Park:
            s.refresh(run)
            return enqueue_run(svc, s, run, effect.delay_s, via=effect.via)
        raise TypeError(f"not a sweep effect: {effect!r}")

    return drive(flow, handle)
