"""Every Redis primitive the app uses, each atomic in the `fixed` variant: the Redis adapter of
the Coordination contract (reference_app/flows/coordination.py; the model's adapter is
sim/coordination.py, and tests/contract/ runs the same cases against both).

- enqueue dedup claim (001/004): claimed with SET NX PX *before* enqueue, released by its owner
  if the enqueue fails; `seed` checks, enqueues, then sets; `before` sets first and keeps it;
- playback in-progress mark (003): one SET NX PX; `seed` checks then marks;
- fail-fast counter (002): a sliding window (a sorted set of attempt times, server clock) in one
  script; `seed` does INCR then EXPIRE, two calls, a fixed window from the first attempt;
- the poll's gate: worker liveness, the playback mark and the fail-fast count in one script, so
  a poll costs at most one round trip (issue 8), and none while a worker is known alive (for at
  most the liveness key's remaining TTL, capped at LIVENESS_TRUST_S); the seed's racy faults
  keep their own calls;
- per-business download semaphore (004): a sorted set of owners scored by expiry, acquired,
  refreshed and released by owner token in scripts; a crashed owner's slot lapses by TTL;
- BulkGate lock (003): SET NX PX with an owner token, refresh and release compare-and-act in
  one script; `seed` releases with a plain DEL and refreshes with EXISTS then EXPIRE;
- delayed jobs: RQ's scheduled registry scores whole seconds, too coarse for a scaled clock
  (at time_scale 0.01 one second is 100 policy seconds), so jobs due later wait in a sorted set
  scored by float epoch seconds and `promote_due` moves them into their RQ queue atomically
  (WATCH/MULTI: each due job is enqueued exactly once however many workers tick).

Key names come only from the templates below. Durations arrive in policy seconds and are
turned into wall milliseconds by `Policy.wall_ms`.
"""
from __future__ import annotations

import os
import time
import uuid
from datetime import timezone
from typing import Callable, Iterable

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.utils import utcparse

from loopfix.reference_app.flows.coordination import PlaybackGate
from loopfix.reference_app.policy import PlaybackGateAsk, Policy, enqueue_dedup_ttl, inflight_ttl, lock_ttl

ENQUEUE_DEDUP_KEY = "loopfix:enqueue:{call_sid}:{job_type}"
PLAYBACK_MARK_KEY = "loopfix:playback:{business_id}:{call_sid}"
FAIL_FAST_KEY = "loopfix:failfast:{call_sid}"
SLOTS_KEY = "loopfix:slots:{business_id}:inflight"
QUEUED_KEY = "loopfix:slots:{business_id}:queued"
INFLIGHT_KEY = "loopfix:inflight:{recording_sid}"
LOCK_KEY = "loopfix:bulk_gate:lock:{business_id}:{operation}"
DELAYED_KEY = "loopfix:delayed:{queue}"
WORKERS_ALIVE_KEY = "loopfix:workers:alive"
ABSENT_KEY = "loopfix:absent:{job_id}"

def crash_point_on(name: str) -> bool:
    """Fault injection: does LOOPFIX_CRASH_POINTS (comma-separated) name `name`?"""
    return name in os.environ.get("LOOPFIX_CRASH_POINTS", "").split(",")


def crashpoint(name: str) -> None:
    """Fault injection: die here, as a SIGKILL would, when LOOPFIX_CRASH_POINTS names `name`."""
    if crash_point_on(name):
        os._exit(137)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


# --------------------------------------------------------------------------- scripts

_RELEASE_IF_OWNER = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('DEL', KEYS[1]); return {1, holder} end
return {0, holder or false}
"""

_REFRESH_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# Take a claim that is free or already ours (RQ re-runs a job whose horse died under the same
# id: its claim is its own, not another download's), or re-assert ours after Redis lost it.
_CLAIM_IF_FREE_OR_OWNED = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]); return 1 end
return 0
"""

# How long (wall seconds) one process trusts a "worker alive" answer without asking Redis again.
# The liveness key is only ever set with a TTL and never deleted, so it is certain to exist until
# its TTL runs out: the trust never outlasts that TTL. The cap bounds the one case where the key
# vanishes early — Redis restarted empty or flushed — to one second of a stale "alive".
LIVENESS_TRUST_S = 1.0

# Slots: ZSET member = owner, score = expiry in server ms. Expired owners are dropped first.
_LUA_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# The fail-fast window, sliding: the counter is a sorted set of attempts scored by server ms;
# an attempt at `now` drops those at or before now - window, adds itself (ARGV[2], a unique
# member) and counts. The key lives one window past the last attempt.
_COUNT_SLIDING = _LUA_NOW_MS + """
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], window)
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: liveness, playback mark, fail-fast attempts. ARGV: read liveness?, gate if alive?, gate if
# dead?, take the mark?, mark TTL ms, window ms, attempt member. Returns {alive, marked, count,
# liveness PTTL ms}; -1: not read/tried (PTTL -1: alive with no expiry, or not read).
_PLAYBACK_GATE = _LUA_NOW_MS + """
local alive, ttl = -1, -1
if ARGV[1] == '1' then
  ttl = redis.call('PTTL', KEYS[1])
  if ttl == -2 then alive = 0 else alive = 1 end
end
local gate = ARGV[3]
if alive == 1 then gate = ARGV[2] end
if gate ~= '1' then return {alive, -1, 0, ttl} end
if ARGV[4] == '1' and not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[5]) then return {alive, 0, 0, ttl} end
local window = tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
redis.call('ZADD', KEYS[3], now, ARGV[7])
redis.call('PEXPIRE', KEYS[3], window)
return {alive, 1, redis.call('ZCARD', KEYS[3]), ttl}
"""

_SLOT_ACQUIRE = _LUA_NOW_MS + """
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
  redis.call('ZREM', KEYS[2], ARGV[4])
  return 1
end
return 0
"""

_SLOT_REFRESH = _LUA_NOW_MS + """
local ttl = tonumber(ARGV[2])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > now then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
  return 1
end
return 0
"""

_SLOT_RELEASE = _LUA_NOW_MS + """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if score and tonumber(score) > now then return 1 end
return 0
"""

_MARK_QUEUED = _LUA_NOW_MS + """
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return redis.call('ZCARD', KEYS[1])
"""

# RQ's status of a job, and when it started; a job RQ still calls 'queued' that no queue list
# holds is 'dequeued': a worker popped it and has not started it (a fork away) — or died
# first, and then nothing will ever run it. KEYS[2] remembers since when it was seen so
# (client wall seconds, ARGV[2]) while the sightings go on; any other answer forgets it.
# LPOS is O(queue length); the sweep asks only about waiting runs.
_JOB_STATUS = """
local h = redis.call('HMGET', KEYS[1], 'status', 'started_at', 'origin')
if h[1] == 'queued' and h[3] then
  local queue = 'rq:queue:' .. h[3]
  if not redis.call('LPOS', queue, ARGV[1]) and not redis.call('LPOS', queue .. ':intermediate', ARGV[1]) then
    redis.call('SET', KEYS[2], ARGV[2], 'NX')
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
    return {'dequeued', redis.call('GET', KEYS[2])}
  end
end
redis.call('DEL', KEYS[2])
return {h[1], h[2]}
"""


class Coordinator:
    """The Redis primitives bound to one connection and one Policy (the Redis adapter of
    flows.coordination.Coordination).

    `liveness_trust_s`: how long a "worker alive" answer is trusted without asking again
    (LIVENESS_TRUST_S; the contract tests, which move Redis's clock, set 0)."""

    def __init__(self, conn: redis.Redis, policy: Policy, liveness_trust_s: float = LIVENESS_TRUST_S):
        self.r = conn
        self.p = policy
        self._release_if_owner = conn.register_script(_RELEASE_IF_OWNER)
        self._refresh_if_owner = conn.register_script(_REFRESH_IF_OWNER)
        self._claim_if_free_or_owned = conn.register_script(_CLAIM_IF_FREE_OR_OWNED)
        self._count_sliding = conn.register_script(_COUNT_SLIDING)
        self._slot_acquire = conn.register_script(_SLOT_ACQUIRE)
        self._slot_refresh = conn.register_script(_SLOT_REFRESH)
        self._slot_release = conn.register_script(_SLOT_RELEASE)
        self._mark_queued = conn.register_script(_MARK_QUEUED)
        self._playback_gate = conn.register_script(_PLAYBACK_GATE)
        self._job_status = conn.register_script(_JOB_STATUS)
        self.liveness_trust_s = liveness_trust_s
        self._alive_until = 0.0  # time.monotonic() until which a worker is known alive (liveness_trust_s)

    # ----------------------------------------------------------------- enqueue dedup (001, 004)
    # (the procedure around these is flows/enqueue.py)

    def claim_dedup(self, call_sid: str, job_type: str) -> str | None:
        """SET NX PX for the enqueue dedup TTL with a fresh owner token; the token, or None when
        a claim is held (a duplicate)."""
        token = uuid.uuid4().hex
        key = ENQUEUE_DEDUP_KEY.format(call_sid=call_sid, job_type=job_type)
        return token if self.r.set(key, token, nx=True, px=self.p.wall_ms(enqueue_dedup_ttl(self.p))) else None

    def release_dedup(self, call_sid: str, job_type: str, token: str) -> bool:
        """Drop the claim if `token` still holds it (compare-and-delete, one script)."""
        key = ENQUEUE_DEDUP_KEY.format(call_sid=call_sid, job_type=job_type)
        freed, _holder = self._release_if_owner(keys=[key], args=[token])
        return bool(freed)

    def dedup_held(self, call_sid: str, job_type: str) -> bool:
        return bool(self.r.exists(ENQUEUE_DEDUP_KEY.format(call_sid=call_sid, job_type=job_type)))

    def set_dedup(self, call_sid: str, job_type: str) -> None:
        key = ENQUEUE_DEDUP_KEY.format(call_sid=call_sid, job_type=job_type)
        self.r.set(key, "enqueued", px=self.p.wall_ms(enqueue_dedup_ttl(self.p)))

    def clear_dedup(self, call_sid: str, job_type: str) -> None:
        """Forget the dedup claim (a stuck run was failed: the next attempt may enqueue)."""
        self.r.delete(ENQUEUE_DEDUP_KEY.format(call_sid=call_sid, job_type=job_type))

    # ----------------------------------------------------------------- playback mark (003)

    def mark_playback(self, business_id: int, call_sid: str) -> bool:
        """True when this click may enqueue; False when another click did within the mark TTL."""
        if self.p.has("enqueue_every_click"):
            return True
        key = PLAYBACK_MARK_KEY.format(business_id=business_id, call_sid=call_sid)
        ttl_ms = self.p.wall_ms(self.p.playback_mark_ttl_s)
        if self.p.has("playback_check_then_mark"):
            if self.playback_marked(business_id, call_sid):
                return False
            self.set_playback_mark(business_id, call_sid)
            return True
        return bool(self.r.set(key, "1", nx=True, px=ttl_ms))

    def playback_marked(self, business_id: int, call_sid: str) -> bool:
        return bool(self.r.exists(PLAYBACK_MARK_KEY.format(business_id=business_id, call_sid=call_sid)))

    def set_playback_mark(self, business_id: int, call_sid: str) -> None:
        key = PLAYBACK_MARK_KEY.format(business_id=business_id, call_sid=call_sid)
        self.r.set(key, "1", px=self.p.wall_ms(self.p.playback_mark_ttl_s))

    # ----------------------------------------------------------------- fail-fast (002)

    def count_attempt(self, call_sid: str) -> int:
        """Count one job-creation attempt for `call_sid`; the attempts in the sliding window
        (now - window, now], this one included. seed (`fail_fast_incr_then_expire`): INCR, then
        EXPIRE on the first — a fixed window from the first attempt, and a crash between the two
        calls leaves a counter that never expires."""
        key = FAIL_FAST_KEY.format(call_sid=call_sid)
        window_ms = self.p.wall_ms(self.p.fail_fast_window_s)
        if self.p.has("fail_fast_incr_then_expire"):
            n = int(self.r.incr(key))
            crashpoint("fail_fast_after_incr")
            if n == 1:
                self.r.pexpire(key, window_ms)
            return n
        return int(self._count_sliding(keys=[key], args=[window_ms, uuid.uuid4().hex]))

    # ----------------------------------------------------------------- the poll's gate (002/003)

    def playback_gate(self, business_id: int, call_sid: str, ask: PlaybackGateAsk) -> PlaybackGate:
        """A poll's Redis work in at most one round trip (policy.playback_gate_ask says what it
        asks): read worker liveness when the decision depends on it; then, when the decision
        for that liveness passes the gate, take the playback mark (003; none under
        `enqueue_every_click`) and, if taken, count the fail-fast attempt (002). No
        `ask.round_trip`: no round trip at all.

        `playback_check_then_mark` and `fail_fast_incr_then_expire` (seed) keep their separate
        calls, so their races and their crash window stay reachable.
        """
        read_alive, gate_if_alive, gate_if_dead = ask.read_alive, ask.gate_if_alive, ask.gate_if_dead
        if not ask.round_trip:
            return PlaybackGate(None, None, 0)
        asked = time.monotonic()
        if read_alive and not gate_if_alive and asked < self._alive_until:
            return PlaybackGate(True, None, 0)  # known alive, and alive means no gate: no round trip
        if self.p.has("playback_check_then_mark") or self.p.has("fail_fast_incr_then_expire"):
            alive = self.worker_alive() if read_alive else None
            if not (gate_if_alive if alive else gate_if_dead):
                return PlaybackGate(alive, None, 0)
            if not self.mark_playback(business_id, call_sid):
                return PlaybackGate(alive, False, 0)
            return PlaybackGate(alive, True, self.count_attempt(call_sid))
        keys = [WORKERS_ALIVE_KEY, PLAYBACK_MARK_KEY.format(business_id=business_id, call_sid=call_sid),
                FAIL_FAST_KEY.format(call_sid=call_sid)]
        args = [int(read_alive), int(gate_if_alive), int(gate_if_dead), int(not self.p.has("enqueue_every_click")),
                self.p.wall_ms(self.p.playback_mark_ttl_s), self.p.wall_ms(self.p.fail_fast_window_s),
                uuid.uuid4().hex]
        alive, marked, attempts, ttl_ms = (int(x) for x in self._playback_gate(keys=keys, args=args))
        if alive == 1:  # the key existed at some instant after `asked`, with ttl_ms left then
            trust = self.liveness_trust_s
            self._alive_until = asked + (trust if ttl_ms < 0 else min(trust, ttl_ms / 1000))
        return PlaybackGate(None if alive < 0 else bool(alive), None if marked < 0 else bool(marked), attempts)

    # ----------------------------------------------------------------- download slots (004)

    def acquire_slot(self, business_id: int, owner: str, call_sid: str = "") -> bool:
        """Take one of the business's download slots for `owner` (idempotent for the same owner)."""
        ttl_ms = self.p.wall_ms(inflight_ttl(self.p))
        keys = [SLOTS_KEY.format(business_id=business_id), QUEUED_KEY.format(business_id=business_id)]
        return bool(self._slot_acquire(keys=keys, args=[owner, self.p.slots_per_business, ttl_ms, call_sid]))

    def refresh_slot(self, business_id: int, owner: str) -> bool:
        """Extend `owner`'s slot by the in-flight TTL; False when it has lapsed or is not held."""
        ttl_ms = self.p.wall_ms(inflight_ttl(self.p))
        return bool(self._slot_refresh(keys=[SLOTS_KEY.format(business_id=business_id)], args=[owner, ttl_ms]))

    def release_slot(self, business_id: int, owner: str) -> bool:
        """Free `owner`'s slot; True when it still held one (not lapsed). Never frees another
        owner's slot."""
        return bool(self._slot_release(keys=[SLOTS_KEY.format(business_id=business_id)], args=[owner]))

    def claim_inflight(self, recording_sid: str, owner: str) -> bool:
        """Claim the right to download `recording_sid` for the in-flight TTL (004); True when
        it is free or `owner` already holds it (the same RQ job re-run after its horse died).
        The owner's heartbeat refreshes it; a crashed owner's claim lapses by TTL."""
        key = INFLIGHT_KEY.format(recording_sid=recording_sid)
        return bool(self._claim_if_free_or_owned(keys=[key], args=[owner, self.p.wall_ms(inflight_ttl(self.p))]))

    def refresh_inflight(self, recording_sid: str, owner: str) -> bool:
        """Extend `owner`'s claim; re-take it when Redis lost it (restarted empty). False when
        another owner holds it."""
        return self.claim_inflight(recording_sid, owner)

    def release_inflight(self, recording_sid: str, owner: str) -> bool:
        freed, _holder = self._release_if_owner(keys=[INFLIGHT_KEY.format(recording_sid=recording_sid)], args=[owner])
        return bool(freed)

    def job_status(self, job_id: str | None) -> tuple[str | None, float | None]:
        """RQ's status of job `job_id` ('queued', 'started', ...) and when it started (wall epoch
        seconds, None if not yet); (None, None) when Redis has no such job. 'dequeued' (not an
        RQ status): RQ says queued but no queue holds it, seen so since the time given — a
        worker took it and died before starting it, if that lasts (policy.run_orphaned)."""
        if not job_id:
            return None, None
        keep_ms = self.p.wall_ms(4 * self.p.heartbeat_timeout_s)
        status, since = (_text(v) for v in self._job_status(
            keys=[Job.key_for(job_id), ABSENT_KEY.format(job_id=job_id)], args=[job_id, repr(time.time()), keep_ms]))
        if status == "dequeued":
            return status, float(since)
        return status, (utcparse(since).replace(tzinfo=timezone.utc).timestamp() if since else None)

    def slots_in_use(self, business_id: int) -> int:
        """How many of the business's slots are held (not lapsed) now."""
        key = SLOTS_KEY.format(business_id=business_id)
        now_ms = _server_ms(self.r)
        return int(self.r.zcount(key, f"({now_ms}", "+inf"))  # held: expiry after now

    def mark_queued(self, business_id: int, call_sid: str) -> int:
        """Note that a download for `call_sid` waits in the queue (queued TTL); returns how many wait."""
        ttl_ms = self.p.wall_ms(self.p.queued_ttl_s)
        return int(self._mark_queued(keys=[QUEUED_KEY.format(business_id=business_id)], args=[call_sid, ttl_ms]))

    # ----------------------------------------------------------------- worker liveness

    def worker_beat(self) -> None:
        """A worker is alive: keep the liveness key for one heartbeat timeout."""
        self.r.set(WORKERS_ALIVE_KEY, "1", px=self.p.wall_ms(self.p.heartbeat_timeout_s))

    def worker_alive(self) -> bool:
        return bool(self.r.exists(WORKERS_ALIVE_KEY))

    # ----------------------------------------------------------------- BulkGate lock (003)

    def acquire_lock(self, business_id: int, operation: str, owner: str, ttl_s: float | None = None) -> bool:
        """SET NX PX with `owner` as the value; the TTL is the seed-003 table's unless given."""
        key = LOCK_KEY.format(business_id=business_id, operation=operation)
        ttl_ms = self.p.wall_ms(lock_ttl(operation, self.p) if ttl_s is None else ttl_s)
        return bool(self.r.set(key, owner, nx=True, px=ttl_ms))

    def refresh_lock(self, business_id: int, operation: str, owner: str, ttl_s: float | None = None) -> bool:
        """Extend the lock's TTL if `owner` holds it (seed: whoever holds it). True if extended."""
        key = LOCK_KEY.format(business_id=business_id, operation=operation)
        ttl_ms = self.p.wall_ms(lock_ttl(operation, self.p) if ttl_s is None else ttl_s)
        if self.p.has("lock_refresh_unowned"):
            if self.r.exists(key):
                return bool(self.r.pexpire(key, ttl_ms))
            return False
        return bool(self._refresh_if_owner(keys=[key], args=[owner, ttl_ms]))

    def release_lock(self, business_id: int, operation: str, owner: str) -> tuple[bool, str | None]:
        """Release the lock if `owner` holds it. Returns (freed, holder before the call).

        seed (`lock_release_unowned`): a plain DEL frees whoever holds it.
        """
        key = LOCK_KEY.format(business_id=business_id, operation=operation)
        if self.p.has("lock_release_unowned"):
            holder = _text(self.r.get(key))
            return bool(self.r.delete(key)), holder
        freed, holder = self._release_if_owner(keys=[key], args=[owner])
        return bool(freed), _text(holder) if holder else None

    def lock_holder(self, business_id: int, operation: str) -> str | None:
        return _text(self.r.get(LOCK_KEY.format(business_id=business_id, operation=operation)))


# --------------------------------------------------------------------------- delayed jobs


def _server_ms(conn: redis.Redis) -> int:
    seconds, micros = conn.time()
    return int(seconds) * 1000 + int(micros) // 1000


def schedule_in(queue: Queue, job: Job, delay_wall_s: float) -> None:
    """Park `job` (created with `queue.create_job`) until `delay_wall_s` from now; a later
    `promote_due` enqueues it. A zero delay enqueues at once."""
    if delay_wall_s <= 0:
        queue.enqueue_job(job)
        return
    with queue.connection.pipeline() as pipe:
        job.set_status(JobStatus.SCHEDULED, pipeline=pipe)
        job.save(pipeline=pipe)
        pipe.zadd(DELAYED_KEY.format(queue=queue.name), {job.id: time.time() + delay_wall_s})
        pipe.execute()


def promote_due(queues: Iterable[Queue], now: float | None = None, batch: int = 100,
                on_promote: Callable[[Job], None] | None = None) -> int:
    """Enqueue every parked job whose time has come; returns how many this call moved.

    Each move is WATCH key → check it is still parked → MULTI: ZREM + enqueue → EXEC, so when
    several workers tick at once each job is enqueued by exactly one of them; `on_promote(job)`
    runs once per job this call moved (the worker records it in the history).
    """
    moved = 0
    for queue in queues:
        conn = queue.connection
        key = DELAYED_KEY.format(queue=queue.name)
        due = conn.zrangebyscore(key, "-inf", time.time() if now is None else now, start=0, num=batch)
        for raw in due:
            job_id = _text(raw)
            with conn.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    if pipe.zscore(key, job_id) is None:
                        continue
                    try:
                        job = Job.fetch(job_id, connection=conn)
                    except NoSuchJobError:
                        pipe.multi()
                        pipe.zrem(key, job_id)
                        pipe.execute()
                        continue
                    pipe.multi()
                    pipe.zrem(key, job_id)
                    queue.enqueue_job(job, pipeline=pipe)
                    pipe.execute()
                    moved += 1
                except redis.WatchError:
                    continue
            if on_promote is not None:
                on_promote(job)
    return moved


def parked_count(queue: Queue) -> int:
    return int(queue.connection.zcard(DELAYED_KEY.format(queue=queue.name)))



# --------------------------------------------------------------------------- the first click (issue 18)


def enqueue_noting_queued(coord: Coordinator, queue: Queue, job: Job, business_id: int, call_sid: str) -> None:
    """Enqueue a new job now and note its download as waiting (mark_queued) in ONE round trip:
    RQ's enqueue and the queued-set script in one MULTI/EXEC pipeline. The script goes as EVAL:
    EVALSHA in a pipeline makes redis-py ask SCRIPT EXISTS first, a round trip of its own."""
    with queue.connection.pipeline() as pipe:
        queue.enqueue_job(job, pipeline=pipe)
        pipe.eval(_MARK_QUEUED, 1, QUEUED_KEY.format(business_id=business_id), call_sid,
                  coord.p.wall_ms(coord.p.queued_ttl_s))
        pipe.execute()
