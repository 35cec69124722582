"""Redis keys with TTLs, on simulated time: just enough of SET NX PX / EXISTS / INCR / EXPIRE /
DEL / FLUSHALL for the model's dedup marks, fail-fast counters and the BulkGate lock (FLUSHALL:
a Redis restart, nothing on disk).

Every method takes `now` (policy seconds); a key whose expiry has passed does not exist. How a
rule uses these primitives — atomically or as check-then-set — is the model's business; the
TTLs themselves come from policy.py.
"""
from __future__ import annotations

import math
from typing import Any


PURGE_FLOOR = 1024  # keys held before the first purge of expired ones


class KeyStore:
    """A dict of key -> (value, expires_at); expires_at = inf keeps a key forever. A key is a
    string, or a tuple of its parts standing for one (sim.coordination's dedup keys).

    A key whose TTL ran out is gone for every operation, as in Redis; it is also dropped from
    memory whenever the store has doubled since the last purge (`purge`), so a long run holds
    the keys that live, not one per call it ever saw (a dedup mark per enqueue)."""

    def __init__(self) -> None:
        self._data: dict[Any, tuple[Any, float]] = {}
        self.purge_at = PURGE_FLOOR

    def purge(self, now: float) -> None:
        """Drop every expired key (what Redis's expiry does in the background)."""
        data = self._data
        for key in [k for k, (_, exp) in data.items() if exp <= now]:
            del data[key]
        self.purge_at = max(PURGE_FLOOR, 2 * len(data))

    def get(self, key: str, now: float) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= now:
            del self._data[key]
            return None
        return item[0]

    def exists(self, key: str, now: float) -> bool:
        return self.get(key, now) is not None

    def set(self, key: str, value: Any, now: float, ttl_s: float | None = None, nx: bool = False) -> bool:
        """SET [NX] [PX]: False (and nothing written) when nx and the key exists."""
        if nx:
            held = self._data.get(key)
            if held is not None and held[1] > now:  # exists (an expired key is overwritten below)
                return False
        if len(self._data) >= self.purge_at:
            self.purge(now)
        self._data[key] = (value, now + ttl_s if ttl_s is not None else math.inf)
        return True

    def delete(self, key: str, now: float) -> bool:
        existed = self.exists(key, now)
        self._data.pop(key, None)
        return existed

    def incr(self, key: str, now: float) -> int:
        """INCR: keeps the key's TTL, creates it with no TTL."""
        value = self.get(key, now)
        expires = self._data[key][1] if value is not None else math.inf
        self._data[key] = ((value or 0) + 1, expires)
        return (value or 0) + 1

    def expire(self, key: str, now: float, ttl_s: float) -> bool:
        value = self.get(key, now)
        if value is None:
            return False
        self._data[key] = (value, now + ttl_s)
        return True

    def ttl(self, key: str, now: float) -> float | None:
        """Seconds left, inf for no TTL, None when the key does not exist."""
        if not self.exists(key, now):
            return None
        return self._data[key][1] - now

    def flush(self) -> int:
        """FLUSHALL (what a restart of a Redis with nothing on disk amounts to); returns how
        many keys were held, expired ones included."""
        n = len(self._data)
        self._data.clear()
        return n
