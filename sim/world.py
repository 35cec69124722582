"""The model's world: the state one simulation holds — the database's rows (calls, runs, lead
jobs), RQ's queue and parked jobs, the workers' and Redis's up/down state, and the shared state
behind the Coordination contract (sim.coordination) — with the types it is made of.

Nothing here acts: actors (sim/actors/) change the world as time passes, the engine
(sim/engine.py) builds it and runs it.
"""
from __future__ import annotations

import heapq
import math
import sys
from collections import deque
from dataclasses import dataclass
from itertools import count
from typing import Any, Generator

import simpy
from simpy.core import NORMAL
from simpy.events import PENDING

from loopfix.reference_app import policy as P
from loopfix.reference_app.events import EVENT_FIELDS
from loopfix.sim.coordination import AskedOnce, ModelCoordination
from loopfix.sim.process import Env, Proc, Waiters, run_now
from loopfix.sim.records import recorder_name, recorders

new_tuple = tuple.__new__  # a NamedTuple built from its values, as its _make does, without a Python frame
# An instance made bare, its fields then set one by one where one is made on every call (Call,
# Run, Entry): calling a dataclass runs its __init__ in a fresh interpreter frame, about 700
# instructions more per object (measured, the three: full 1 -0.70 %). Such a site sets every
# field (tests compare what it makes with the class's own call), three to a line at most (a
# longer tuple assignment builds its tuple).
new_object = object.__new__
RunState = P.RunState
assert RunState._fields == ("status", "created_at", "started_at", "heartbeat_at", "next_attempt_at")
REDIS_RTT_S = 0.001  # one Redis round trip: the gap inside a check-then-set
DB_COMMIT_S = 0.01  # one database commit (create a run row, insert a job row)
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
        self.waiters = Waiters()  # idle workers (Procs), or events of take()

    def put(self, item: Any) -> None:
        waiters = self.waiters
        while waiters:
            ev = waiters.popleft()
            if ev.__class__ is Proc:
                ev.wake(item)
                return
            if ev._value is PENDING:  # not triggered: ev.succeed(item), inline
                ev._ok, ev._value = True, item
                env = self.env
                heapq.heappush(env._queue, (env._now, NORMAL, next(env._eid), ev))
                return
        self.items.append(item)

    def push_front(self, item: Any) -> None:
        self.items.appendleft(item)

    def wait(self) -> Waiters:
        """What a model process (sim.process.Proc) yields when no entry is queued: the line of
        waiters, to join by yielding it; the next `put` wakes the first with its entry, without an
        event."""
        return self.waiters

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
        # P.RunState(...), by new_tuple: once per poll and per run swept
        return new_tuple(RunState, (self.status, self.created_at, self.started_at, hb, self.next_attempt_at))


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


def _unreachable(latest: dict[str, Run]) -> list[Run]:
    """The runs of `latest` (call_sid -> run) that only `latest` holds, with calls only their run
    holds (reference counts: nothing else could reach them). None where the interpreter keeps
    no reference counts."""
    refs = getattr(sys, "getrefcount", None)
    if refs is None:
        return []
    return [run for run in latest.values() if refs(run) <= _RUN_REFS and refs(run.call) <= _CALL_REFS]


def _probe_refs() -> tuple[int, int]:
    """The reference counts _unreachable sees for a run held by its dict alone and its call
    held by that run alone (this interpreter's own counting: the loop variable, the argument)."""
    if not hasattr(sys, "getrefcount"):
        return 0, 0
    call = Call("CA", "RE", 0, False, 0.0, 0.0)
    latest = {"CA": Run("1", call, "full", "done", 0.0, 0)}
    del call
    refs = sys.getrefcount
    counts = [(refs(run), refs(run.call)) for run in latest.values()]
    return counts[0]


_RUN_REFS, _CALL_REFS = _probe_refs()


class World:
    """The state of one simulation (the engine's Model is a World with its actors)."""

    def init_world(self) -> None:
        s = self.scenario
        seed = s.seed
        self.init_draws(seed)
        self.queue = JobQueue(self.env)
        self.scheduled: list[tuple[float, int, Entry, str]] = []
        self._sched_seq = 0
        self.archive: list[Call] = []
        self.latest_run: dict[str, Run] = {}  # call_sid -> its latest run, while anything can ask
        self.latest_prune_at = 1024
        self.active_runs: dict[str, Run] = {}
        self.leads: dict[int, set[int]] = {}
        self.lead_jobs: dict[int, list[LeadJob]] = {}
        self.ids = count(1)  # the model's ids, one counter: calls, dedup tokens, runs, lead jobs
        self._clients = 0
        self.worker_down = [False] * s.workers.count
        self.worker_wake = [self.env.event() for _ in range(s.workers.count)]
        self.worker_procs: list[Proc] = []
        self.procs: list[Proc] = []  # every process spawned that may still be alive (dispose)
        self.procs_prune_at = 64
        self.worker_job: list[Run | LeadJob | None] = [None] * s.workers.count
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
        # a flow's Emit(kind, fields) is recorded by recorder_of[kind](proc, **fields)
        self.recorder_of: dict[str, Any] = {kind: getattr(self.rec, recorder_name(kind)) for kind in EVENT_FIELDS}
        self.all_down_since = 0.0
        self.beats = not self.policy.has("no_heartbeat")
        # the shared state, through the Coordination contract (sim.coordination)
        # (a dedup token: next_id's, from a C callable on the same counter: no Python frame per claim)
        self.coord = ModelCoordination(self.policy, self.env, new_token=map(repr, self.ids).__next__,
                                       claims_refreshed=self.beats, alive=self.worker_alive)
        # Faults asked about on every job or request, read once (the Policy is frozen).
        has = self.policy.has
        self.download_idempotent = not has("download_not_idempotent")
        self.semaphore_in_api = has("semaphore_in_api")
        self.orphans_swept = not has("orphan_runs_not_swept")
        policy = self.policy
        self.retry_is_int = AskedOnce(lambda via: P.enqueue_retry_is_int(via, policy))  # via -> retry=3 as an int?
        # an enqueue's reason -> the one its caller reports
        self.reported_reason = AskedOnce(lambda reason: P.reported_enqueue_reason(reason, policy))
        self.enqueue_retry_max = policy.enqueue_retry_max
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

    def record(self, kind: str, proc: str, fields: dict) -> None:
        """Record a flow's Emit(kind, fields) as `proc`."""
        self.recorder_of[kind](proc, **fields)

    def spawn(self, gen: Generator, now: bool = False) -> Proc:
        """Start a process now: at its start entry (Proc), or, `now`, its first step at once
        (sim.process.run_now: for a caller where nothing urgent can be due before it)."""
        proc = run_now(self.env, gen) if now else Proc(self.env, gen)
        procs = self.procs
        procs.append(proc)
        if len(procs) >= self.procs_prune_at:  # forget ended ones as the list doubles
            self.procs = procs = [p for p in procs if p.alive]
            self.procs_prune_at = max(64, 2 * len(procs))
        return proc

    def dispose(self) -> None:
        """After the run, when only its history is kept: end every process (its generator
        closed, its finally blocks run), drop the pending events and the model's state. The
        processes' frames, the model and its events refer to one another; broken here, the run
        is freed by reference counting at once rather than by the cyclic collector's passes over
        every Run and Call it made. The model cannot run again."""
        for proc in self.procs:
            if proc.alive:
                proc.alive = False
                proc.gen.close()
            proc.target = None  # a line or an event it waited on, which holds it in turn
        env = self.env
        if isinstance(env, Env):
            env.clear()  # the queue and the far heap (long sleeps' entries hold their processes)
        else:
            env._queue.clear()
        self.coord.dispose()
        self.__dict__.clear()

    def next_id(self) -> str:
        return str(next(self.ids))

    def worker_alive(self) -> bool:
        """The workers' liveness key: set by any live worker, lapsing heartbeat_timeout_s after
        the last one stopped."""
        if self.redis_paused:
            return False
        if not all(self.worker_down):
            return True
        return self.env._now - self.all_down_since < self.policy.heartbeat_timeout_s

    def push(self, run: Run, delay_s: float = 0.0, via: str = "retry") -> None:
        """Queue a run now, or park it for the ticker to promote after `delay_s` (sim.ticker); while
        Redis restarts the job goes nowhere (the run is an orphan)."""
        run.token = token = run.token + 1
        if self.redis_gone:
            self.orphans[run.job_id] = (run, token, None)
            return
        entry = new_object(Entry)  # Entry(run, token)
        entry.run, entry.token, entry.lead_job = run, token, None
        if delay_s > 0:
            self._sched_seq += 1
            due = self.env._now + delay_s
            heapq.heappush(self.scheduled, (due, self._sched_seq, entry, via))
            self.plan_tick(due)
        else:
            self.queue.put(entry)
        if len(self.latest_run) >= self.latest_prune_at:
            self.forget_unreachable_runs()

    def forget_unreachable_runs(self) -> None:
        """Drop from latest_run the runs nothing can ask about again, as it doubles: a run is read
        there only by a request about its call (latest_run[call.call_sid]), so a run that nothing
        else holds (no queue, parking, registry, orphan or worker) whose call nothing else holds
        (no player, no archive) is never read again; kept, every call and run of a day would
        stay in memory to the end. Exact: which runs go changes nothing the model does."""
        latest = self.latest_run
        for run in _unreachable(latest):
            del latest[run.call.call_sid]
        self.latest_prune_at = max(1024, 2 * len(latest))
