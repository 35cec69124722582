"""A bound for the model's events/s ratio: the day scenario's happy path with no decisions.

Not a model: a measuring stick for `bench_sim.py --floor`. For each call of the scenario it does
only the work no model of the recording service can skip — the same random draws as the model
(arrival gap, URL, business, CallLog delay, download time, whether a player opens it), the same
recorders writing the same nine history events per downloaded recording (recording.created,
job.enqueue, enqueue.result, job.start, slot.acquire, download.start, download.end,
slot.release, job.end) plus a player's three, and three SimPy events per job (arrival, start
after the job overhead, end of the download), each a bare callback, not a process.

What it leaves out is everything the model exists for: policy.py (dedup keys and their TTLs,
retry and stuck decisions, the player's schedule and its retries, fail-fast), the scheduler's
tick, the stuck sweep, sampling, Twilio faults, outages, crashes and every seed-era fault.
Its events/s over a bare SimPy timeout loop's is therefore an upper bound on what the model's
ratio could be on this machine.

Run:  python benchmarks/bench_sim.py --floor   (prints it beside the model's ratio)
"""
from __future__ import annotations

import gc
import math
import random
import time
from collections import deque
from typing import Any

import simpy
from simpy.core import NORMAL
from simpy.events import Event

from loopfix.harness.scenario import Scenario
from loopfix.sim.records import recorders


class _Wake(Event):
    """A triggered event that calls `callback(value)`: SimPy's cheapest way to be woken."""

    def __init__(self, env: simpy.Environment, delay: float, callback: Any, value: Any = None):
        self.env, self.callbacks, self._value, self._ok = env, [callback], value, True
        env.schedule(self, NORMAL, delay)


def skeleton_run(s: Scenario) -> tuple[int, float]:
    """Run the skeleton over `s`'s duration + drain; (history events, wall seconds)."""
    env, history = simpy.Environment(), []
    rec = recorders(env, history)
    rng_calls, rng_twilio, rng_clients = (random.Random(f"{s.seed}:{n}") for n in ("calls", "twilio", "clients"))
    rate, overhead, tw, cl, cli = s.arrivals.calls_per_hour / 3600.0, s.workers.job_overhead_s, s.twilio, s.calllog, s.clients
    idle, queue, done, slots = deque(range(s.workers.count)), deque(), set(), {}
    ids = [0]

    def arrive(_ev: Event) -> None:
        if env._now >= s.duration_s:
            return
        n = ids[0] = ids[0] + 1
        num = f"{n:06d}"
        has_url = rng_calls.random() < s.recordings.url_fraction
        rng_calls.random()  # the odd-URL draw
        business = 1 + rng_calls.randrange(s.businesses)
        rng_calls.uniform(*cl.commit_delay_s)
        if rng_twilio.random() < tw.slow_fraction:
            took = rng_twilio.uniform(*tw.slow_range_s)
        else:
            took = tw.latency_median_s * math.exp(tw.latency_sigma * rng_twilio.gauss(0.0, 1.0))
        call = ("CA" + num, "RE" + num, business, took)
        if rng_clients.random() < cli.play_fraction:
            _Wake(env, rng_clients.uniform(*cli.play_delay_s), play, call)
        rec.recording_created("web", call_sid=call[0], recording_sid=call[1], business_id=business, has_url=has_url)
        if has_url:
            ids[0] += 1
            job = (str(ids[0]), call)
            if idle:
                _Wake(env, overhead, start, (idle.popleft(), job))
            else:
                queue.append(job)
            rec.job_enqueue("web", job_id=job[0], call_sid=call[0], job_type="full", via="webhook")
            rec.enqueue_result("web", call_sid=call[0], reason="enqueued", status=204)
        _Wake(env, rng_calls.expovariate(rate), arrive)

    def start(ev: Event) -> None:
        w, (job_id, call) = ev._value
        proc = f"worker-{w}"
        rec.job_start(proc, job_id=job_id, call_sid=call[0], attempt=1, worker=proc)
        slots.setdefault(call[2], set()).add(job_id)
        rec.slot_acquire(proc, job_id=job_id, business_id=call[2], ok=True)
        rec.download_start(proc, job_id=job_id, call_sid=call[0], recording_sid=call[1])
        rng_twilio.random()  # the fault draw
        _Wake(env, call[3], finish, (w, job_id, call, proc))

    def finish(ev: Event) -> None:
        w, job_id, call, proc = ev._value
        rec.download_end(proc, job_id=job_id, call_sid=call[0], recording_sid=call[1], ok=True, skipped=False,
                         bytes=960_000)
        slots[call[2]].discard(job_id)
        rec.slot_release(proc, job_id=job_id, business_id=call[2], freed=True)
        done.add(call[0])
        rec.job_end(proc, job_id=job_id, call_sid=call[0], outcome="done")
        if queue:
            _Wake(env, overhead, start, (w, queue.popleft()))
        else:
            idle.append(w)

    def play(ev: Event) -> None:
        call = ev._value
        ids[0] += 1
        client = f"u{ids[0]}"
        status = 200 if call[0] in done else 202
        rec.client_start(client, client=client, session=1, call_sid=call[0], role="player")
        rec.client_request(client, client=client, session=1, call_sid=call[0], status=status, retry_after=None,
                           n=1, audio_ok=status == 200)
        rec.client_end(client, client=client, session=1, call_sid=call[0], outcome="played", requests=1)

    _Wake(env, rng_calls.expovariate(rate), arrive)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        began = time.perf_counter()
        env.run(until=s.duration_s + s.drain_s)
        return len(history), time.perf_counter() - began
    finally:
        if was_enabled:
            gc.enable()
