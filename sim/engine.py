"""The SimPy model's engine: the recording service's *environment* around policy.py's rules.

What is modelled: call arrivals and the recording webhook (with the CallLog committing late),
an RQ-like queue with N workers, a scheduler that promotes delayed jobs on its tick and a
stuck-run sweeper, Twilio downloads (lognormal latency, a slow heavy tail, faults), Redis
keys with TTLs, worker outages (stop, crash — the in-flight job is lost and RQ re-runs it
when retries are left), Redis pauses and restarts (a restart loses every key and queued job;
the runs stay in the database and the sweeper enqueues them again by policy.run_orphaned),
Twilio degrade windows (latency and fault rate), browser players (seed 002), double-clickers,
click storms, page refreshers and bulk-deleters.

What is not: every *decision* — backoff, retry or fail, stuck or healthy, which status a
poll gets, fail-fast, dedup TTLs, slot deferral, the player's schedule, lock TTLs, pausing a
bulk delete — is a call into `loopfix.reference_app.policy`. Where a fault is a race (check-then-set),
the model makes the check and the set two steps `redis_rtt_s` / `db_commit_s` apart, so
concurrent clicks interleave; the fixed variant does one atomic step.

Where the seeds leave room, the app and the model read a fault the same way, and the reading
is a policy.py function both call: `retry_as_int` fails only the enqueue API's enqueues
(policy.enqueue_retry_is_int); `enqueue_every_click` skips both the playback mark and the
enqueue dedup (policy.playback_dedups).

Processes record events into `Model.history` through `Model.rec` (sim.records: one recorder per
event kind, generated from the schema); they never print.
"""
from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass, field
from typing import Any, Callable, Generator

import simpy

from loopfix.harness.scenario import Outage, Scenario
from loopfix.reference_app import policy as P
from loopfix.sim.actors.clients import Clients
from loopfix.sim.actors.deleters import Deleters
from loopfix.sim.actors.web import Web
from loopfix.sim.actors.workers import Workers
from loopfix.sim.draws import Draws
from loopfix.sim.process import Env
from loopfix.sim.ticker import Ticker
from loopfix.sim.world import SAMPLE_INTERVAL_S, Sample, World


@dataclass
class Model(World, Ticker, Draws, Web, Workers, Clients, Deleters):
    """One simulation: build with a scenario and policy, `start()`, then run the env."""

    scenario: Scenario
    policy: P.Policy
    env: simpy.Environment = field(default_factory=Env)
    history: list[dict[str, Any]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.init_world()
        self.init_ticker()

    def start(self) -> None:
        s = self.scenario
        for i in range(s.workers.count):
            self.worker_procs.append(self.spawn(self.worker(i)))
        self.spawn(self.sweeper())
        self.spawn(self.sampler())
        self.spawn(self.call_arrivals())
        for i in range(s.recordings.archive_calls):
            self.archive.append(self.new_call(archive=True))
        if s.clients.archive_plays_per_hour > 0 and self.archive:
            self.spawn(self.archive_plays())
        for b in range(1, s.businesses + 1):
            base = b * 1_000_000
            self.leads[b] = set(range(base + 1, base + 1 + s.bulk_delete.leads_per_business))
            self.lead_jobs[b] = []
        if s.bulk_delete.requests_per_hour > 0 and s.bulk_delete.leads_per_business > 0:
            self.spawn(self.bulk_deleters())
        for o in s.outages:
            self.spawn(self.outage(o))

    def sampler(self) -> Generator:
        """Every SAMPLE_INTERVAL_S: the queue's depth, the busy workers (those holding a job:
        worker_job, set while a job or a lead job runs) and the workers up."""
        jobs = self.worker_job
        while True:
            up = sum(1 for d in self.worker_down if not d) if not self.redis_paused else 0
            self.samples.append(Sample(self.env._now, len(self.queue), len(jobs) - jobs.count(None), up))
            yield SAMPLE_INTERVAL_S

    def outage(self, o: Outage) -> Generator:
        env = self.env
        yield o.at_s
        self.outages_on += 1
        targets = list(range(o.workers or self.scenario.workers.count))
        down = o.workers_down(self.scenario.workers.count)
        self.rec.outage_start("env", target=o.target, how=o.how, workers=down)
        if o.target == "workers":
            was_up = not all(self.worker_down)
            for w in targets:
                self.worker_down[w] = True
                if o.how == "crash" and self.worker_job[w] is not None:
                    self.worker_procs[w].interrupt("crash")
            if was_up and all(self.worker_down):
                self.all_down_since = env._now
        elif o.target == "redis":
            self.redis_paused = True
            if o.how == "redis_restart":
                self.lose_redis()
        elif o.target == "twilio":
            self.twilio = dataclasses.replace(self.twilio, **{
                k: v for k in ("latency_median_s", "fault_rate") if (v := getattr(o, k)) is not None})
        else:
            self.scheduler_down = True
        yield o.duration_s
        if o.target == "workers":
            for w in targets:
                self.worker_down[w] = False
        elif o.target == "redis":
            if self.redis_gone:
                self.coord.keys.flush()  # the fresh server starts empty
            self.redis_paused = self.redis_gone = False
        elif o.target == "twilio":
            self.twilio = self.scenario.twilio
        else:
            self.scheduler_down = False
        self.outages_on -= 1
        self.kick_ticker()  # before the workers wake, as the tick of this instant ran before them
        self.wake_workers()
        self.rec.outage_end("env", target=o.target, how=o.how, workers=down)
        if o.how == "crash":
            # RQ notices the dead worker's abandoned jobs a little after the restart
            yield self.scenario.workers.crash_detect_s
            self.rq_requeue_crashed()

    def lose_redis(self) -> None:
        """Redis killed (nothing on disk): every key, semaphore, fail-fast window, queued and
        parked job and RQ's registries are gone. A lost run job leaves its run an orphan in the
        database; a lost delete job is resumed by its user (policy.bulk_resume_decision)."""
        self.redis_gone = True
        self.coord.flush()
        self.crashed = []
        lost = list(self.queue.items) + [entry for _, _, entry, _ in self.scheduled]
        self.queue.items.clear()
        self.scheduled.clear()
        for entry in lost:
            if entry.lead_job is not None:
                self.spawn(self.resume_later(entry.lead_job))
            elif entry.run is not None and entry.run.token == entry.token:
                self.orphans[entry.run.job_id] = (entry.run, entry.token, None)


def simulate_model(scenario: Scenario, policy: P.Policy, on_progress: Callable[[float], None] | None = None,
                   steps: int = 100, history: Any = None) -> Model:
    """Build, start and run a model to duration_s + drain_s; `on_progress(fraction)` per step.
    `history`: where the records go (sim.records.recorders; default a list of dicts)."""
    model = Model(scenario, policy) if history is None else Model(scenario, policy, history=history)
    model.start()
    horizon = scenario.duration_s + scenario.drain_s
    # The history is millions of small dicts that live to the end: the cyclic collector
    # would re-scan them over and over for nothing, so it is paused for the run.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(1, steps + 1):
            model.env.run(until=horizon * i / steps)
            if on_progress is not None:
                on_progress(i / steps)
    finally:
        if was_enabled:
            gc.enable()
    return model
