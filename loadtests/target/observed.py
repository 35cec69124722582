"""Twilio's callbacks to a service under test, recorded as the outside sees them: each sent
callback and its answer (`webhook.send`), and an accepted signed recording callback as the
history's `recording.created`. One definition for the Locust users and the runner's archive:
`history` is anything with `emit(kind, **fields)` (a LoadContext, a HistoryWriter)."""
from __future__ import annotations

from typing import Any

from loopfix.loadtests.target.adapter import Business, Target


def send_call_status(history: Any, target: Target, b: dict, call_sid: str, signed: bool = True) -> int:
    status = target.create_call(Business.from_fixture(b), call_sid, signed=signed)
    history.emit("webhook.send", hook="call_status", call_sid=call_sid, recording_sid=None, business_id=b["id"],
                 signed=signed, status=status)
    return status


def send_recording(history: Any, target: Target, b: dict, call_sid: str, recording_sid: str, url: str,
                   signed: bool = True, **facts: Any) -> int:
    """A recording callback; an accepted signed one is the history's recording.created
    (`facts`: e.g. fails_by_design for a recording whose every fetch fails)."""
    status = target.send_recording_webhook(Business.from_fixture(b), call_sid, recording_sid, url, signed=signed)
    history.emit("webhook.send", hook="recording", call_sid=call_sid, recording_sid=recording_sid,
                 business_id=b["id"], signed=signed, status=status, url=url)
    if signed and 200 <= status < 300:
        history.emit("recording.created", call_sid=call_sid, recording_sid=recording_sid, business_id=b["id"],
                     has_url=True, **facts)
    return status
