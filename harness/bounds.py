"""The bounds the checkers hold a history to that are more than one policy constant: the wait a
Retry-After grants once sent as HTTP says (whole wall seconds), the longest a bounded player
session may last, the backoff expected for any attempt, and which retry budget a retry spent."""
from __future__ import annotations

import math

from loopfix.harness.verdicts import Event
from loopfix.reference_app import policy as policy_mod
from loopfix.reference_app.policy import Policy


def expected_delay(attempt: int, p: Policy) -> float:
    """policy.backoff_delay for any attempt: past the cap the delay no longer grows, and a
    runaway attempt number (10**4 under infinite retries) must not overflow 2**(n-1)."""
    return policy_mod.backoff_delay(min(max(attempt, 1), 64), p)


def retry_phase_of(retry: Event) -> str:
    """The retry budget a job.retry spent; histories from before the fetch budget had only one."""
    phase = retry.get("phase") or "calllog"
    return phase if phase in policy_mod.RETRY_PHASES else "calllog"


def retry_after_granted_s(policy_s: float, p: Policy) -> float:
    """The wait a Retry-After of `policy_s` grants once it is sent as HTTP says — whole wall
    seconds, at least one — in policy seconds: at time_scale 0.01 every Retry-After up to 100
    policy seconds is "1", so a player honouring it waits 100."""
    return max(policy_s, math.ceil(max(p.wall(policy_s), 1e-9)) / p.time_scale)


def player_time_bound(p: Policy) -> float:
    """Longest a bounded player session may last: every retry waits at most the longest delay
    the player can be told (backoff or the largest Retry-After, as whole wall seconds), plus
    one more such wait."""
    most = retry_after_granted_s(p.retry_after_max_s, p)
    longest = [policy_mod.player_delay(k, most, p) for k in range(p.player_max_retries)]
    return sum(longest) + most
