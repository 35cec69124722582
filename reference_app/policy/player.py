"""The browser audio player (seed 002): when it retries, how long it waits, how a session ends."""
from __future__ import annotations

from loopfix.reference_app.policy.core import Policy


def player_should_retry(status: int, retries_so_far: int, p: Policy) -> bool:
    """The seed-002 AudioPlayer: retry only on 202, at most player_max_retries times.

    before (player_unbounded): retry anything that is not 200/404, forever.
    """
    if p.has("player_unbounded"):
        return status not in (200, 206, 404)
    return status == 202 and retries_so_far < p.player_max_retries


def player_delay(retries_so_far: int, retry_after_s: float | None, p: Policy) -> float:
    """Wait before retry number retries_so_far+1: exponential from player_base_s, capped,
    never shorter than the server's Retry-After."""
    backoff = min(p.player_base_s * 2**retries_so_far, p.player_cap_s)
    return max(backoff, retry_after_s or 0.0)


OUTCOMES = {200: "played", 206: "played", 404: "not_found", 500: "worker_offline"}  # by the last status


def player_outcome(status: int) -> str:
    """Terminal outcome of a session that stopped on `status`."""
    return OUTCOMES.get(status, "gave_up")
