"""The model's adapter of the Coordination contract (reference_app/flows/coordination.py):
the same operations as the app's Redis `Coordinator`, over sim.keys.KeyStore and a few dicts on
simulated time. tests/contract/ runs every case against both adapters.

Each operation is one atomic step at the clock's current time, `clock._now` in policy seconds
(the simulation's simpy.Environment, read as SimPy's own `now` does, or a test's fake clock):
the model has no round trips inside an operation. Where a fault is a race (check, then set), the
flow makes the check and the set two effects with a gap between them, and the model's driver
lets simulated time pass in the gap.

Two shortcuts of the model, both off in the contract tests: `claims_refreshed` (a live owner's
heartbeat refreshes its slot and in-flight claim every interval, so they never lapse while it
lives: held until `lapse_claims` says when its last beat was) and `alive` (worker liveness
computed from the workers' up/down state, as a key every live worker keeps beating would be).
"""
from __future__ import annotations

import itertools
import math
from collections import deque
from functools import partial
from typing import Any, Callable

from loopfix.reference_app.flows.coordination import PlaybackGate
from loopfix.reference_app.policy import PlaybackGateAsk, Policy, enqueue_dedup_ttl, inflight_ttl, lock_ttl
from loopfix.sim.keys import KeyStore

LIVENESS_KEY = "workers:alive"


class AskedOnce(dict):
    """key -> ask(key), asked once per key on first use, then a dict lookup: an answer that
    never changes for one of a few keys — an adapter's bound method by op name
    (ModelCoordination.ops), a frozen Policy's rule for a path or a reason (sim.world)."""

    def __init__(self, ask: Callable[[Any], Any]):
        super().__init__()
        self.ask = ask

    def __missing__(self, key: Any) -> Any:
        value = self[key] = self.ask(key)
        return value


class ModelCoordination:
    """Slots, dedup claims, the playback mark and fail-fast window, locks and liveness of one
    model run (or one contract test)."""

    def __init__(self, policy: Policy, clock: Any, *, new_token: Callable[[], str] | None = None,
                 claims_refreshed: bool = False, alive: Callable[[], bool] | None = None):
        self.p, self.clock = policy, clock
        counter = itertools.count(1)
        self.new_token = new_token or (lambda: f"t{next(counter)}")
        self.claims_refreshed = claims_refreshed
        if alive is not None:
            self.worker_alive = alive  # the model's liveness, asked directly
        self.keys = KeyStore()
        # op name -> bound method: what a model driver calls for a `(Coord, op, args)` effect
        # (`ops[op](*args)`), without a getattr and a bound method made on every effect
        self.ops = AskedOnce(partial(getattr, self))
        self.attempts: dict[str, deque[float]] = {}
        self.slots: dict[int, dict[str, float]] = {}
        self.inflight: dict[str, tuple[str, float]] = {}
        # Faults asked about on every request, read once (the Policy is frozen).
        self.dedup_ttl_s = enqueue_dedup_ttl(policy)
        self.claims_kept = policy.has("dedup_set_before_enqueue")
        self.incr_then_expire = policy.has("fail_fast_incr_then_expire")
        self.check_then_mark = policy.has("playback_check_then_mark")
        self.every_click = policy.has("enqueue_every_click")
        self.window_s = policy.fail_fast_window_s
        self.inflight_ttl_s = inflight_ttl(policy)
        self.slots_per_business = policy.slots_per_business
        # a slot can lapse: held with a TTL (claims not refreshed), or lapsed by lapse_claims
        self.slots_lapse = not claims_refreshed

    def flush(self) -> None:
        """Redis restarted with nothing on disk: every key, slot, claim and window is gone."""
        self.keys.flush()
        self.attempts.clear()
        self.slots.clear()
        self.inflight.clear()

    def dispose(self) -> None:
        """After a model run (World.dispose): `ops` holds bound methods of this adapter, a cycle
        through it; dropped here, the adapter, its keys and its clock (the env) are freed by
        reference counting as soon as the model lets go of them, not at the cyclic collector's
        next pass. The adapter cannot be used again."""
        self.__dict__.clear()

    # ----------------------------------------------------------------- enqueue dedup (001, 004)
    # The key "dedup:<call_sid>:<job_type>" is held as the tuple ("dedup", call_sid, job_type):
    # the same key, no string to build and hash on every enqueue (sim.keys).

    def claim_dedup(self, call_sid: str, job_type: str) -> str | None:
        # a claim kept after a failed enqueue (`dedup_set_before_enqueue`) needs no owner token
        token = "enqueued" if self.claims_kept else self.new_token()
        # SET NX PX, as KeyStore.set(..., nx=True) does it, inline: once per enqueue
        keys, key, now = self.keys, ("dedup", call_sid, job_type), self.clock._now
        data = keys._data
        held = data.get(key)
        if held is not None and held[1] > now:
            return None
        if len(data) >= keys.purge_at:
            keys.purge(now)
        data[key] = (token, now + self.dedup_ttl_s)
        return token

    def release_dedup(self, call_sid: str, job_type: str, token: str) -> bool:
        key, now = ("dedup", call_sid, job_type), self.clock._now
        return self.keys.get(key, now) == token and self.keys.delete(key, now)

    def dedup_held(self, call_sid: str, job_type: str) -> bool:
        return self.keys.exists(("dedup", call_sid, job_type), self.clock._now)

    def set_dedup(self, call_sid: str, job_type: str) -> None:
        self.keys.set(("dedup", call_sid, job_type), "enqueued", self.clock._now, self.dedup_ttl_s)

    def clear_dedup(self, call_sid: str, job_type: str) -> None:
        self.keys.delete(("dedup", call_sid, job_type), self.clock._now)

    # ----------------------------------------------------------------- playback mark, fail-fast
    # The mark "playback:<business_id>:<call_sid>" is held as ("playback", business_id, call_sid).

    def mark_playback(self, business_id: int, call_sid: str) -> bool:
        if self.every_click:
            return True
        key, now, ttl = ("playback", business_id, call_sid), self.clock._now, self.p.playback_mark_ttl_s
        if self.check_then_mark:
            if self.keys.exists(key, now):
                return False
            return self.keys.set(key, "1", now, ttl)
        return self.keys.set(key, "1", now, ttl, nx=True)

    def playback_marked(self, business_id: int, call_sid: str) -> bool:
        return self.keys.exists(("playback", business_id, call_sid), self.clock._now)

    def set_playback_mark(self, business_id: int, call_sid: str) -> None:
        self.keys.set(("playback", business_id, call_sid), "1", self.clock._now, self.p.playback_mark_ttl_s)

    def count_attempt(self, call_sid: str) -> int:
        now = self.clock._now
        if self.incr_then_expire:
            key = f"ff:{call_sid}"
            n = self.keys.incr(key, now)
            if n == 1:
                self.keys.expire(key, now, self.window_s)
            return n
        window = self.attempts.get(call_sid)
        if window is None:
            window = self.attempts[call_sid] = deque()
        edge = now - self.window_s
        while window and window[0] <= edge:
            window.popleft()
        window.append(now)
        return len(window)

    def playback_gate(self, business_id: int, call_sid: str, ask: PlaybackGateAsk) -> PlaybackGate:
        if not ask.round_trip:
            return PlaybackGate(None, None, 0)
        alive = self.worker_alive() if ask.read_alive else None
        if not (ask.gate_if_alive if alive else ask.gate_if_dead):
            return PlaybackGate(alive, None, 0)
        if not self.mark_playback(business_id, call_sid):
            return PlaybackGate(alive, False, 0)
        return PlaybackGate(alive, True, self.count_attempt(call_sid))

    # ----------------------------------------------------------------- slots and claims (004)

    def acquire_slot(self, business_id: int, owner: str, call_sid: str = "") -> bool:
        held = self.slots.get(business_id)
        if held is None:
            held = self.slots[business_id] = {}
        now = self.clock._now
        if self.slots_lapse:  # some slot has an expiry (else every one is held until released)
            for lapsed in [o for o, exp in held.items() if exp <= now]:
                del held[lapsed]
        if owner in held or len(held) < self.slots_per_business:
            held[owner] = math.inf if self.claims_refreshed else now + self.inflight_ttl_s
            return True
        return False

    def refresh_slot(self, business_id: int, owner: str) -> bool:
        held = self.slots.get(business_id, {})
        now = self.clock._now
        if held.get(owner, -math.inf) > now:
            held[owner] = math.inf if self.claims_refreshed else now + self.inflight_ttl_s
            return True
        return False

    def release_slot(self, business_id: int, owner: str) -> bool:
        held = self.slots.get(business_id)
        expiry = held.pop(owner, None) if held is not None else None
        return expiry is not None and expiry > self.clock._now

    def slots_in_use(self, business_id: int) -> int:
        now = self.clock._now
        return sum(1 for exp in self.slots.get(business_id, {}).values() if exp > now)

    def claim_inflight(self, recording_sid: str, owner: str) -> bool:
        holder = self.inflight.get(recording_sid)
        if holder is not None and holder[0] != owner and holder[1] > self.clock._now:
            return False
        expiry = math.inf if self.claims_refreshed else self.clock._now + self.inflight_ttl_s
        self.inflight[recording_sid] = (owner, expiry)
        return True

    def refresh_inflight(self, recording_sid: str, owner: str) -> bool:
        return self.claim_inflight(recording_sid, owner)

    def release_inflight(self, recording_sid: str, owner: str) -> bool:
        holder = self.inflight.get(recording_sid)
        if holder is None or holder[0] != owner:
            return False
        del self.inflight[recording_sid]
        return holder[1] > self.clock._now

    def lapse_claims(self, business_id: int, recording_sid: str, owner: str, last_beat: float) -> None:
        """`owner` died (claims_refreshed): its slot and claim lapse one in-flight TTL after its
        last beat, as the Redis keys its heartbeat no longer refreshes would."""
        until = last_beat + inflight_ttl(self.p)
        held = self.slots.get(business_id, {})
        if owner in held:
            held[owner] = min(held[owner], until)
            self.slots_lapse = True
        holder = self.inflight.get(recording_sid)
        if holder is not None and holder[0] == owner:
            self.inflight[recording_sid] = (owner, min(holder[1], until))

    # ----------------------------------------------------------------- owner-token locks (003)

    def acquire_lock(self, business_id: int, operation: str, owner: str, ttl_s: float | None = None) -> bool:
        ttl = lock_ttl(operation, self.p) if ttl_s is None else ttl_s
        return self.keys.set(f"bulk_gate:lock:{business_id}:{operation}", owner, self.clock._now, ttl, nx=True)

    def refresh_lock(self, business_id: int, operation: str, owner: str, ttl_s: float | None = None) -> bool:
        key, now = f"bulk_gate:lock:{business_id}:{operation}", self.clock._now
        ttl = lock_ttl(operation, self.p) if ttl_s is None else ttl_s
        if self.p.has("lock_refresh_unowned"):
            return self.keys.expire(key, now, ttl)
        return self.keys.get(key, now) == owner and self.keys.expire(key, now, ttl)

    def release_lock(self, business_id: int, operation: str, owner: str) -> tuple[bool, str | None]:
        key, now = f"bulk_gate:lock:{business_id}:{operation}", self.clock._now
        holder = self.keys.get(key, now)
        if self.p.has("lock_release_unowned") or holder == owner:
            return self.keys.delete(key, now), holder
        return False, holder

    def lock_holder(self, business_id: int, operation: str) -> str | None:
        return self.keys.get(f"bulk_gate:lock:{business_id}:{operation}", self.clock._now)

    # ----------------------------------------------------------------- worker liveness

    def worker_beat(self) -> None:
        self.keys.set(LIVENESS_KEY, "1", self.clock._now, self.p.heartbeat_timeout_s)

    def worker_alive(self) -> bool:
        return self.keys.exists(LIVENESS_KEY, self.clock._now)
