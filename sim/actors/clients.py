"""Callers and browser users: call arrivals (with their recording webhook), archive plays, and
the people who open a recording — one player, a double-click, a click storm or a refresher —
each a seed 002 AudioPlayer that retries on 202 (policy.player_*)."""
from __future__ import annotations

from typing import Generator

from loopfix.reference_app import policy as P
from loopfix.sim.world import Call


class Clients:
    """Arrivals and players."""

    def call_arrivals(self) -> Generator:
        s, env, timeout, draw = self.scenario, self.env, self.env.timeout, self.rng_calls.expovariate
        new_call, maybe_play, webhook, duration = self.new_call, self.maybe_play, self.webhook, s.duration_s
        while True:
            rate = s.arrivals.rate_at(env._now)
            if rate <= 0:
                nxt = [a for a, _ in s.arrivals.profile if a > env._now]
                if not nxt:
                    return
                yield env.timeout(nxt[0] - env._now)
                continue
            yield timeout(draw(rate / 3600.0))
            if env._now >= duration:
                return
            call = new_call()
            maybe_play(call)
            webhook(call)

    def maybe_play(self, call: Call) -> None:
        c = self.scenario.clients
        if self.rng_clients.random() >= c.play_fraction:
            return
        at = max(call.calllog_at, self.env._now + self.rng_clients.uniform(*c.play_delay_s))
        self.spawn(self.open_recording(call, at - self.env._now))

    def archive_plays(self) -> Generator:
        rate = self.scenario.clients.archive_plays_per_hour / 3600.0
        while True:
            yield self.env.timeout(self.rng_clients.expovariate(rate))
            if self.env._now >= self.scenario.duration_s:
                return
            call = self.archive[self.rng_clients.randrange(len(self.archive))]
            self.spawn(self.open_recording(call, 0.0))

    def open_recording(self, call: Call, after_s: float) -> Generator:
        """A user opens a recording: one player, a double-click, a storm, or a refresher."""
        c, rng, env = self.scenario.clients, self.rng_clients, self.env
        yield env.timeout(after_s)
        self._clients += 1
        client = f"u{self._clients}"
        r = rng.random()
        if r < c.double_click_fraction:
            gap = rng.uniform(0.0, 0.25)
            self.spawn(self.player(call, client, 1, "double_clicker"))
            yield env.timeout(gap)
            self.spawn(self.player(call, client, 2, "double_clicker"))
        elif r < c.double_click_fraction + c.storm_fraction:
            offsets = sorted(rng.uniform(0.0, c.storm_spread_s) for _ in range(c.storm_clicks))
            last = 0.0
            for i, at in enumerate(offsets, 1):
                yield env.timeout(at - last)
                last = at
                self.spawn(self.player(call, client, i, "storm"))
        elif r < c.double_click_fraction + c.storm_fraction + c.refresh_fraction:
            for i in range(1, c.refreshes + 2):
                yield from self.post_enqueue(call)
                status = yield from self.player(call, client, i, "refresher")
                if status == 200:
                    return
                yield env.timeout(c.refresh_after_s)
        else:
            yield from self.player(call, client, 1, "player")

    def player(self, call: Call, client: str, session: int, role: str) -> Generator:
        """Seed 002's AudioPlayer: retry on 202 with backoff (policy.player_*), stop otherwise."""
        p, env, cs = self.policy, self.env, call.call_sid
        self.rec.client_start(client, client=client, session=session, call_sid=cs, role=role)
        retries, n = 0, 0
        while True:
            status, retry_after, audio_ok = yield from self.request_playback(call)
            n += 1
            self.rec.client_request(client, client=client, session=session, call_sid=cs, status=status,
                      retry_after=retry_after, n=n, audio_ok=audio_ok)
            if not P.player_should_retry(status, retries, p):
                break
            delay = P.player_delay(retries, retry_after, p)
            retries += 1
            yield env.timeout(delay)
        self.rec.client_end(client, client=client, session=session, call_sid=cs,
                  outcome=P.player_outcome(status), requests=n)
        return status
