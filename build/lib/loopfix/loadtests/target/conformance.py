"""The conformance plan (scenarios/conformance.toml): one scripted pass that exercises every
invariant observable from outside a service, in about a minute at time_scale 0.01.

On the scenario's clock (policy seconds from the load's start), through the target's adapter:
- 0 s: recordings whose every fetch fails (`doomed`: created — call-status first — and never
  clicked, so every fetch of them is a retry; the scenario's duration watches them past their
  whole schedule); recordings whose first fetches fail as `flaky` says (5xx answers), each
  then opened in the player;
- one at a time from 200 s, BLOCKING_EVERY_S apart and never in the outage: the `flaky` ones
  whose fetches hang (timeouts, stalled bodies: each holds a worker until the service's read
  timeout), and recordings served slowly (`slow`) under a click storm, so a service that takes
  a healthy slow download for a stuck one fetches it twice;
- 50 s: click storms on fresh recordings;
- 100 s: recording callbacks sent again 300 s later (a replay must fetch nothing);
- 150 s: recording callbacks sent unsigned (refused, never fetched);
- in the scenario's first all-workers outage (through the target's hooks), once the service
  can know no worker is alive: fresh recordings opened in the player (fail-fast), and a
  bulk-delete click storm with another tenant's ids mixed in, landing while its first job
  cannot run; without a workers outage the delete storm runs at 300 s on its own.
The stand-in is told up front which recording gets which faults (its `plans` and `doomed`).
"""
from __future__ import annotations

import gevent
import requests
from locust import FastHttpUser, task

from loopfix.harness.scenario import Outage
from loopfix.loadtests import players
from loopfix.loadtests.fixtures import new_sid, recording_url
from loopfix.loadtests.load_context import LoadContext
from loopfix.loadtests.target.users import (TargetOps, business, delete_click, foreign_leads, send_call_status,
                                    send_recording, watch_job)

PLAY_AFTER_S = 30.0  # policy seconds from a flaky recording's callback to its player's click
REPLAY_AFTER_S = 300.0
DELETE_WITHOUT_OUTAGE_AT_S = 300.0
OUTAGE_PLAYS_AFTER_S = 20.0  # past the service's liveness timeout into the outage
OUTAGE_DELETE_AT_S = 300.0  # into the outage


BLOCKING = {"timeout", "stall", "slow"}  # modes that hold one of the service's workers for minutes
BLOCKING_FIRST_AT_S = 200.0
BLOCKING_EVERY_S = 700.0  # longer than a blocked fetch (a client's read timeout, the slow body)


def blocking_slots(outage: Outage | None):
    """Start times for episodes that hold a worker for minutes, one at a time, none in the
    workers outage: a retry due meanwhile finds a free worker (on a service with two or more),
    so its lateness measures the service's scheduler, not its queue."""
    t = BLOCKING_FIRST_AT_S
    while True:
        if outage is not None and t + BLOCKING_EVERY_S > outage.at_s and t < outage.end_s:
            t = outage.end_s + 100.0
        yield t
        t += BLOCKING_EVERY_S


class ConformanceUser(TargetOps, FastHttpUser):
    """Runs the plan once (each episode in its own greenlet), then idles."""

    fixed_count = 1

    def on_start(self) -> None:
        super().on_start()
        self.started = False

    def wait_time(self) -> float:
        return 0.0

    @task
    def run_plan(self) -> None:
        if self.started:
            gevent.sleep(0.2)
            return
        self.started = True
        gevent.joinall([gevent.spawn(self.at, t, fn, *args) for t, fn, *args in self.episodes()])

    # ----------------------------------------------------------------------------- the plan

    def episodes(self) -> list[tuple]:
        ctx, c = self.ctx, self.ctx.scenario.conformance
        flaky = [(self.fresh(), modes.split(",")) for modes in c.flaky]
        slow = [self.fresh() for _ in range(c.slow)]
        doomed = [self.fresh() for _ in range(c.doomed)]
        requests.post(ctx.fixtures["stub_url"] + "/_config", timeout=10, json={
            "plans": {rec: modes for (_b, _call, rec), modes in flaky} | {rec: ["slow"] for _b, _call, rec in slow},
            "doomed": [rec for _b, _call, rec in doomed], "slow_s": c.slow_s}).raise_for_status()
        outage = next((o for o in ctx.scenario.outages if o.target == "workers" and o.workers == 0), None)
        slots = blocking_slots(outage)
        plan: list[tuple] = [(0.0, self.announce, *d, True) for d in doomed]
        plan += [(next(slots) if BLOCKING & set(modes) else 0.0, self.announce_and_play, *f) for f, modes in flaky]
        plan += [(next(slots), self.announce_and_storm, *s) for s in slow]
        plan += [(50.0, self.announce_and_storm, *self.fresh()) for _ in range(c.storms)]
        plan += [(100.0, self.replayed, *self.fresh()) for _ in range(c.replays)]
        plan += [(150.0, self.unsigned, *self.fresh()) for _ in range(c.unsigned)]
        if outage is not None:
            plays_at = outage.at_s + ctx.policy.heartbeat_timeout_s + OUTAGE_PLAYS_AFTER_S
            plan += [(plays_at, self.announce_and_play, *self.fresh(), 0.0) for _ in range(c.outage_recordings)]
            plan.append((outage.at_s + OUTAGE_DELETE_AT_S, self.delete_storm))
        else:
            plan.append((DELETE_WITHOUT_OUTAGE_AT_S, self.delete_storm))
        return plan

    def fresh(self) -> tuple[dict, str, str]:
        """(business, call_sid, recording_sid) for a new call, businesses in turn."""
        businesses = self.ctx.fixtures["businesses"]
        self.turn = getattr(self, "turn", -1) + 1
        return businesses[self.turn % len(businesses)], new_sid("CA"), new_sid("RE")

    def at(self, t: float, fn, *args) -> None:
        self.ctx.sleep(t - self.ctx.now())
        fn(*args)

    def url(self, b: dict, rec: str) -> str:
        return recording_url(self.ctx.fixtures["stub_url"], b["account_sid"], rec, "")

    # ----------------------------------------------------------------------------- episodes

    def announce(self, b: dict, call: str, rec: str, fails_by_design: bool = False) -> int:
        """Call-status first (the service knows the call), then the signed recording callback."""
        send_call_status(self.ctx, self.target, b, call)
        facts = {"fails_by_design": True} if fails_by_design else {}
        return send_recording(self.ctx, self.target, b, call, rec, self.url(b, rec), **facts)

    def announce_and_play(self, b: dict, call: str, rec: str, after_s: float = PLAY_AFTER_S) -> None:
        self.announce(b, call, rec)
        self.ctx.sleep(after_s)
        players.play_session(self, self.ctx, b, call, self.ctx.new_client("c"), 1, "player")

    def announce_and_storm(self, b: dict, call: str, rec: str) -> None:
        self.announce(b, call, rec)
        players.click_storm(self, self.ctx, b, call, storm=True)

    def replayed(self, b: dict, call: str, rec: str) -> None:
        self.announce(b, call, rec)
        self.ctx.sleep(REPLAY_AFTER_S)
        send_recording(self.ctx, self.target, b, call, rec, self.url(b, rec), replay=True)

    def unsigned(self, b: dict, call: str, rec: str) -> None:
        send_call_status(self.ctx, self.target, b, call)
        send_recording(self.ctx, self.target, b, call, rec, self.url(b, rec), signed=False)

    def delete_storm(self) -> None:
        ctx = self.ctx
        b = max(ctx.fixtures["businesses"], key=lambda x: len(x.get("lead_ids") or ()))
        own = self.target.list_leads(business(b)) or []
        if not own:
            return
        foreign = foreign_leads(ctx, b, ctx.scenario.conformance.foreign_ids)
        spread = ctx.scenario.bulk_delete.click_spread_s
        clicks = [gevent.spawn(self.delayed_click, ctx, b, own, foreign, ctx.rng.uniform(0.0, spread))
                  for _ in range(max(2, ctx.scenario.bulk_delete.clicks_per_request))]
        gevent.joinall(clicks)
        jobs = {g.value for g in clicks if g.value is not None}
        gevent.joinall([gevent.spawn(watch_job, ctx, self.target, b, job, ctx.scenario.bulk_delete.resume_after_s)
                        for job in jobs])

    def delayed_click(self, ctx: LoadContext, b: dict, own: list[int], foreign: list[int], after_s: float):
        ctx.sleep(after_s)
        return delete_click(ctx, self.target, b, own, foreign, "conformance")

