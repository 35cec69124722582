"""The people who press play: seed 002's browser player, click-stormers and page refreshers.

Every session is the AudioPlayer of seed 002, the flow the SimPy model runs too
(flows.player.play_session, with `policy.player_should_retry`, `player_delay` and
`player_outcome` inside): it retries only on 202, waits the larger of its exponential backoff
and the server's Retry-After, gives up after `player_max_retries` retries, stops on 404/500,
and checks that a 200 carries audio. Each
request and the session's end go into the history as client.* events, in the model's shape;
a request also reports its response time (`latency_s`, policy seconds), which the model does
not have and the loops-terminate bound allows for.

A session runs in a greenlet of its own (`session_greenlet`; a storm's clicks and the open-loop
openings already do): Locust's ramp-down kills a user it finds in its think time, and the kill
may land after the user woke and started its next session; it stops the user, not the session.

The users are closed-loop (each starts its next session after the last one and a think time),
except ScenarioArrivalsUser: it opens recordings at the scenario's rates as the model does, the
client mix calibration compares (the `scenario` profile).
"""
from __future__ import annotations

import email.utils
import time

import gevent
import gevent.pool
from locust import FastHttpUser, task

from loopfix.loadtests.load_context import LoadContext, load_context
from loopfix.reference_app.flows import player as player_flow
from loopfix.reference_app.flows.effects import drive, fields_of
from loopfix.reference_app.flows.player import Play

PLAY_PATH = "/api/recordings/file/{call_sid}"
AUDIO_MAGIC = (b"\xff\xfb", b"RIFF", b"ID3")


def audio_ok(content_type: str, body: bytes) -> bool:
    """Does a 200 carry audio? (A `.json` recording URL downloads JSON: seed 001's bug.)"""
    return content_type.startswith("audio/") and body[:4].startswith(AUDIO_MAGIC)


def retry_after_wall_s(header: str | None, now: float | None = None) -> float | None:
    """Retry-After as HTTP means it (RFC 9110): whole seconds, or an HTTP-date (the wait until
    then, never negative); None when absent or unreadable."""
    if not header:
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def auth(business: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {business['api_token']}"}


Poll = tuple[int, "float | None", "bool | None", float, dict]


def poll(user: FastHttpUser, business: dict, call_sid: str) -> Poll:
    """One GET of the playback endpoint → (status, Retry-After in policy s, audio ok on 200,
    response time in wall s, extra fields for the history). A user with its own way to poll
    (target mode's adapter) defines `poll_once(business, call_sid)` returning the same."""
    sent = time.monotonic()
    with user.client.get(PLAY_PATH.format(call_sid=call_sid), headers=auth(business),
                         name="/api/recordings/file/[call]", catch_response=True) as resp:
        status = resp.status_code or 0
        wall = retry_after_wall_s(resp.headers.get("Retry-After") if resp.headers else None)
        retry_after = None if wall is None else user.ctx.policy.policy_seconds(wall)
        ok = None
        if status in (200, 206):
            ok = audio_ok(resp.headers.get("Content-Type", ""), resp.content or b"")
            if not ok:
                resp.failure("200 without audio")
        elif status == 202 and retry_after is None:
            resp.failure("202 without Retry-After")
        elif status in (202, 404):
            resp.success()  # the protocol's answers, not errors
        return status, retry_after, ok, time.monotonic() - sent, {}


def enqueue(user: FastHttpUser, business: dict, call_sid: str) -> int:
    """The enqueue API, as a page reload calls it. 404 (a call without a recording URL) is one of
    its answers, not a Locust failure; a 500 (the enqueue failed) is."""
    with user.client.post(f"/api/calls/{call_sid}/recording/enqueue", headers=auth(business),
                          name="/api/calls/[call]/recording/enqueue", catch_response=True) as resp:
        status = resp.status_code or 0
        if status in (200, 202, 404):
            resp.success()
        return status


def play_session(user: FastHttpUser, ctx: LoadContext, business: dict, call_sid: str, client: str,
                 session: int, role: str) -> int:
    """Seed 002's AudioPlayer on one recording (flows.player.play_session, the model's too) over
    HTTP; returns the status it stopped on. A request's record also carries its response time."""
    p = ctx.policy
    poll_once = getattr(user, "poll_once", None) or (lambda b, c: poll(user, b, c))

    def handle(effect):
        kind = type(effect)
        if kind is tuple:  # (EmitValues, kind, values[, extra])
            return ctx.emit(effect[1], **fields_of(effect))
        if kind is Play:
            status, retry_after, ok, took, extra = poll_once(business, call_sid)
            return status, retry_after, ok, {"latency_s": round(p.policy_seconds(took), 3), **extra}
        return ctx.sleep(effect.seconds)  # Sleep: the backoff

    return drive(player_flow.play_session(client, session, call_sid, role, p), handle)


def session_greenlet(fn, *args):
    """Run `fn(*args)` (a session, or a refresher's reloads) in a greenlet of its own; wait for
    it and return its result. Locust stops a user it finds in its think time (state `waiting`)
    by killing its greenlet, and gevent delivers a kill on a later turn of the loop: a user
    whose think time ended in that same turn has already woken, started its next session and
    sent the first request when the kill lands. That session had a client.start and never an
    answer nor an end (live worker-crash on fixed: the storm profile ramps down from 20 users
    to 5 at 2,400 s, the second crash; loops-terminate, unterminated-session, 1 of 17 runs).
    Here the kill stops the user while the session runs on to its end, as a browser's would
    (tests/test_player_stop.py drives that interleaving with Locust's own stop)."""
    return gevent.spawn(fn, *args).get()


class LoadUser(FastHttpUser):
    """Base: a user of the run's context that starts nothing new once the run drains."""

    abstract = True

    def on_start(self) -> None:
        self.ctx = load_context()

    def wait_time(self) -> float:
        return self.ctx.policy.wall(self.ctx.rng.uniform(1.0, 5.0))  # think time between sessions

    def idle_if_draining(self) -> bool:
        if self.ctx.draining():
            gevent.sleep(0.2)
            return True
        return False


class PlayerUser(LoadUser):
    """Opens a recording in the browser player and waits for it to play."""

    @task
    def play(self) -> None:
        if self.idle_if_draining():
            return
        business, call_sid = self.ctx.pick_call()
        session_greenlet(play_session, self, self.ctx, business, call_sid, self.ctx.new_client("p"), 1, "player")


def click_storm(user: FastHttpUser, ctx: LoadContext, business: dict, call_sid: str, storm: bool) -> None:
    """Play clicked several times at once (audio element, list, second tab): a storm of
    `storm_clicks` concurrent sessions, or a double-click."""
    c, rng = ctx.scenario.clients, ctx.rng
    clicks, spread = (c.storm_clicks, c.storm_spread_s) if storm else (2, 0.25)
    role = "storm" if storm else "double_clicker"
    client = ctx.new_client("s")

    def click(session: int, after_s: float) -> None:
        ctx.sleep(after_s)
        play_session(user, ctx, business, call_sid, client, session, role)

    gevent.joinall([gevent.spawn(click, i, rng.uniform(0.0, spread)) for i in range(1, clicks + 1)])


def refresh_until_played(user: FastHttpUser, ctx: LoadContext, business: dict, call_sid: str) -> None:
    """Reload the page while the recording does not play: each reload asks the enqueue API for
    the recording, then plays it again."""
    c = ctx.scenario.clients
    client = ctx.new_client("r")
    for session in range(1, c.refreshes + 2):
        if hasattr(user, "enqueue_once"):  # target mode: the adapter's enqueue, if the service has one
            user.enqueue_once(business, call_sid)
        else:
            enqueue(user, business, call_sid)
        if play_session(user, ctx, business, call_sid, client, session, "refresher") in (200, 206):
            return
        ctx.sleep(c.refresh_after_s)


class ClickStormUser(LoadUser):
    """Clicks play on one recording several times at once: a storm or a double-click."""

    @task
    def storm(self) -> None:
        if self.idle_if_draining():
            return
        c = self.ctx.scenario.clients
        share = c.storm_fraction + c.double_click_fraction
        storm = self.ctx.rng.random() < (c.storm_fraction / share if share else 1.0)
        business, call_sid = self.ctx.pick_call()
        click_storm(self, self.ctx, business, call_sid, storm)


class RefresherUser(LoadUser):
    """Reloads the page while the recording does not play."""

    @task
    def refresh(self) -> None:
        if self.idle_if_draining():
            return
        business, call_sid = self.ctx.pick_call()
        session_greenlet(refresh_until_played, self, self.ctx, business, call_sid)


class ScenarioArrivalsUser(FastHttpUser):
    """Open-loop clients, the model's (sim/actors/clients.py archive_plays, call_arrivals and its
    Openings, open_recording): recordings are opened at the scenario's rates — archive calls Poisson at
    `archive_plays_per_hour` until the duration ends, the `play_fraction` of new calls once their
    play delay is over (also while draining) — however long earlier sessions take, each opening
    in its own greenlet; who opens it (double-click, storm, refresher, player) follows the
    [clients] fractions in the model's order. The profile `scenario` runs this one user instead
    of the closed-loop users, whose session rate depends on their count and think time."""

    fixed_count = 1

    def on_start(self) -> None:
        self.ctx = load_context()
        self.openings = gevent.pool.Group()
        self.openings.spawn(self.fresh_calls)

    def on_stop(self) -> None:
        self.openings.kill(block=False)

    def wait_time(self) -> float:
        return 0.0

    @task
    def archive_play(self) -> None:
        rate = self.ctx.scenario.clients.archive_plays_per_hour / 3600.0
        if rate <= 0 or self.ctx.draining():
            gevent.sleep(0.2)
            return
        self.ctx.sleep(self.ctx.rng.expovariate(rate))
        if not self.ctx.draining():
            business = self.ctx.rng.choice(self.ctx.fixtures["businesses"])
            self.openings.spawn(self.open, business, self.ctx.rng.choice(business["archive"])["call_sid"])

    def fresh_calls(self) -> None:
        while True:
            now = time.time()
            due = [f for f in self.ctx.fresh if f.open_at <= now]
            for f in due:
                self.ctx.fresh.remove(f)
                self.openings.spawn(self.open, f.business, f.call_sid)
            self.ctx.sleep(1.0)

    def open(self, business: dict, call_sid: str) -> None:
        c, r = self.ctx.scenario.clients, self.ctx.rng.random()
        if r < c.double_click_fraction:
            click_storm(self, self.ctx, business, call_sid, storm=False)
        elif r < c.double_click_fraction + c.storm_fraction:
            click_storm(self, self.ctx, business, call_sid, storm=True)
        elif r < c.double_click_fraction + c.storm_fraction + c.refresh_fraction:
            refresh_until_played(self, self.ctx, business, call_sid)
        else:
            play_session(self, self.ctx, business, call_sid, self.ctx.new_client("p"), 1, "player")
