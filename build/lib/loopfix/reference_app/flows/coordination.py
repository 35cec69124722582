"""The Coordination contract: the state the app's processes share through Redis, as one
`typing.Protocol` with two adapters — `loopfix.reference_app.coordination.Coordinator` (Redis, each
operation atomic in one command or Lua script) and `loopfix.sim.coordination.ModelCoordination` (the
model's in-memory keys over simulated time). tests/contract/test_coordination.py runs every
case against both.

Durations are policy seconds; each adapter reads its own clock (Redis: the server's; the model:
the simulation's). A Policy's faults change what an operation does in both adapters alike
(e.g. `lock_release_unowned`: release frees whoever holds the lock).

Fail-fast counts attempts in a **sliding** window: an attempt at t counts the attempts in
(t - fail_fast_window_s, t], itself included (the seed's '3 attempts per 10 minutes' read as
any 10 minutes, which is what the fail-fast checker verifies). `fail_fast_incr_then_expire`
(seed) keeps the seed's INCR-then-EXPIRE: a fixed window from the first attempt.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from loopfix.reference_app.policy import PlaybackGateAsk


@dataclass(frozen=True)
class PlaybackGate:
    """What one poll learned from the gate: worker liveness (None: not read), whether it took the
    playback mark (None: it did not try), and its fail-fast attempt count (0: not counted)."""

    alive: bool | None
    marked: bool | None
    attempts: int


@runtime_checkable
class Coordination(Protocol):
    """Slots, dedup claims, the playback gate and its fail-fast counter, owner-token locks and
    worker liveness. Every method is one atomic step unless its fault says otherwise."""

    # enqueue dedup (001, 004): claim first, release the claim if the enqueue fails
    def claim_dedup(self, call_sid: str, job_type: str) -> str | None:
        """Claim the dedup key for the enqueue TTL; the owner token, or None (a duplicate)."""

    def release_dedup(self, call_sid: str, job_type: str, token: str) -> bool:
        """Drop the claim if `token` still holds it (the enqueue failed); True when dropped."""

    def dedup_held(self, call_sid: str, job_type: str) -> bool:
        """Is a dedup key held (the seed's check before its enqueue)?"""

    def set_dedup(self, call_sid: str, job_type: str) -> None:
        """Set the dedup key unconditionally for the TTL (the seed's set after its enqueue)."""

    def clear_dedup(self, call_sid: str, job_type: str) -> None:
        """Forget the dedup key (a stuck run was failed: the next attempt may enqueue)."""

    # the playback mark (003) and fail-fast (002)
    def mark_playback(self, business_id: int, call_sid: str) -> bool:
        """Take the playback mark for its TTL (SET NX): True when this click may enqueue."""

    def playback_marked(self, business_id: int, call_sid: str) -> bool:
        """Is the mark held (the seed's check before its mark)?"""

    def set_playback_mark(self, business_id: int, call_sid: str) -> None:
        """Set the mark unconditionally for its TTL (the seed's mark after its check)."""

    def count_attempt(self, call_sid: str) -> int:
        """Count one job-creation attempt; the number of attempts in the window, this one included."""

    def playback_gate(self, business_id: int, call_sid: str, ask: PlaybackGateAsk) -> PlaybackGate:
        """A poll's shared-state work in one step: liveness if asked, then the mark and the count
        when the decision for that liveness is gated (policy.playback_gate_ask)."""

    # download slots and the in-flight claim (004)
    def acquire_slot(self, business_id: int, owner: str, call_sid: str = "") -> bool:
        """Take one of the business's slots for the in-flight TTL (idempotent for one owner)."""

    def refresh_slot(self, business_id: int, owner: str) -> bool:
        """Extend `owner`'s slot; False when it lapsed or was never held."""

    def release_slot(self, business_id: int, owner: str) -> bool:
        """Free `owner`'s slot; True when it still held one. Never frees another owner's."""

    def slots_in_use(self, business_id: int) -> int:
        """How many of the business's slots are held (not lapsed) now."""

    def claim_inflight(self, recording_sid: str, owner: str) -> bool:
        """Claim the recording's download; True when free or already `owner`'s."""

    def refresh_inflight(self, recording_sid: str, owner: str) -> bool:
        """Extend (or re-take) `owner`'s claim; False when another owner holds it."""

    def release_inflight(self, recording_sid: str, owner: str) -> bool:
        """Drop the claim if `owner` holds it (compare-and-delete)."""

    # owner-token locks (003)
    def acquire_lock(self, business_id: int, operation: str, owner: str, ttl_s: float | None = None) -> bool:
        """SET NX for the lock TTL (policy.lock_ttl unless given)."""

    def refresh_lock(self, business_id: int, operation: str, owner: str, ttl_s: float | None = None) -> bool:
        """Extend the lock if `owner` holds it (`lock_refresh_unowned`: whoever holds it)."""

    def release_lock(self, business_id: int, operation: str, owner: str) -> tuple[bool, str | None]:
        """Free the lock if `owner` holds it (`lock_release_unowned`: whoever holds it);
        (freed, holder before the call)."""

    def lock_holder(self, business_id: int, operation: str) -> str | None:
        """The lock's owner token, None when free."""

    # worker liveness
    def worker_beat(self) -> None:
        """A worker is alive: keep the liveness key for one heartbeat timeout."""

    def worker_alive(self) -> bool:
        """Has a worker beaten within the heartbeat timeout?"""
