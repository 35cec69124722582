"""Calls in each state the poll endpoint (`GET /api/recordings/file/<call_sid>`) answers from:
a business with calls whose recording is queued, running, absent (first click) or ready on
disk. The app and Redis benchmarks poll these; the state is written straight into the
database because the benchmark measures the answer, not how the state came about.
"""
from __future__ import annotations

import hashlib
import secrets
import time

from loopfix.reference_app.models import Business, CallLog, RecordingFile, RecordingRun
from loopfix.reference_app.services import Services

STATES = ("queued", "running", "none", "ready")
AUDIO = b"ID3" + bytes(64_000)  # 64 kB, the Twilio stand-in's default body size


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def add_business(svc: Services) -> tuple[int, str]:
    """A business; returns (id, API token)."""
    with svc.sessions() as s:
        b = Business(name="bench", api_token=secrets.token_urlsafe(16), twilio_account_sid=_sid("AC"),
                     twilio_auth_token=secrets.token_hex(16))
        s.add(b)
        s.commit()
        return b.id, b.api_token


def add_call(svc: Services, business_id: int, state: str) -> str:
    """A call with a recording URL whose download is in `state` (one of STATES); returns its sid.

    queued / running: a RecordingRun created (running: heartbeat) now — fresh for one
    heartbeat timeout; none: no run yet, so the first poll enqueues; ready: the file on disk.
    """
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}")
    call_sid, rec_sid, now = _sid("CA"), _sid("RE"), time.time()
    url = f"https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/{rec_sid}.mp3"
    with svc.sessions() as s:
        s.add(CallLog(business_id=business_id, call_sid=call_sid, recording_sid=rec_sid, recording_url=url,
                      created_at=now))
        if state in ("queued", "running"):
            s.add(RecordingRun(business_id=business_id, call_sid=call_sid, recording_sid=rec_sid, recording_url=url,
                               job_type="download_only", status=state, created_at=now,
                               started_at=now if state == "running" else None,
                               heartbeat_at=now if state == "running" else None))
        if state == "ready":
            svc.config.recordings_dir.mkdir(parents=True, exist_ok=True)
            path = (svc.config.recordings_dir / f"{rec_sid}.mp3").resolve()
            path.write_bytes(AUDIO)
            s.add(RecordingFile(business_id=business_id, recording_sid=rec_sid, call_sid=call_sid, path=str(path),
                                size=len(AUDIO), sha256=hashlib.sha256(AUDIO).hexdigest(), created_at=now))
        s.commit()
    return call_sid


def refresh(svc: Services, call_sid: str) -> None:
    """Make a queued/running run fresh again (created and heartbeat now) before a measurement."""
    now = time.time()
    with svc.sessions() as s:
        for run in s.query(RecordingRun).filter(RecordingRun.call_sid == call_sid):
            run.created_at = now
            if run.status == "running":
                run.started_at = run.heartbeat_at = now
        s.commit()
