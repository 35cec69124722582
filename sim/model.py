"""The SimPy model: the recording service's *environment* around policy.py's rules.

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
bulk delete — is a call into `reference_app.policy`. Where a fault is a race (check-then-set),
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
import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Generator

import simpy

from harness.scenario import Outage, Scenario
from reference_app import policy as P
from reference_app.flows.effects import Coord, CreateRun, Emit, Enqueue, FailStuck, drive
from reference_app.flows.locks import keep_lock, release_lock, take_lock
from reference_app.flows.enqueue import dedup_enqueue
from reference_app.flows.playback import PollCall, poll
from sim.coordination import ModelCoordination
from sim.process import Proc
from sim.records import recorders

REDIS_RTT_S = 0.001  # one Redis round trip: the gap inside a check-then-set
DB_COMMIT_S = 0.01  # one database commit (create a run row, insert a job row)
SWEEP_INTERVAL_S = 10.0  # the app sweeps for stuck runs every heartbeat interval
SAMPLE_INTERVAL_S = 60.0  # queue depth / utilisation sampling
LOCK_OP = "delete_leads_bulk"
# Twilio's RecordingUrl, as the webhook sends it; the odd one carries '.json' before the end.
RECORDING_URL = "https://api.twilio.com/2010-04-01/Accounts/AC{n}/Recordings/RE{n}.json"
ODD_RECORDING_URL = "https://api.twilio.com/2010-04-01/Accounts/AC{n}.json/Recordings/RE{n}.json"


def twilio_serves(raw_url: str, stored_url: str) -> str:
    """What Twilio returns for the stored URL of a recording whose webhook sent `raw_url`: audio
    for the recording's .mp3, the metadata JSON for its .json, 404 for anything else (a URL
    rewritten in the wrong place)."""
    if stored_url == raw_url[: -len(".json")] + ".mp3":
        return "audio"
    if stored_url == raw_url:
        return "json"
    return "missing"


class EnqueueError(Exception):
    """The enqueue raised (Redis paused, or retry=3 passed as an int)."""


class RedisUnavailable(Exception):
    """A request reached an unreachable Redis with no fallback (`orphan_runs_not_swept`: the
    seeds trusted Redis): the app's error handler answers 503 redis_unavailable, and the
    request records no enqueue.result."""


class JobQueue:
    """FIFO of queue entries with waiting workers: `put` hands an entry to the longest-waiting
    worker or queues it; `take` (a generator) returns the next entry."""

    def __init__(self, env: simpy.Environment):
        self.env = env
        self.items: deque[Any] = deque()
        self.waiters: deque[simpy.Event] = deque()

    def put(self, item: Any) -> None:
        while self.waiters:
            ev = self.waiters.popleft()
            if not ev.triggered:
                ev.succeed(item)
                return
        self.items.append(item)

    def push_front(self, item: Any) -> None:
        self.items.appendleft(item)

    def take(self) -> Generator[simpy.Event, Any, Any]:
        if self.items:
            return self.items.popleft()
        ev = self.env.event()
        self.waiters.append(ev)
        try:
            return (yield ev)
        finally:
            if not ev.triggered and ev in self.waiters:
                self.waiters.remove(ev)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(slots=True)
class Call:
    """A call with its recording: what Twilio holds and what the app stored."""

    call_sid: str
    recording_sid: str
    business_id: int
    has_url: bool
    calllog_at: float
    download_s: float
    archive: bool = False
    served: str = ""  # what Twilio answers for the stored URL: audio | json | missing ("" without one)
    file_ready: bool = False
    audio_ok: bool = False


@dataclass(slots=True)
class Run:
    """A RecordingRun row plus its RQ job: `token` is the RQ job id the row expects."""

    job_id: str
    call: Call
    job_type: str
    status: str
    created_at: float
    rq_retries_left: int
    token: int = 0
    started_at: float | None = None
    heartbeat_at: float | None = None
    next_attempt_at: float | None = None
    retry_count: int = 0
    fetch_retry_count: int = 0
    defer_count: int = 0
    alive_since: float | None = None  # a live worker heartbeats from here on

    def state(self, now: float, beat_s: float) -> P.RunState:
        hb = self.heartbeat_at
        if self.alive_since is not None and self.status == "running":
            hb = now - ((now - self.alive_since) % beat_s)
        return P.RunState(self.status, self.created_at, self.started_at, hb, self.next_attempt_at)


@dataclass(slots=True)
class LeadJob:
    """A BackgroundJob row of a bulk delete: `remaining` is the ids past its cursor."""

    job_id: str
    business_id: int
    remaining: list[int]
    queued_at: float
    status: str = "queued"  # queued | running | paused | completed | failed
    started: bool = False  # a run has started: the next one resumes (keeps the job's lock)
    heartbeat_at: float | None = None  # stamped by every batch
    processed: int = 0


@dataclass(slots=True)
class Entry:
    """One queue entry: a recording run (with the RQ token it was enqueued under) or a lead job."""

    run: Run | None = None
    token: int = 0
    lead_job: LeadJob | None = None


@dataclass(slots=True)
class Sample:
    t: float
    queue_depth: int
    busy_workers: int
    workers_up: int


@dataclass
class Model:
    """One simulation: build with a scenario and policy, `start()`, then run the env."""

    scenario: Scenario
    policy: P.Policy
    env: simpy.Environment = field(default_factory=simpy.Environment)
    history: list[dict[str, Any]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        s = self.scenario
        seed = s.seed
        self.rng_calls = random.Random(f"{seed}:calls")
        self.rng_twilio = random.Random(f"{seed}:twilio")
        self.rng_clients = random.Random(f"{seed}:clients")
        self.rng_leads = random.Random(f"{seed}:leads")
        self.queue = JobQueue(self.env)
        self.scheduled: list[tuple[float, int, Entry, str]] = []
        self._sched_seq = 0
        self.archive: list[Call] = []
        self.latest_run: dict[str, Run] = {}
        self.active_runs: dict[str, Run] = {}
        self.leads: dict[int, set[int]] = {}
        self.lead_jobs: dict[int, list[LeadJob]] = {}
        self._ids = 0
        self._clients = 0
        self.worker_down = [False] * s.workers.count
        self.worker_wake = [self.env.event() for _ in range(s.workers.count)]
        self.worker_procs: list[Proc] = []
        self.worker_job: list[Run | LeadJob | None] = [None] * s.workers.count
        self.busy = 0
        self.redis_paused = False
        self.redis_gone = False  # restarting: nothing reaches Redis, and nothing it held survives
        # runs no RQ job will run, with their token: Redis lost the job (since None), or a worker
        # popped it and crashed before starting it (RQ status 'dequeued' since then)
        self.orphans: dict[str, tuple[Run, int, float | None]] = {}
        self.twilio = s.twilio  # in force now: [twilio], or a degrade window over it
        self.scheduler_down = False
        self.crashed: list[tuple[Run, int]] = []
        # Recording URLs of one shape differ only in their ids: policy.normalise_recording_url
        # decides once per shape, on the shape with the ids as a placeholder (it never looks
        # inside an id), and so does what Twilio serves for the URL the app stored.
        self.served_by_shape = {
            odd: twilio_serves(shape, P.normalise_recording_url(shape, self.policy))
            for odd, shape in ((False, RECORDING_URL), (True, ODD_RECORDING_URL))
        }
        self.rec = recorders(self.env, self.history)  # rec.<kind>(proc, **fields) records one event
        self.all_down_since = 0.0
        self.beats = not self.policy.has("no_heartbeat")
        # the shared state, through the Coordination contract (sim.coordination)
        self.coord = ModelCoordination(self.policy, self._now, new_token=self.next_id, claims_refreshed=self.beats,
                                       alive=self.worker_alive)
        # Faults asked about on every job or request, read once (the Policy is frozen).
        has = self.policy.has
        self.download_idempotent = not has("download_not_idempotent")
        self.blocking_slot_loop = has("blocking_slot_loop")
        self.semaphore_in_api = has("semaphore_in_api")
        self.orphans_swept = not has("orphan_runs_not_swept")
        self.dedup_set_before_enqueue = has("dedup_set_before_enqueue")
        self.dedup_check_then_set = has("dedup_check_then_set")
        self.enqueue_dedup_ttl_s = P.enqueue_dedup_ttl(self.policy)
        self.retry_is_int: dict[str, bool] = {}
        self.job_overhead_s = s.workers.job_overhead_s
        self.transcribe_s = s.workers.transcribe_s
        # The sweep asks policy.stuck_reason about every active run every 10 s; most are waiting
        # behind a backlog. Ask it once about a run waiting since the beginning of time: when
        # even that one is not stuck while a worker is alive, no waiting run is (stuck-ness only
        # grows with the wait), and the sweep passes over waiting runs while one is.
        self.waiting_never_stuck_while_alive = all(
            P.stuck_reason(P.RunState(status, -math.inf, None, None, -math.inf), 0.0, self.policy, True) is None
            for status in P.WAITING_RUN_STATUSES)
        # Likewise for a running run with a live worker: its heartbeat is less than one
        # interval old (Run.state). Ask once about one started at the beginning of time whose
        # last beat is a whole interval old: when even that one is not stuck, no live run is.
        beat_s = self.policy.heartbeat_interval_s
        self.live_run_never_stuck = self.beats and P.stuck_reason(
            P.RunState("running", -math.inf, -math.inf, -beat_s, None), 0.0, self.policy, None) is None

    # ------------------------------------------------------------------ recording

    def _now(self) -> float:
        return self.env._now

    def spawn(self, gen: Generator) -> Proc:
        return Proc(self.env, gen)

    def next_id(self) -> str:
        self._ids += 1
        return str(self._ids)

    # ------------------------------------------------------------------ setup

    def start(self) -> None:
        s, env = self.scenario, self.env
        for i in range(s.workers.count):
            self.worker_procs.append(self.spawn(self.worker(i)))
        self.spawn(self.scheduler())
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

    # ------------------------------------------------------------------ environment draws

    def download_time(self, t: Any = None) -> float:
        """How long Twilio takes to serve one recording: lognormal, or the slow tail."""
        t = t or self.scenario.twilio
        if self.rng_twilio.random() < t.slow_fraction:
            return self.rng_twilio.uniform(*t.slow_range_s)
        return t.latency_median_s * math.exp(t.latency_sigma * self.rng_twilio.gauss(0.0, 1.0))

    def fetch_fails(self) -> bool:
        return self.rng_twilio.random() < self.twilio.fault_rate

    def calllog_delay(self) -> float:
        c = self.scenario.calllog
        if self.rng_calls.random() < c.late_fraction:
            return self.rng_calls.uniform(*c.late_delay_s)
        return self.rng_calls.uniform(*c.commit_delay_s)

    def new_call(self, archive: bool = False) -> Call:
        s, now, n, rng = self.scenario, self.env._now, self._ids + 1, self.rng_calls
        self._ids = n
        has_url = archive or rng.random() < s.recordings.url_fraction
        odd = rng.random() < s.recordings.odd_url_fraction
        num = f"{n:06d}"
        # positional, in Call's field order: call_sid, recording_sid, business_id, has_url,
        # calllog_at, download_s, archive, served (draws in the same order as ever)
        call = Call("CA" + num, "RE" + num, 1 + rng.randrange(s.businesses), has_url,
                    now if archive else now + self.calllog_delay(), self.download_time(), archive,
                    self.served_by_shape[odd] if has_url else "")
        return call

    # ------------------------------------------------------------------ arrivals and webhooks

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
            yield from webhook(call)

    def webhook(self, call: Call) -> Generator:
        """The recording status callback: record it and enqueue the full job (000). Handled
        in the arrival process itself: one webhook per call, nothing to race with (create_run
        skips the commit wait for it)."""
        self.rec.recording_created("web", call_sid=call.call_sid, recording_sid=call.recording_sid,
                  business_id=call.business_id, has_url=call.has_url)
        if not call.has_url:
            return
        try:
            reason = yield from self.dedup_enqueue(call, "full", "webhook", True)
        except RedisUnavailable:
            return  # 503: Twilio's callback is not retried in the model, the recording is lost
        reason = P.reported_enqueue_reason(reason, self.policy)
        self.rec.enqueue_result("web", call_sid=call.call_sid, reason=reason, status=204 if reason != "error" else 500)

    # ------------------------------------------------------------------ enqueue (001, 004)

    def create_run(self, call: Call, job_type: str, via: str) -> Generator:
        """Create the run row and put its job on the queue; EnqueueError when enqueue raises.
        The commit takes DB_COMMIT_S where a concurrent request could slip in (clicks); the
        webhook, one per call, has nothing to race with and skips the wait."""
        if via != "webhook":
            yield self.env.timeout(DB_COMMIT_S)
        self._ids = n = self._ids + 1  # next_id()
        job_id = str(n)
        run = Run(job_id, call, job_type, "queued", self.env._now, self.policy.enqueue_retry_max)
        self.latest_run[call.call_sid] = run
        if self.redis_paused and self.orphans_swept:  # Redis unreachable: paused, or restarting
            self.active_runs[job_id] = run  # the row is the record; the sweeper enqueues it
            self.orphans[job_id] = (run, run.token, None)
            return run
        retry_is_int = self.retry_is_int.get(via)
        if retry_is_int is None:  # policy.enqueue_retry_is_int, asked once per path
            retry_is_int = self.retry_is_int[via] = P.enqueue_retry_is_int(via, self.policy)
        if self.semaphore_in_api and job_type == "download_only" and not self.redis_paused \
                and not self.acquire_slot(run):
            run.status = "failed"  # before: the API takes the download slot, and none was free
            raise EnqueueError("no download slot free")
        if self.redis_paused or retry_is_int:
            run.status = "failed"
            raise EnqueueError("enqueue raised")
        self.active_runs[job_id] = run
        self.push(run)
        self.rec.job_enqueue("web", job_id=job_id, call_sid=call.call_sid, job_type=job_type, via=via)
        return run

    def enqueue_recording(self, call: Call, job_type: str, via: str, dedup: bool = True) -> Generator:
        """Seed 001's enqueue with its dedup key; returns 'enqueued' | 'duplicate' | 'error', as
        the caller sees it (policy.reported_enqueue_reason)."""
        reason = yield from self.dedup_enqueue(call, job_type, via, dedup)
        return P.reported_enqueue_reason(reason, self.policy)

    def dedup_enqueue(self, call: Call, job_type: str, via: str, dedup: bool) -> Generator:
        """Seed 001's enqueue (flows.enqueue.dedup_enqueue, as recordings.enqueue_recording drives it):
        'enqueued' | 'duplicate' | 'error'; RedisUnavailable when Redis cannot answer the dedup
        claim and nothing falls back on the database."""
        if dedup and self.redis_paused:  # Redis unreachable: paused, or restarting
            if self.orphans_swept:
                return (yield from self.pending_run(call, job_type, via))
            raise RedisUnavailable  # the dedup claim's own round trip fails, before any run exists
        flow, coord, result = dedup_enqueue(call.call_sid, job_type, via, dedup, self.policy), self.coord, None
        while True:
            try:
                effect = flow.send(result)
            except StopIteration as stop:
                return stop.value
            if effect.__class__ is CreateRun:
                try:
                    yield from self.create_run(call, job_type, via)
                    result = True
                except EnqueueError:
                    result = False
            else:
                result = getattr(coord, effect.op)(*effect.args)

    def pending_run(self, call: Call, job_type: str, via: str) -> Generator:
        """Redis unreachable with no dedup answer (recordings.pending_run): the call's active
        run is the duplicate, else a new queued run the sweeper will enqueue."""
        run = self.latest_run.get(call.call_sid)
        if run is not None and run.job_id in self.active_runs:
            return "duplicate"
        yield from self.create_run(call, job_type, via)
        return "enqueued"

    def push(self, run: Run, delay_s: float = 0.0, via: str = "retry") -> None:
        """Queue a run now, or park it for the scheduler to promote after `delay_s`; while
        Redis restarts the job goes nowhere (the run is an orphan)."""
        run.token = token = run.token + 1
        if self.redis_gone:
            self.orphans[run.job_id] = (run, token, None)
            return
        entry = Entry(run, token)
        if delay_s > 0:
            self._sched_seq += 1
            heapq.heappush(self.scheduled, (self.env._now + delay_s, self._sched_seq, entry, via))
        else:
            self.queue.put(entry)

    # ------------------------------------------------------------------ playback (002, 003)

    def playback(self, call: Call) -> Generator:
        """GET /api/recordings/file/<call_sid> → (status, retry_after_s, audio_ok): the app's
        flow (flows.playback.poll) driven in simulated time. Redis unreachable: a poll whose
        answer needs it gets 503."""
        p, now = self.policy, self.env._now
        if call.archive is False and now < call.calllog_at:
            return 404, None, False
        run = self.latest_run.get(call.call_sid)
        flow = poll(PollCall(call.business_id, call.call_sid, call.has_url, call.file_ready,
                             run.state(now, p.heartbeat_interval_s) if run else None), now, p)
        coord, send, result = self.coord, flow.send, None
        while True:
            try:
                effect = send(result)
            except StopIteration as stop:
                reply = stop.value
                break
            if effect.__class__ is Coord:
                if self.redis_paused:
                    flow.close()
                    return 503, float(P.REDIS_UNAVAILABLE_RETRY_AFTER_S), False
                result = getattr(coord, effect.op)(*effect.args)
            elif effect.__class__ is Enqueue:
                try:
                    result = yield from self.enqueue_recording(call, effect.job_type, effect.via, effect.dedup)
                except RedisUnavailable:  # Redis went away since the gate answered
                    flow.close()
                    return 503, float(P.REDIS_UNAVAILABLE_RETRY_AFTER_S), False
            elif effect.__class__ is Emit:
                result = getattr(self.rec, effect.kind.replace(".", "_"))("web", **effect.fields)
            elif effect.__class__ is FailStuck:
                result = self.fail_stuck(run, effect.reason)
            else:  # Gap: the round trip inside the seed's check-then-set
                result = yield self.env.timeout(REDIS_RTT_S)
        return reply.status, reply.retry_after_s, reply.serve and call.audio_ok

    def worker_alive(self) -> bool:
        """The workers' liveness key: set by any live worker, lapsing heartbeat_timeout_s after
        the last one stopped."""
        if self.redis_paused:
            return False
        if not all(self.worker_down):
            return True
        return self.env._now - self.all_down_since < self.policy.heartbeat_timeout_s

    def fail_stuck(self, run: Run, why: str) -> None:
        if run.status not in P.ACTIVE_RUN_STATUSES:
            return
        run.status = "failed"
        run.alive_since = None
        self.active_runs.pop(run.job_id, None)
        self.rec.job_stuck("web", job_id=run.job_id, call_sid=run.call.call_sid, reason=why)
        self.coord.clear_dedup(run.call.call_sid, run.job_type)

    def enqueue_api(self, call: Call) -> Generator:
        """POST .../recording/enqueue (001): reason → status by policy.enqueue_status."""
        if not call.has_url:
            return
        if call.file_ready:
            reason = "cached"
        else:
            try:
                reason = yield from self.enqueue_recording(call, "download_only", "enqueue_api")
            except RedisUnavailable:
                return  # 503 redis_unavailable
        self.rec.enqueue_result("web", call_sid=call.call_sid, reason=reason, status=P.enqueue_status(reason))

    # ------------------------------------------------------------------ workers, scheduler, sweeper

    def worker(self, w: int) -> Generator:
        name, queue, down = f"worker-{w}", self.queue, self.worker_down
        items = queue.items
        while True:
            entry = None
            try:
                while down[w] or self.redis_paused:
                    yield self.worker_wake[w]
                entry = items.popleft() if items else (yield from queue.take())
                if down[w] or self.redis_paused:
                    queue.push_front(entry)
                    continue
                self.busy += 1
                try:
                    if entry.lead_job is not None:
                        self.worker_job[w] = entry.lead_job
                        yield from self.lead_job(entry.lead_job, name)
                    else:
                        yield from self.recording_job(entry, w, name)
                finally:
                    self.busy -= 1
                    self.worker_job[w] = None
            except simpy.Interrupt:
                if entry is not None and entry.run is not None and entry.run.status == "running":
                    self.lose_in_crash(entry.run, w)
                elif entry is not None and entry.run is not None and entry.run.token == entry.token:
                    # popped, not started yet (the job's overhead): RQ's status stays 'dequeued' and
                    # nothing re-queues the job but the sweep (policy.run_orphaned)
                    self.orphans[entry.run.job_id] = (entry.run, entry.token, self.env._now)
                elif entry is not None and entry.lead_job is not None and entry.lead_job.status == "running":
                    # the run dies mid-batch (rolled back): the row stays 'running', the lock
                    # stays until its TTL, and the user resumes it once it is evidently dead
                    self.spawn(self.resume_later(entry.lead_job))

    def wake_workers(self) -> None:
        for i, ev in enumerate(self.worker_wake):
            if not ev.triggered:
                ev.succeed()
            self.worker_wake[i] = self.env.event()

    def scheduler(self) -> Generator:
        """The scheduler: every tick, move due parked jobs onto the queue. It is the workers' ticker
        thread (reference_app/worker.py), so nothing is promoted while every worker is down."""
        tick, env, scheduled, timeout = self.scenario.workers.scheduler_tick_s, self.env, self.scheduled, self.env.timeout
        worker_down = self.worker_down
        while True:
            yield timeout(tick)
            if self.scheduler_down or self.redis_paused or all(worker_down):
                continue
            while scheduled and scheduled[0][0] <= env._now:
                _, _, entry, via = heapq.heappop(scheduled)
                run = entry.run
                if run is not None and run.token == entry.token and run.status not in ("done", "failed"):
                    self.rec.job_enqueue("scheduler", job_id=run.job_id, call_sid=run.call.call_sid,
                              job_type=run.job_type, via=via)
                if entry.lead_job is not None or (run is not None and run.token == entry.token):
                    self.queue.put(entry)

    def sweeper(self) -> Generator:
        """cleanup_stuck_recording_jobs every heartbeat interval: a stuck run is re-queued under
        a new token, spending one retry, or failed when its retries are spent. The sweep runs in
        the workers' tickers, so not while every worker is down (nor while Redis is paused)."""
        p, env = self.policy, self.env
        while True:
            yield env.timeout(SWEEP_INTERVAL_S)
            if self.redis_paused or all(self.worker_down):
                continue
            if self.orphans:
                self.sweep_orphans()
            now, alive = env._now, self.worker_alive()
            skip_waiting, skip_live = alive and self.waiting_never_stuck_while_alive, self.live_run_never_stuck
            for run in list(self.active_runs.values()):
                waiting = run.status in P.WAITING_RUN_STATUSES
                if waiting and skip_waiting:
                    continue
                if skip_live and run.alive_since is not None and run.status == "running":
                    continue
                why = P.stuck_reason(run.state(now, p.heartbeat_interval_s), now, p, alive if waiting else None)
                if why is None:
                    continue
                over = P.stuck_run_over_budget(run.retry_count, p)
                self.rec.job_stuck("sweeper", job_id=run.job_id, call_sid=run.call.call_sid, reason=why)
                self.release_claims(run)
                run.alive_since = None
                if over:
                    run.status = "failed"
                    self.active_runs.pop(run.job_id, None)
                    continue
                run.status, run.retry_count, run.created_at, run.next_attempt_at = "queued", run.retry_count + 1, now, None
                self.push(run)
                self.rec.job_enqueue("sweeper", job_id=run.job_id, call_sid=run.call.call_sid,
                          job_type=run.job_type, via="requeue")

    def sweep_orphans(self) -> None:
        """jobs.requeue_orphan: a waiting run no RQ job will run is enqueued again once
        policy.run_orphaned says so (never with `orphan_runs_not_swept`)."""
        p, now = self.policy, self.env._now
        for job_id, (run, token, dequeued_at) in list(self.orphans.items()):
            if run.token != token or run.status not in P.WAITING_RUN_STATUSES or job_id not in self.active_runs:
                del self.orphans[job_id]  # re-queued since, or finished
                continue
            job_status = None if dequeued_at is None else "dequeued"
            if not P.run_orphaned(run.state(now, p.heartbeat_interval_s), job_status, now, p, dequeued_at):
                continue
            del self.orphans[job_id]
            run.status, run.created_at, run.next_attempt_at = "queued", now, None
            self.push(run)
            self.rec.job_enqueue("sweeper", job_id=run.job_id, call_sid=run.call.call_sid,
                      job_type=run.job_type, via="orphan")

    def sampler(self) -> Generator:
        while True:
            up = sum(1 for d in self.worker_down if not d) if not self.redis_paused else 0
            self.samples.append(Sample(self.env._now, len(self.queue), self.busy, up))
            yield self.env.timeout(SAMPLE_INTERVAL_S)

    # ------------------------------------------------------------------ the recording job

    def recording_job(self, entry: Entry, w: int, proc: str) -> Generator:
        run, env = entry.run, self.env
        assert run is not None
        if run.status in ("done", "failed") or run.token != entry.token:
            return  # superseded (re-queued as stuck) or finished: the app's job does nothing
        self.worker_job[w] = run
        yield env.timeout(self.job_overhead_s)
        call, now = run.call, env._now
        run.status, run.started_at, run.heartbeat_at = "running", now, now
        run.alive_since = now if self.beats else None
        self.rec.job_start(proc, job_id=run.job_id, call_sid=call.call_sid,
                           attempt=P.run_attempt(run.retry_count, run.fetch_retry_count), worker=proc)
        if now < call.calllog_at:
            self.not_ready(run, proc, "calllog")
            return
        if not self.semaphore_in_api:  # before: the API took the slot (download_only jobs), or none is taken
            ok = self.acquire_slot(run)
            if not ok and self.blocking_slot_loop:
                ok = yield from self.wait_for_slot(run, proc)
            self.rec.slot_acquire(proc, job_id=run.job_id, business_id=call.business_id, ok=ok)
            if not ok:
                yield from self.defer(run, proc)
                return
        # As the app's _download_with_slot: the slot is released last (its `finally`), after
        # the job's own end — a deferral for a recording in flight elsewhere included.
        if not self.claim_inflight(run):
            yield from self.defer(run, proc)
            self.release_slot(run, proc)
            return
        ok = yield from self.download(run, proc)
        if ok and run.job_type == "full" and self.transcribe_s[1] > 0:
            # the scenario's transcription (no step of the reference app) holds no claim or slot
            self.release_inflight(run)
            self.release_slot(run, proc)
            yield env.timeout(self.rng_twilio.uniform(*self.transcribe_s))
            self.finish(run, "done", proc)
            return
        if ok:
            self.finish(run, "done", proc)
        else:
            self.not_ready(run, proc, "fetch")
        self.release_inflight(run)
        self.release_slot(run, proc)

    def not_ready(self, run: Run, proc: str, phase: str) -> None:
        """CallLog ('calllog') or audio ('fetch') not there yet: policy.recording_retry_decision
        says what next, against that phase's budget."""
        p, call = self.policy, run.call
        d = P.recording_retry_decision(run.retry_count, p, phase, run.fetch_retry_count)
        if d.action == "fail":
            self.finish(run, "failed", proc)
            return
        if d.phase == "fetch":
            run.fetch_retry_count = d.attempt
        else:
            run.retry_count = d.attempt
        run.alive_since = None
        self.rec.job_retry(proc, job_id=run.job_id, call_sid=call.call_sid, attempt=d.attempt, delay=d.delay_s,
                  phase=d.phase)
        if d.action == "raise":
            # seed: status 'queued', then raise; RQ's Retry(max=3) re-runs it at once, or gives up.
            run.status = "queued"
            self.rec.job_end(proc, job_id=run.job_id, call_sid=call.call_sid, outcome="retry")
            if run.rq_retries_left > 0:
                run.rq_retries_left -= 1
                self.push(run)
            else:
                self.active_runs.pop(run.job_id, None)  # RQ's failed registry; the row stays 'queued'
            return
        run.status = "retry_wait"
        run.next_attempt_at = self.env._now + d.delay_s
        self.push(run, d.delay_s, via="retry")
        self.rec.job_end(proc, job_id=run.job_id, call_sid=call.call_sid, outcome="retry")

    def finish(self, run: Run, status: str, proc: str) -> None:
        run.status, run.alive_since = status, None
        self.active_runs.pop(run.job_id, None)
        self.rec.job_end(proc, job_id=run.job_id, call_sid=run.call.call_sid, outcome=status)

    def wait_for_slot(self, run: Run, proc: str) -> Generator:
        """`blocking_slot_loop`: no slot free, so wait for one in the worker, 60 x 1 s; returns
        whether it got one (the app's _take_slot). In `before` the worker never gets here:
        `semaphore_in_api` takes the slot in the API and the worker takes none."""
        for _ in range(int(self.policy.before_slot_wait_s)):
            self.rec.worker_sleep(proc, job_id=run.job_id, seconds=1.0, reason="slot")
            yield self.env.timeout(1.0)
            if self.acquire_slot(run):
                return True
        return False

    def acquire_slot(self, run: Run) -> bool:
        return self.coord.acquire_slot(run.call.business_id, run.job_id)

    def release_slot(self, run: Run, proc: str) -> None:
        freed = self.coord.release_slot(run.call.business_id, run.job_id)
        self.rec.slot_release(proc, job_id=run.job_id, business_id=run.call.business_id, freed=freed)

    def claim_inflight(self, run: Run) -> bool:
        return self.coord.claim_inflight(run.call.recording_sid, run.job_id)

    def release_inflight(self, run: Run) -> None:
        self.coord.release_inflight(run.call.recording_sid, run.job_id)

    def release_claims(self, run: Run) -> None:
        self.coord.release_inflight(run.call.recording_sid, run.job_id)
        self.coord.release_slot(run.call.business_id, run.job_id)

    def defer(self, run: Run, proc: str) -> Generator:
        """No free slot, or the recording in flight elsewhere (004): re-park with
        policy.slot_defer_delay; seed sleeps in the worker first."""
        p, env, call = self.policy, self.env, run.call
        delay = P.slot_defer_delay(run.defer_count, p)
        run.defer_count += 1
        run.status, run.next_attempt_at, run.alive_since = "queued", env._now + delay, None
        run.created_at = env._now
        if p.has("slot_defer_sleeps"):
            self.rec.worker_sleep(proc, job_id=run.job_id, seconds=delay, reason="slot")
            yield env.timeout(delay)
            self.push(run)
        else:
            self.push(run, delay, via="defer")
        self.rec.job_end(proc, job_id=run.job_id, call_sid=call.call_sid, outcome="deferred")

    def download(self, run: Run, proc: str) -> Generator:
        """Fetch the recording once; True when the file is (now) complete."""
        p, env, call = self.policy, self.env, run.call
        sid = call.recording_sid
        if self.download_idempotent and call.file_ready:
            self.rec.download_end(proc, job_id=run.job_id, call_sid=call.call_sid, recording_sid=sid,
                      ok=True, skipped=True, bytes=0)
            return True
        self.rec.download_start(proc, job_id=run.job_id, call_sid=call.call_sid, recording_sid=sid)
        served = call.served
        fails = self.fetch_fails()
        took = call.download_s if self.twilio is self.scenario.twilio else self.download_time(self.twilio)
        yield env.timeout(took if not fails and served != "missing" else min(took, 5.0))
        if fails or served == "missing":
            self.rec.download_end(proc, job_id=run.job_id, call_sid=call.call_sid, recording_sid=sid,
                      ok=False, skipped=False, bytes=0)
            return False
        size = 960_000 if served == "audio" else 1_200
        if self.download_idempotent and call.file_ready:
            # two racing downloads: the unique RecordingSid row says the other one completed first,
            # but the bytes were fetched twice (as in the app, skipped means nothing was fetched)
            self.rec.download_end(proc, job_id=run.job_id, call_sid=call.call_sid, recording_sid=sid,
                      ok=True, skipped=False, bytes=size)
            return True
        call.file_ready, call.audio_ok = True, served == "audio"
        self.rec.download_end(proc, job_id=run.job_id, call_sid=call.call_sid, recording_sid=sid,
                  ok=True, skipped=False, bytes=size)
        return True

    def lose_in_crash(self, run: Run, w: int) -> None:
        """A crashed worker's job: its heartbeat stops, its claims expire with their TTLs, and
        RQ re-runs it (same RQ id) when the worker comes back, if its retries are not spent."""
        now = self.env._now
        last_beat = run.state(now, self.policy.heartbeat_interval_s).heartbeat_at
        run.heartbeat_at, run.alive_since = last_beat, None
        self.coord.lapse_claims(run.call.business_id, run.call.recording_sid, run.job_id, last_beat or now)
        self.crashed.append((run, run.token))

    def rq_requeue_crashed(self) -> None:
        for run, token in self.crashed:
            if run.token != token or run.status not in ("running",):
                continue  # the sweeper already re-queued or failed it
            self.rec.job_end("rq", job_id=run.job_id, call_sid=run.call.call_sid, outcome="crashed")
            if run.rq_retries_left > 0:
                run.rq_retries_left -= 1
                self.queue.put(Entry(run=run, token=token))
                self.rec.job_enqueue("rq", job_id=run.job_id, call_sid=run.call.call_sid,
                          job_type=run.job_type, via="requeue")
        self.crashed = []

    # ------------------------------------------------------------------ outages

    def outage(self, o: Outage) -> Generator:
        env = self.env
        yield env.timeout(o.at_s)
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
        yield env.timeout(o.duration_s)
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
        self.wake_workers()
        self.rec.outage_end("env", target=o.target, how=o.how, workers=down)
        if o.how == "crash":
            # RQ notices the dead worker's abandoned jobs a little after the restart
            yield env.timeout(self.scenario.workers.crash_detect_s)
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

    # ------------------------------------------------------------------ clients

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
                yield from self.enqueue_api(call)
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
            status, retry_after, audio_ok = yield from self.playback(call)
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

    # ------------------------------------------------------------------ bulk delete (000, 003)

    def bulk_deleters(self) -> Generator:
        b = self.scenario.bulk_delete
        rate = b.requests_per_hour / 3600.0
        while True:
            yield self.env.timeout(self.rng_leads.expovariate(rate))
            if self.env._now >= self.scenario.duration_s:
                return
            business = 1 + self.rng_leads.randrange(self.scenario.businesses)
            if not self.leads[business]:
                continue
            self._clients += 1
            client = f"d{self._clients}"
            offsets = sorted(self.rng_leads.uniform(0.0, b.click_spread_s) for _ in range(b.clicks_per_request))
            last = 0.0
            for at in offsets:
                yield self.env.timeout(at - last)
                last = at
                self.spawn(self.bulk_delete_request(business, client))

    def active_lead_job(self, business: int) -> LeadJob | None:
        for job in self.lead_jobs[business]:
            if job.status in ("queued", "running", "paused"):
                return job
        return None

    def bulk_delete_request(self, business: int, client: str) -> Generator:
        """POST /api/leads/bulk-delete: return the active job (fixed: one atomic step; seed:
        check, then insert a commit later; before: always a new job)."""
        mode = P.bulk_dedup_mode(self.policy)
        existing = None
        if mode != "new_job":
            existing = self.active_lead_job(business)
            if existing is None and mode == "check_then_insert":
                yield self.env.timeout(DB_COMMIT_S)
        if existing is not None:
            self.rec.lead_job_request("web", business_id=business, job_id=existing.job_id, existing=True,
                      client=client)
            return
        job = LeadJob(self.next_id(), business, sorted(self.leads[business]), self.env._now)
        self.lead_jobs[business].append(job)
        self.rec.lead_job_request("web", business_id=business, job_id=job.job_id, existing=False, client=client)
        for lead in job.remaining:
            self.rec.lead_requested("web", business_id=business, lead_id=lead, job_id=job.job_id)
        self.queue.put(Entry(lead_job=job))

    def lock_flow(self, flow, proc: str) -> Any:
        """Run a lock flow (flows/locks.py) on the model's Coordination, recording as `proc`."""
        coord, rec = self.coord, self.rec
        return drive(flow, lambda e: getattr(coord, e.op)(*e.args) if e.__class__ is Coord
                     else getattr(rec, e.kind.replace(".", "_"))(proc, **e.fields))

    def end_lead_job(self, job: LeadJob, status: str, proc: str) -> None:
        job.status = status
        self.lock_flow(release_lock(job.business_id, LOCK_OP, job.job_id), proc)
        self.rec.lead_job_end(proc, business_id=job.business_id, job_id=job.job_id, status=status,
                  processed=job.processed)

    def lead_job(self, job: LeadJob, proc: str) -> Generator:
        """One run of delete_leads_job: lock (a resumed run keeps its job's lock), batches with
        throttle, skip gone leads, retry a failed batch and stop after consecutive failures,
        pause keeping the lock after the runtime budget, release at the end."""
        p, env, b = self.policy, self.env, self.scenario.bulk_delete
        if job.status != "queued":
            return  # finished, or already picked up by another run
        ok = self.lock_flow(take_lock(job.business_id, LOCK_OP, job.job_id, job.started), proc)
        if not ok:
            self.end_lead_job(job, "failed", proc)  # seed 003: release runs on every failure
            return
        job.status, job.started, job.heartbeat_at = "running", True, env._now
        self.rec.lead_job_start(proc, business_id=job.business_id, job_id=job.job_id)
        started, failures = env._now, 0
        leads = self.leads[job.business_id]
        while job.remaining:
            job.heartbeat_at = env._now
            batch = P.batches(job.remaining, p)[0]
            yield env.timeout(self.rng_leads.uniform(*b.batch_s))
            if self.rng_leads.random() < b.batch_failure_rate:
                # the batch's transaction rolled back: the same batch is tried again
                failures += 1
                if P.bulk_should_stop(failures, p):
                    self.end_lead_job(job, "failed", proc)
                    return
                yield env.timeout(p.bulk_throttle_s)
                continue
            present = [lead for lead in batch if lead in leads]  # leads already gone are skipped
            if P.bulk_batch_fails(len(batch), len(present), p):
                self.end_lead_job(job, "failed", proc)
                return
            failures = 0
            for lead in present:
                leads.discard(lead)
                self.rec.lead_delete(proc, business_id=job.business_id, lead_id=lead, job_id=job.job_id)
            job.processed += len(batch)
            job.remaining = job.remaining[len(batch):]
            if not self.lock_flow(keep_lock(job.business_id, LOCK_OP, job.job_id), proc):
                self.end_lead_job(job, "failed", proc)
                return
            if not job.remaining:
                break
            yield env.timeout(p.bulk_throttle_s)
            if P.bulk_should_pause(env._now - started, p):
                job.status = "paused"
                self.rec.lead_job_pause(proc, business_id=job.business_id, job_id=job.job_id,
                          processed=job.processed)
                self.spawn(self.resume_later(job))
                return
        self.end_lead_job(job, "completed", proc)

    def resume_later(self, job: LeadJob) -> Generator:
        """The user comes back every resume_after_s and POSTs resume until it is taken
        (policy.bulk_resume_decision: a paused job at once, a crashed one once it looks dead)."""
        p, env = self.policy, self.env
        while True:
            yield env.timeout(self.scenario.bulk_delete.resume_after_s)
            lock_held = self.coord.lock_holder(job.business_id, LOCK_OP) == job.job_id
            d = P.bulk_resume_decision(job.status, env._now, job.heartbeat_at, job.queued_at, lock_held, p)
            if d.kind == "finished":
                return
            if d.kind == "resume":
                job.status, job.queued_at = "queued", env._now
                self.queue.put(Entry(lead_job=job))
                return


def simulate_model(scenario: Scenario, policy: P.Policy, on_progress: Callable[[float], None] | None = None,
                   steps: int = 100) -> Model:
    """Build, start and run a model to duration_s + drain_s; `on_progress(fraction)` per step."""
    model = Model(scenario, policy)
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
