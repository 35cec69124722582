"""Callers and browser users: call arrivals (with their recording webhook), archive plays, and
the people who open a recording — one player, a double-click, a click storm or a refresher —
each a seed 002 AudioPlayer that retries on 202 (policy.player_*)."""
from __future__ import annotations

from heapq import heappop, heappush
from math import inf, log
from typing import Any, Callable, Generator

from simpy.events import Event

from loopfix.reference_app.flows.player import Play, play_session
from loopfix.sim.world import Call


class Openings:
    """The recordings someone will open later, each at its time: kept here, in their own heap,
    with one alarm in the event queue at the earliest, rather than one process sleeping in the
    queue per opening (a day's hundred-odd pending openings deepened the queue that every event
    of the model goes through: 4 % of its instructions were that queue's comparisons).

    An opening at `t` is opened where its process would have woken, `(t, NORMAL)` in the queue:
    the alarm is an event at exactly `t` (as a sleep ending then is), and the opener it starts
    there runs at once, before anything else due then (it starts URGENT). Only an event due at
    that very float instant could tell the two apart."""

    __slots__ = ("at", "spawn", "opener", "due", "alarms", "first", "seq")

    def __init__(self, at: Callable[[float, Callable[[Event], Any]], Event], spawn: Callable[[Generator], Any],
                 opener: Callable[[Call], Generator]):
        self.at, self.spawn, self.opener = at, spawn, opener  # at: sim.ticker's _at, an event at exactly t
        self.due: list[tuple[float, int, Call]] = []  # (t, seq, call), a heap
        self.alarms: set[float] = set()  # the times of the alarms in the queue
        self.first = inf  # the earliest of them
        self.seq = 0

    def add(self, t: float, call: Call) -> None:
        """`call`'s recording is opened at `t`."""
        self.seq = seq = self.seq + 1
        heappush(self.due, (t, seq, call))
        if t < self.first:
            self.alarm(t)

    def alarm(self, t: float) -> None:
        """An event at exactly `t` that rings."""
        self.at(t, self.ring)
        self.alarms.add(t)
        if t < self.first:
            self.first = t

    def ring(self, event: Event) -> None:
        """An alarm at `t`: open what is due at `t`, and keep an alarm at the next opening."""
        t = event._value
        alarms, due = self.alarms, self.due
        alarms.discard(t)
        self.first = min(alarms) if alarms else inf
        while due and due[0][0] <= t:  # each opener's first step now (World.spawn's `now`), as its
            self.spawn(self.opener(heappop(due)[2]), True)  # start entry would run next
        if due and due[0][0] < self.first:
            self.alarm(due[0][0])


class Clients:
    """Arrivals and players."""

    def call_arrivals(self) -> Generator:
        s, env = self.scenario, self.env
        new_call, webhook, duration = self.new_call, self.webhook, s.duration_s
        plays, play_fraction = self.rng_clients.random, s.clients.play_fraction
        delay_lo, delay_hi = s.clients.play_delay_s
        spawn, open_recording = self.spawn, self.open_recording
        openings = Openings(self._at, spawn, open_recording)
        draw = self.rng_calls.random
        arrivals = s.arrivals
        steady = not arrivals.profile
        lambd = arrivals.calls_per_hour / 3600.0
        while True:
            if not steady:
                lambd = arrivals.rate_at(env._now) / 3600.0
            if lambd <= 0:
                nxt = [a for a, _ in arrivals.profile if a > env._now]
                if not nxt:
                    return
                yield nxt[0] - env._now
                continue
            # the gap: rng_calls.expovariate(lambd), inline (Random.expovariate's own formula)
            yield -log(1.0 - draw()) / lambd
            if env._now >= duration:
                return
            call = new_call()
            opened = plays() < play_fraction  # is this call's recording opened?
            if opened:
                # Someone opens it a uniform delay after the call (play_delay_s; rng_clients.uniform,
                # inline: Random.uniform's own formula), not before its CallLog exists.
                now = env._now
                at = now + (delay_lo + (delay_hi - delay_lo) * plays())
                if not at > call.calllog_at:  # max(call.calllog_at, at), inline
                    at = call.calllog_at
                openings.add(now + (at - now), call)  # where a sleep of at - now from now would end
            webhook(call, opened)

    def archive_plays(self) -> Generator:
        rate = self.scenario.clients.archive_plays_per_hour / 3600.0
        while True:
            yield self.rng_clients.expovariate(rate)
            if self.env._now >= self.scenario.duration_s:
                return
            call = self.archive[self.rng_clients.randrange(len(self.archive))]
            self.spawn(self.open_recording(call, 0.0))

    def open_recording(self, call: Call, after_s: float | None = None) -> Generator:
        """A user opens a recording: one player, a double-click, a storm, or a refresher; after
        `after_s` (an archive play's 0.0: after what else is due now), or at once."""
        c, rng = self.scenario.clients, self.rng_clients
        if after_s is not None:
            yield after_s
        self._clients += 1
        client = f"u{self._clients}"
        r = rng.random()
        if r < c.double_click_fraction:
            gap = rng.uniform(0.0, 0.25)
            self.spawn(self.player(call, client, 1, "double_clicker"))
            yield gap
            self.spawn(self.player(call, client, 2, "double_clicker"))
        elif r < c.double_click_fraction + c.storm_fraction:
            offsets = sorted(rng.uniform(0.0, c.storm_spread_s) for _ in range(c.storm_clicks))
            last = 0.0
            for i, at in enumerate(offsets, 1):
                yield at - last
                last = at
                self.spawn(self.player(call, client, i, "storm"))
        elif r < c.double_click_fraction + c.storm_fraction + c.refresh_fraction:
            for i in range(1, c.refreshes + 2):
                yield from self.post_enqueue(call)
                status = yield from self.player(call, client, i, "refresher")
                if status == 200:
                    return
                yield c.refresh_after_s
        else:
            yield from self.player(call, client, 1, "player")

    def player(self, call: Call, client: str, session: int, role: str) -> Generator:
        """Seed 002's AudioPlayer (flows.player.play_session) in simulated time; returns the
        status it stopped on."""
        flow, result = play_session(client, session, call.call_sid, role, self.policy), None
        send, recorder_of = flow.send, self.recorder_of
        while True:
            try:
                effect = send(result)
            except StopIteration as stop:
                return stop.value
            kind = effect.__class__
            if kind is tuple:  # (EmitValues, kind, values): the model's polls have no extra fields
                result = recorder_of[effect[1]](client, *effect[2])
            elif kind is Play:
                status, retry_after, audio_ok = yield from self.request_playback(call)
                result = (status, retry_after, audio_ok, None)
            else:  # Sleep: the backoff
                result = yield effect.seconds
