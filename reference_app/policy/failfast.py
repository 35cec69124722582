"""Fail-fast (seed 002): when a call's attempts in the window answer 500 worker_not_processing_queue.

The counter itself lives in the coordination store (one atomic script); this is the rule that
reads its count.
"""
from __future__ import annotations

from loopfix.reference_app.policy.core import Policy


def fail_fast_tripped(attempts_in_window: int, p: Policy) -> bool:
    """True when this attempt (counted, 1-based, in the window) exceeds the limit (002)."""
    if p.has("no_fail_fast"):
        return False
    return attempts_in_window > p.fail_fast_max_attempts
