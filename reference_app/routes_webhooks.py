"""Twilio webhooks: call status and recording status callbacks, signed (X-Twilio-Signature).

The business is found by AccountSid and the signature checked with its auth token by twilio's
own RequestValidator (repeated keys and default ports as Twilio signs them: a proxy that passes
on `https://host:443/...` is accepted, as Twilio's validator accepts it); an unknown account and
a bad signature both answer 403. A CallLog is committed before any job is
enqueued; a recording callback that arrives before its CallLog still enqueues the run, which
waits for the CallLog with backoff (the seeds' missing-CallLog case)."""
from __future__ import annotations

import re
import time

from flask import Blueprint, current_app, g, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from twilio.request_validator import RequestValidator

from loopfix.reference_app.media import media_host_allowed
from loopfix.reference_app.models import Business, CallLog
from loopfix.reference_app.flows.effects import drive
from loopfix.reference_app.flows.enqueue import recording_callback
from loopfix.reference_app.policy import normalise_recording_url
from loopfix.reference_app.recordings import enqueuer, latest_run, recording_known

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks/twilio")

# Matched with fullmatch: `$` would also accept a trailing newline ("CA...\n").
SID = {prefix: re.compile(rf"{prefix}[0-9a-fA-F]{{32}}") for prefix in ("AC", "CA", "RE")}
PHONE = re.compile(r"[+0-9A-Za-z:@._-]{0,32}")


class BadRequest(Exception):
    def __init__(self, status: int, error: str, message: str):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def _svc():
    return current_app.extensions["loopfix"]


def _signed_url() -> str:
    public = _svc().config.public_url
    if public:
        return public.rstrip("/") + request.full_path.rstrip("?")
    return request.url


def verified_business() -> Business:
    """The Business whose signed request this is; BadRequest(403) otherwise."""
    account = request.form.get("AccountSid", "")
    if not SID["AC"].fullmatch(account):
        raise BadRequest(403, "forbidden", "unknown account or bad signature")
    business = g.db.scalar(select(Business).where(Business.twilio_account_sid == account))
    given = request.headers.get("X-Twilio-Signature")
    if business is None or not given or not RequestValidator(business.twilio_auth_token).validate(
            _signed_url(), request.form, given):
        raise BadRequest(403, "forbidden", "unknown account or bad signature")
    return business


def field(name: str, pattern: re.Pattern | None = None, required: bool = True) -> str:
    value = request.form.get(name, "")
    if required and not value:
        raise BadRequest(400, "bad_request", f"{name} is required")
    if value and pattern is not None and not pattern.fullmatch(value):
        raise BadRequest(400, "bad_request", f"{name} is malformed")
    return value


@bp.errorhandler(BadRequest)
def _bad(exc: BadRequest):
    return jsonify(error=exc.error, message=exc.message), exc.status


def upsert_call(business: Business, call_sid: str, **values) -> CallLog:
    """Create or update the CallLog; a concurrent create of the same call_sid becomes an update.
    A call_sid that belongs to another business is refused."""
    for _ in range(2):
        call = g.db.scalar(select(CallLog).where(CallLog.call_sid == call_sid))
        if call is not None and call.business_id != business.id:
            raise BadRequest(403, "forbidden", "unknown account or bad signature")
        if call is None:
            call = CallLog(business_id=business.id, call_sid=call_sid, created_at=time.time())
            g.db.add(call)
        for key, value in values.items():
            if value is not None:
                setattr(call, key, value)
        try:
            g.db.commit()
            return call
        except IntegrityError:
            g.db.rollback()
    raise BadRequest(409, "conflict", "call is being created concurrently; retry")


@bp.post("/call-status")
def call_status():
    business = verified_business()
    call_sid = field("CallSid", SID["CA"])
    call = upsert_call(business, call_sid, from_number=field("From", PHONE, False),
                       to_number=field("To", PHONE, False),
                       call_status=field("CallStatus", re.compile(r"[a-z-]{1,20}"), False))
    if not call.recording_url:  # a recording callback came first: its run holds the URL
        pending = latest_run(g.db, call_sid)
        if pending is not None and pending.recording_url and pending.business_id == business.id:
            upsert_call(business, call_sid, recording_sid=pending.recording_sid, recording_url=pending.recording_url)
    return "", 204


@bp.post("/recording")
def recording():
    svc = _svc()
    business = verified_business()
    call_sid = field("CallSid", SID["CA"])
    recording_sid = field("RecordingSid", SID["RE"])
    status = field("RecordingStatus", re.compile(r"[a-z-]{1,20}"), False) or "completed"
    raw_url = field("RecordingUrl")
    if len(raw_url) > 2000 or not media_host_allowed(raw_url, svc.config.media_hosts):
        raise BadRequest(400, "host_not_allowed", "RecordingUrl host is not an allowed media host")
    if status != "completed":
        return "", 204
    url = normalise_recording_url(raw_url, svc.policy)
    call = g.db.scalar(select(CallLog).where(CallLog.call_sid == call_sid))
    if call is not None:
        call = upsert_call(business, call_sid, recording_sid=recording_sid, recording_url=url)
    known = recording_known(g.db, recording_sid)
    reason = drive(recording_callback(business.id, call_sid, recording_sid, True, known, svc.policy),
                   enqueuer(svc, g.db, business.id, call_sid, recording_sid, url))
    if reason == "error":
        return jsonify(error="enqueue_failed"), 500
    return "", 204
