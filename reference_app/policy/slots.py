"""The per-business download semaphore (seed 004): the defer schedule and the in-flight TTL."""
from __future__ import annotations

from loopfix.reference_app.policy.core import Policy


def slot_defer_delay(defer_count: int, p: Policy) -> float:
    """Delay before a job that found no free slot tries again: 2, 5, 10, 20, 40, 40, ... (004)."""
    return p.slot_defer_s[min(defer_count, len(p.slot_defer_s) - 1)]


def inflight_ttl(p: Policy) -> float:
    return p.before_inflight_ttl_s if p.has("short_inflight_ttl") else p.inflight_ttl_s
