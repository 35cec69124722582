"""The frozen `Policy`: every constant of the system in one value, with its variant and faults.

Defaults are the seeds' numbers (DESIGN's table). Durations are *policy seconds*;
`time_scale` turns them into wall time (`wall`, `wall_ms`) and histories back (`policy_seconds`).
Construction validates and raises ValueError saying what to fix; building a Policy from loose
strings is `settings.make_policy`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from loopfix.reference_app.policy.faults import FAULTS, SEED_LOCK_TTL_S, VARIANT_FAULTS, VARIANTS, Variant


@dataclass(frozen=True)
class Policy:
    """Every constant of the system, in policy seconds, with the variant and its faults.

    `time_scale` multiplies every duration when it is turned into wall time (`wall()`);
    1.0 is real time, 0.01 runs the 1,860 s backoff in about 19 s.
    """

    variant: str = "fixed"
    extra_faults: frozenset[str] = frozenset()
    time_scale: float = 1.0
    # recording job (000): retries waiting for the CallLog; retries fetching its audio, a budget of their own
    max_recording_retries: int = 5
    max_fetch_retries: int = 5
    backoff_base_s: float = 60.0
    backoff_cap_s: float = 1200.0
    # RQ enqueue (001)
    enqueue_retry_max: int = 3
    enqueue_dedup_ttl_s: float = 120.0
    before_enqueue_dedup_ttl_s: float = 1800.0
    # playback (002, 003)
    playback_mark_ttl_s: float = 15.0
    retry_after_s: float = 3.0
    retry_after_recovery_s: float = 5.0
    retry_after_max_s: float = 60.0
    fail_fast_max_attempts: int = 3
    fail_fast_window_s: float = 600.0
    stuck_timeout_s: float = 300.0
    heartbeat_interval_s: float = 10.0
    heartbeat_timeout_s: float = 60.0
    # download semaphore (004)
    slots_per_business: int = 2
    inflight_ttl_s: float = 900.0
    before_inflight_ttl_s: float = 120.0
    queued_ttl_s: float = 1200.0
    slot_defer_s: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0, 40.0)
    before_slot_wait_s: float = 60.0
    # media downloads: redirects followed, each only to an allowed media host
    media_redirects_max: int = 3
    # bulk delete (003)
    bulk_batch_size: int = 50
    bulk_throttle_s: float = 0.2
    bulk_max_runtime_s: float = 300.0
    bulk_max_batch_failures: int = 10
    lock_ttl_s: tuple[tuple[str, float], ...] = SEED_LOCK_TTL_S
    # browser player (002)
    player_max_retries: int = 12
    player_base_s: float = 1.0
    player_cap_s: float = 20.0
    faults: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {self.variant!r}")
        unknown = sorted(set(self.extra_faults) - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(sorted(FAULTS))}")
        if not (self.time_scale > 0 and math.isfinite(self.time_scale)):
            raise ValueError(f"time_scale must be a positive number, not {self.time_scale!r}")
        if self.max_recording_retries < 0:
            raise ValueError("max_recording_retries must be >= 0")
        if self.max_fetch_retries < 0:
            raise ValueError("max_fetch_retries must be >= 0")
        if self.fail_fast_max_attempts < 1:
            raise ValueError("fail_fast_max_attempts must be >= 1")
        if self.slots_per_business < 1:
            raise ValueError("slots_per_business must be >= 1")
        # a plain string whether it came as "fixed" or Variant.FIXED: run.json and reprs stay the same
        object.__setattr__(self, "variant", Variant(self.variant).value)
        object.__setattr__(self, "faults", VARIANT_FAULTS[self.variant] | frozenset(self.extra_faults))

    def has(self, fault: str) -> bool:
        """True when `fault` is switched on, by the variant or by `extra_faults`."""
        if fault not in FAULTS:
            raise KeyError(f"unknown fault {fault!r}")
        return fault in self.faults

    def wall(self, policy_s: float) -> float:
        """Policy seconds → wall seconds under `time_scale`."""
        return policy_s * self.time_scale

    def wall_ms(self, policy_s: float) -> int:
        """Policy seconds → whole wall milliseconds for Redis PX/PEXPIRE, never below 1."""
        return max(1, int(round(policy_s * self.time_scale * 1000)))

    def policy_seconds(self, wall_s: float) -> float:
        """Wall seconds → policy seconds (how histories record time)."""
        return wall_s / self.time_scale
