"""The workers' ticker as the model runs it: parked jobs (a backoff retry, a slot deferral) are
promoted onto the queue at the ticker's ticks, without an event per tick; and the stuck sweep
(sim/actors/workers.py's sweeper, on the same ticker in the app) sleeps while it cannot find
anything.

The app's ticker thread (reference_app/worker.py) wakes every `tick` and promotes whatever is
due (parking.promote_due); the model's ticks are at k x `workers.scheduler_tick_s` (k >= 1)
from the start. A parked job is therefore promoted at the first tick at or after its due time
at which the ticker runs — not while every worker is down, Redis is paused or the scheduler is
stopped. Ticks where nothing is due do nothing, so the model schedules only the ticks that
promote: one wake event at the tick of the earliest due job, created when the tick before it
passes (a "pre-wake" one tick earlier), exactly as a ticking loop would have created it, so
that it runs in the same order among the other events of its instant (the stuck sweep and the
sampler at whole seconds run before it, as they always did). When the ticker could not run
(the workers, Redis or the scheduler down), the end of that outage calls `kick_ticker`.

The stuck sweep runs every heartbeat interval. When a sweep found every active run waiting
behind live workers or running with a live heartbeat (the runs the sweep passes over), and no
orphan, nothing can become stuck or orphaned until an outage (a crash, a Redis restart, workers
down): a run's status moves between waiting and running while the workers live, and only an
outage stops a heartbeat, loses a job or makes the workers not alive. The sweeper then sleeps
until two sweeps before the next outage's first sweep (`sweeper_idle`), and ticks from there as
it always did, so the sweeps from then on are created where a ticking loop created them.
"""
from __future__ import annotations

import heapq
import math
from typing import Any, Callable, Generator

from simpy.core import NORMAL
from simpy.events import Event


class Ticker:
    """Promotion of parked jobs at the ticks where one is due (a mixin of the Model)."""

    def init_ticker(self) -> None:
        self.tick_s = self.scenario.workers.scheduler_tick_s
        self._wakes: set[float] = set()  # ticks with a wake (or its pre-wake) pending
        self.outage_starts = sorted(o.at_s for o in self.scenario.outages)
        self.outages_on = 0  # outages in progress (the engine counts them)

    def tick_at_or_after(self, t: float, every: float | None = None) -> float:
        """The first tick (k x `every`, k >= 1; default the scheduler's tick) at or after `t`."""
        tick = self.tick_s if every is None else every
        k = max(1, math.ceil(t / tick))
        if k > 1 and (k - 1) * tick >= t:
            k -= 1
        elif k * tick < t:
            k += 1
        return k * tick

    def plan_tick(self, due: float) -> None:
        """Make sure the ticker wakes at the first tick at or after `due`."""
        at = self.tick_at_or_after(due)
        if at in self._wakes:
            return
        self._wakes.add(at)
        before = at - self.tick_s
        self._at(before if before > self.env._now else at, self._pre_wake if before > self.env._now else self._wake)

    def _at(self, t: float, callback: Callable[[Event], Any] | None = None) -> Event:
        """An event at exactly `t` (its value), created now."""
        env = self.env
        ev = Event(env)
        ev._ok, ev._value = True, t
        if callback is not None:
            ev.callbacks.append(callback)
        heapq.heappush(env._queue, (t, NORMAL, next(env._eid), ev))
        return ev

    def _pre_wake(self, event: Event) -> None:
        """One tick before a wake: create the wake now, where a ticking loop would have."""
        self._at(event._value + self.tick_s, self._wake)

    def _wake(self, event: Event) -> None:
        self._wakes.discard(event._value)
        self.tick()

    def ticker_runs(self) -> bool:
        """The ticker runs in the workers' processes: not while all are down, nor while Redis
        is paused or the scheduler is stopped."""
        return not (self.scheduler_down or self.redis_paused or all(self.worker_down))

    def tick(self) -> None:
        """A tick: every parked job due by now goes onto the queue (recorded as job.enqueue by
        the scheduler while its run still expects it); then plan the tick of the next one."""
        if not self.ticker_runs():
            return  # the end of the outage kicks the ticker
        scheduled, now = self.scheduled, self.env._now
        while scheduled and scheduled[0][0] <= now:
            _, _, entry, via = heapq.heappop(scheduled)
            run = entry.run
            if run is not None and run.token == entry.token and run.status not in ("done", "failed"):
                self.rec.job_enqueue("scheduler", job_id=run.job_id, call_sid=run.call.call_sid,
                                     job_type=run.job_type, via=via)
            if entry.lead_job is not None or (run is not None and run.token == entry.token):
                self.queue.put(entry)
        if scheduled:
            self.plan_tick(scheduled[0][0])

    def kick_ticker(self) -> None:
        """The ticker may run again (an outage ended): wake at the first tick from now on at
        which a parked job is due."""
        if self.scheduled and self.ticker_runs():
            self.plan_tick(max(self.scheduled[0][0], self.env._now))

    def sweeper_idle(self) -> Generator:
        """The sweep found nothing to look at (see the module docstring): sleep until two sweeps
        before the next outage's first sweep, or for good when no outage is left; at once back
        to ticking while an outage is in progress or the next one is that near."""
        if self.outages_on:
            return
        now, every = self.env._now, self.policy.heartbeat_interval_s
        later = [a for a in self.outage_starts if a >= now]
        if not later:
            yield self.env.event()  # never triggered: nothing left to sweep for
            return
        wake = self.tick_at_or_after(later[0], every) - 2 * every
        if wake > now:
            yield self._at(wake)
