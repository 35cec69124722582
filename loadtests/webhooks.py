"""Twilio's side of a call: signed status and recording callbacks at the scenario's arrival rate.

Each new call gets a call-status callback (which creates its CallLog) and, for the scenario's
`url_fraction`, a recording callback whose RecordingUrl points at the stand-in — as Twilio
sends it (no extension), as `.json` (seed 001's bug) or `.mp3`. Usually the CallLog commits
first; for the scenario's `late_fraction` the recording callback arrives first and the
call-status one only `late_delay_s` later (the missing-CallLog case of seed 000). Every
request is signed with the business's auth token (X-Twilio-Signature over the full URL), by
twilio's own RequestValidator.
A share (`play_fraction`) of new calls is handed to this process's players.
"""
from __future__ import annotations

import time
from urllib.parse import urlencode

import gevent
import gevent.pool
from locust import FastHttpUser, task
from twilio.request_validator import RequestValidator

from loopfix.loadtests.fixtures import new_sid, recording_url
from loopfix.loadtests.load_context import FreshCall, LoadContext, load_context

CALL_STATUS_PATH = "/webhooks/twilio/call-status"
RECORDING_PATH = "/webhooks/twilio/recording"
URL_SUFFIXES = ("", ".json", ".mp3")


def post_signed(user: FastHttpUser, business: dict, path: str, form: dict[str, str]) -> int:
    """One callback on a connection of its own (`Connection: close`): on a reused keep-alive
    connection a callback can cross gunicorn closing it idle, and a POST is not retried, so
    the call's CallLog was never created and its recording waited for it until it failed
    (live worker-outage and worker-crash runs: HTTPConnectionClosed on call-status)."""
    sig = RequestValidator(business["auth_token"]).compute_signature(user.host.rstrip("/") + path, form)
    resp = user.client.post(path, data=urlencode(form), name=path,
                            headers={"X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded",
                                     "Connection": "close"})
    return resp.status_code or 0


def next_arrival_s(ctx: LoadContext) -> float:
    """Policy seconds to the next call: Poisson at the scenario's rate in force now."""
    per_s = ctx.scenario.arrivals.rate_at(ctx.now()) / 3600.0
    return ctx.rng.expovariate(per_s) if per_s > 0 else 60.0


class TwilioWebhookUser(FastHttpUser):
    """One sender for the whole run (fixed_count): calls arrive at the scenario's rate however
    many players there are. Each call's callbacks run in their own greenlet."""

    fixed_count = 1

    def on_start(self) -> None:
        self.ctx = load_context()
        self.calls = gevent.pool.Group()

    def wait_time(self) -> float:
        return 0.0

    @task
    def arrive(self) -> None:
        self.ctx.sleep(next_arrival_s(self.ctx))
        if not self.ctx.draining():
            self.calls.spawn(self.call)

    def call(self) -> None:
        ctx, rng, s = self.ctx, self.ctx.rng, self.ctx.scenario
        business = rng.choice(ctx.fixtures["businesses"])
        call_sid, rec_sid = new_sid("CA"), new_sid("RE")
        status_form = {"AccountSid": business["account_sid"], "CallSid": call_sid, "From": "+15550000001",
                       "To": "+15550000002", "CallStatus": "completed"}
        with_recording = rng.random() < s.recordings.url_fraction
        late = with_recording and rng.random() < s.calllog.late_fraction
        commit_s = rng.uniform(*(s.calllog.late_delay_s if late else s.calllog.commit_delay_s))
        open_at = time.time() + ctx.policy.wall(max(commit_s, rng.uniform(*s.clients.play_delay_s)))
        if not late:
            self.send_call_status(business, status_form)
        if with_recording:
            if not late:
                ctx.sleep(commit_s)
            url = recording_url(ctx.fixtures["stub_url"], business["account_sid"], rec_sid, rng.choice(URL_SUFFIXES))
            self.send_recording(business, {
                "AccountSid": business["account_sid"], "CallSid": call_sid, "RecordingSid": rec_sid,
                "RecordingUrl": url, "RecordingStatus": "completed", "RecordingDuration": "30"})
        if late:
            ctx.sleep(commit_s)
            self.send_call_status(business, status_form)
        if rng.random() < s.clients.play_fraction:  # opened once Twilio has told the app everything
            ctx.fresh.append(FreshCall(business, call_sid, max(open_at, time.time())))

    def send_call_status(self, business: dict, form: dict[str, str]) -> int:
        """Twilio's call-status callback (target mode sends it through the target's adapter)."""
        return post_signed(self, business, CALL_STATUS_PATH, form)

    def send_recording(self, business: dict, form: dict[str, str]) -> int:
        """Twilio's recording-status callback."""
        return post_signed(self, business, RECORDING_PATH, form)
