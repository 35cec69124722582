"""Locust users that drive a service under test through its Target adapter, recording only what
is observable outside it (`source: target`).

They are loopfix's own users (players.py, webhooks.py, deleters.py) with the service's part
swapped: `TargetOps` builds the run's adapter over the user's Locust client and answers the
player's poll with it, so seed 002's player loop, the click storms, the call arrivals and the
bulk-deleters stay one definition each. What the reference app writes into its own history
(an accepted recording, a delete job's request, its leads) is written here from the answers:

- `webhook.send` for every Twilio callback (signed or not) and its status; an accepted signed
  recording callback also as `recording.created`;
- each poll's `client.request` carries the sha256 of a 200's body (checked against what the
  media stand-in served for that recording);
- `lead_job.request` with the ids a click sent, `lead.requested` for the ids the business owns,
  `lead_job.observe` for each state the service reports while the deleter watches.

`ProbeUser` plays every accepted recording once more when the runner asks (after the drain):
nothing-lost is "playable after the faults end", seen as a player sees it.
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import gevent
import gevent.pool
from locust import FastHttpUser, task

from loopfix.loadtests import deleters, players, webhooks
from loopfix.loadtests.load_context import PROBE_DONE_FILE, PROBE_FILE, LoadContext, load_context
from loopfix.loadtests.target.adapter import ACTIVE_JOB_STATES, Business, Target, make_target
from loopfix.loadtests.target.config import TargetConfig
from loopfix.loadtests.target.observed import send_call_status, send_recording  # noqa: F401 - conformance's too

PROBE_SESSIONS = 32  # probe sessions at once
WATCH_EVERY_S = 5.0  # policy seconds between two reads of a delete job


def target_config(ctx: LoadContext) -> TargetConfig:
    """The run's TargetConfig, from run.json (fixtures from fixtures.json)."""
    return TargetConfig(**{**ctx.info["target"], "fixtures": ctx.fixtures})


def business(b: dict[str, Any]) -> Business:
    return Business.from_fixture(b)


def observe_play(target: Target, ctx: LoadContext, b: dict, call_sid: str) -> players.Poll:
    """One poll through the adapter, in players.poll's shape (Retry-After read as HTTP says)."""
    sent = time.monotonic()
    answer = target.play(business(b), call_sid)
    took = time.monotonic() - sent
    wall = players.retry_after_wall_s(answer.retry_after)
    retry_after = None if wall is None else ctx.policy.policy_seconds(wall)
    ok = players.audio_ok(answer.content_type, answer.body) if answer.status in (200, 206) else None
    extra: dict[str, Any] = {}
    if answer.status == 200:
        extra["body_sha256"] = hashlib.sha256(answer.body).hexdigest()
    if answer.error:
        extra["error"] = answer.error
    return answer.status, retry_after, ok, took, extra


class TargetOps:
    """Mixin for a loopfix user: the service is reached through the run's adapter."""

    ctx: LoadContext
    client: Any

    def on_start(self) -> None:
        super().on_start()  # type: ignore[misc]
        self.ctx = getattr(self, "ctx", None) or load_context()
        self.target = make_target(target_config(self.ctx), self.client)

    def poll_once(self, b: dict, call_sid: str) -> players.Poll:
        return observe_play(self.target, self.ctx, b, call_sid)

    def enqueue_once(self, b: dict, call_sid: str) -> None:
        """The Target protocol has no enqueue: a reload is the next play session."""


class TargetPlayerUser(TargetOps, players.PlayerUser):
    """Seed 002's player, on the service under test."""


class TargetClickStormUser(TargetOps, players.ClickStormUser):
    """Click storms and double-clicks, on the service under test."""


class TargetRefresherUser(TargetOps, players.RefresherUser):
    """Page reloads while a recording does not play, on the service under test."""


class TargetArrivalsUser(TargetOps, players.ScenarioArrivalsUser):
    """The scenario's open-loop openings, on the service under test."""


class TargetWebhookUser(TargetOps, webhooks.TwilioWebhookUser):
    """Calls at the scenario's arrival rate, their callbacks sent through the adapter."""

    def send_call_status(self, b: dict, form: dict[str, str]) -> int:
        return send_call_status(self.ctx, self.target, b, form["CallSid"])

    def send_recording(self, b: dict, form: dict[str, str]) -> int:
        return send_recording(self.ctx, self.target, b, form["CallSid"], form["RecordingSid"], form["RecordingUrl"])


def foreign_leads(ctx: LoadContext, b: dict, n: int) -> list[int]:
    """Up to `n` lead ids of another business (tenant isolation: they must never go)."""
    others = [x for x in ctx.fixtures["businesses"] if x["id"] != b["id"] and x.get("lead_ids")]
    return [int(i) for i in others[0]["lead_ids"][:n]] if others else []


def delete_click(ctx: LoadContext, target: Target, b: dict, own: list[int], foreign: list[int],
                 client: str) -> str | None:
    """One click on "delete selected": the request and what the answer says, into the history."""
    answer = target.bulk_delete(business(b), own + foreign)
    if answer.job_id is None:
        return None
    ctx.emit("lead_job.request", business_id=b["id"], job_id=answer.job_id, existing=answer.existing, client=client,
             lead_ids=own + foreign)
    for lead in own:
        ctx.emit("lead.requested", business_id=b["id"], lead_id=lead, job_id=answer.job_id)
    return answer.job_id


def watch_job(ctx: LoadContext, target: Target, b: dict, job_id: str, resume_after_s: float) -> None:
    """Read the job until it finishes, recording each state; resume it when it paused."""
    while True:
        state = target.job_status(business(b), job_id)
        ctx.emit("lead_job.observe", business_id=b["id"], job_id=job_id, state=state.state,
                 succeeded=state.succeeded)
        if state.state not in ACTIVE_JOB_STATES:
            return
        if state.state == "paused" and target.supports("resume_job"):
            ctx.sleep(resume_after_s)
            target.resume_job(business(b), job_id)
        ctx.sleep(WATCH_EVERY_S)


class TargetDeleteUser(TargetOps, deleters.BulkDeleteUser):
    """Bulk-delete double-clickers with another tenant's ids mixed in, on the service under test."""

    def remaining(self, b: dict) -> list[int]:
        return self.target.list_leads(business(b)) or []

    def click(self, b: dict, lead_ids: list[int], after_s: float) -> str | None:
        self.ctx.sleep(after_s)
        return delete_click(self.ctx, self.target, b, lead_ids, foreign_leads(self.ctx, b, 3), "deleter")

    def watch(self, b: dict, job_id: str) -> None:
        watch_job(self.ctx, self.target, b, job_id, self.ctx.scenario.bulk_delete.resume_after_s)


class ProbeUser(TargetOps, FastHttpUser):
    """After the drain the runner writes PROBE_FILE (a JSON list of [business id, call_sid]):
    each recording gets one player session (role probe); then PROBE_DONE_FILE."""

    fixed_count = 1

    def on_start(self) -> None:
        self.ctx = load_context()
        super().on_start()
        self.done = False

    def wait_time(self) -> float:
        return 0.0

    @task
    def probe(self) -> None:
        request = self.ctx.run_dir / PROBE_FILE
        if self.done or not request.is_file():
            gevent.sleep(0.1)
            return
        by_id = {str(b["id"]): b for b in self.ctx.fixtures["businesses"]}
        pool = gevent.pool.Pool(PROBE_SESSIONS)
        client = self.ctx.new_client("probe")
        for i, (business_id, call_sid) in enumerate(json.loads(request.read_text(encoding="utf-8")), 1):
            pool.spawn(players.play_session, self, self.ctx, by_id[str(business_id)], call_sid, client, i, "probe")
        pool.join()
        self.done = True
        (self.ctx.run_dir / PROBE_DONE_FILE).write_text("done\n", encoding="utf-8")
