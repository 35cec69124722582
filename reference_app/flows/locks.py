"""The BulkGate lock's procedures (seed 003), once for the app's delete job and the model's:
take it (a resumed run keeps the lock its job held through the pause), keep it between batches
(refresh; if it lapsed and nobody took it, take it back), release it — each step recorded.
Whether a refresh or release checks the owner is the adapter's, by the Policy's faults
(`lock_refresh_unowned`, `lock_release_unowned`).
"""
from __future__ import annotations

from loopfix.reference_app.flows.effects import Coord, Emit, Flow


def take_lock(business_id: int, op: str, owner: str, resumed: bool) -> Flow:
    """A fresh run takes the lock with SET NX; a resumed one keeps its job's. True when held."""
    if resumed:
        return (yield from keep_lock(business_id, op, owner))
    ok = yield (Coord, "acquire_lock", (business_id, op, owner))
    yield (Emit, "lock.acquire", {"business_id": business_id, "op": op, "owner": owner, "ok": ok})
    return ok


def keep_lock(business_id: int, op: str, owner: str) -> Flow:
    """Refresh the lock; if that fails, take it back when it is free. False: another job holds
    it now, and this one must stop deleting."""
    ok = yield (Coord, "refresh_lock", (business_id, op, owner))
    yield (Emit, "lock.refresh", {"business_id": business_id, "op": op, "owner": owner, "ok": ok})
    if ok:
        return True
    ok = yield (Coord, "acquire_lock", (business_id, op, owner))
    yield (Emit, "lock.acquire", {"business_id": business_id, "op": op, "owner": owner, "ok": ok})
    return ok


def release_lock(business_id: int, op: str, owner: str) -> Flow:
    """Release the lock (compare-and-delete unless the fault says otherwise); True when freed."""
    freed, holder = yield (Coord, "release_lock", (business_id, op, owner))
    yield (Emit, "lock.release", {"business_id": business_id, "op": op, "owner": owner, "freed": freed,
                                "holder": holder})
    return freed
