"""The Coordination contract's two adapters, each built with a clock the test moves.

`model`: sim.coordination.ModelCoordination over a fake clock. `redis`: the app's Coordinator
against this session's real Redis (flushed around each test), whose clock the test moves by
ageing every key: each TTL shortened by the step (a key whose TTL runs out is deleted) and each
sorted-set score (slot expiries, fail-fast attempt times: server milliseconds) moved back by it —
what the server would hold had the step passed. Steps are whole policy seconds at time_scale
1.0, so the few real milliseconds a test takes never cross a boundary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import redis

from loopfix.reference_app.coordination import Coordinator
from loopfix.reference_app.flows.coordination import Coordination
from loopfix.reference_app.policy import Policy
from loopfix.sim.coordination import ModelCoordination

ADAPTERS = ("redis", "model")


class FakeClock:
    """Policy seconds that move only when told; read as `_now`, as the model's adapter reads
    a simpy.Environment."""

    def __init__(self, t: float = 0.0):
        self._now = t

    def advance(self, seconds: float) -> None:
        self._now += seconds


# the sorted sets scored by server milliseconds (slot expiries, fail-fast attempts); RQ's and the
# delayed-job sets are scored otherwise and are left alone
SERVER_MS_SCORED = (b"loopfix:slots:", b"loopfix:failfast:")


class RedisClock:
    """Moves a Redis server's time by ageing its keys (see the module docstring)."""

    def __init__(self, conn: redis.Redis, policy: Policy):
        self.conn, self.p, self.t = conn, policy, 0.0

    def advance(self, seconds: float) -> None:
        self.t += seconds
        step_ms = self.p.wall_ms(seconds) if seconds > 0 else 0
        if step_ms == 0:
            return
        for key in self.conn.scan_iter(count=1000):
            if key.startswith(SERVER_MS_SCORED) and self.conn.type(key) == b"zset":
                for member, score in self.conn.zrange(key, 0, -1, withscores=True):
                    self.conn.zadd(key, {member: score - step_ms})
            ttl = self.conn.pttl(key)
            if ttl == -2 or ttl == -1:
                continue
            if ttl <= step_ms:
                self.conn.delete(key)
            else:
                self.conn.pexpire(key, ttl - step_ms)


@dataclass
class Subject:
    """One adapter under test and the clock that moves its time."""

    coord: Coordination
    advance: Callable[[float], None]


def build(adapter: str, policy: Policy, redis_url: str | None = None) -> Subject:
    if adapter == "model":
        clock = FakeClock()
        return Subject(ModelCoordination(policy, clock), clock.advance)
    conn = redis.Redis.from_url(redis_url)
    conn.flushdb()
    return Subject(Coordinator(conn, policy, liveness_trust_s=0.0), RedisClock(conn, policy).advance)
