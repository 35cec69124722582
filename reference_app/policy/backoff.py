"""Recording-job retries (seed 000): the backoff schedule, the two retry budgets, the decision.

A recording run that finds no CallLog yet ('calllog' phase) or whose audio fetch failed
('fetch' phase) retries on `backoff_delay`'s schedule — 60, 120, 240, 480, 960 s by default —
each phase with its own budget (`shared_retry_budget`: one budget, as in the seeds).
"""
from __future__ import annotations

import math
from typing import NamedTuple

from loopfix.reference_app.policy.core import Policy


def backoff_delay(attempt: int, p: Policy) -> float:
    """Delay before retry `attempt` (1-based): base * 2^(attempt-1), capped (000). Any attempt
    number is fine: past a float's range (attempt ~1000, infinite retries) it is the cap."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    try:
        return min(math.ldexp(p.backoff_base_s, attempt - 1), p.backoff_cap_s)
    except OverflowError:
        return p.backoff_cap_s


RETRY_PHASES = ("calllog", "fetch")  # what a recording job waits for: its CallLog, or its audio from Twilio


def retry_budget(phase: str, p: Policy) -> int:
    """How many retries a recording run may spend in `phase` (000).

    'calllog': max_recording_retries — waiting for a CallLog committed late (and the stuck
    sweep's re-queues, see stuck_run_over_budget). 'fetch': max_fetch_retries — the CallLog and
    URL are there and Twilio failed (5xx, 404 not yet, timeout, a cut body). Both budgets follow
    the same backoff_delay schedule, each counted from attempt 1. `shared_retry_budget` (the
    seeds' one retry_count): a fetch retry spends the CallLog budget; see retry_phase.
    """
    if phase not in RETRY_PHASES:
        raise ValueError(f"phase must be one of {', '.join(RETRY_PHASES)}, not {phase!r}")
    return p.max_fetch_retries if retry_phase(phase, p) == "fetch" else p.max_recording_retries


def retry_phase(phase: str, p: Policy) -> str:
    """The budget a retry in `phase` spends: its own (fixed), or 'calllog' for every retry under
    `shared_retry_budget`."""
    return "calllog" if p.has("shared_retry_budget") else phase


def budget_phases(p: Policy) -> tuple[str, ...]:
    """The retry budgets a run has: both phases, or only 'calllog' under `shared_retry_budget`."""
    return ("calllog",) if p.has("shared_retry_budget") else RETRY_PHASES


def backoff_schedule(p: Policy, phase: str = "calllog") -> list[float]:
    """The delays of retries 1..retry_budget(phase): [60, 120, 240, 480, 960] by default."""
    return [backoff_delay(n, p) for n in range(1, retry_budget(phase, p) + 1)]


def backoff_total(p: Policy, phase: str = "calllog") -> float:
    """Sum of the phase's schedule: how long a recording waits in that phase before it fails."""
    return sum(backoff_schedule(p, phase))


def max_recording_runs(p: Policy) -> int:
    """Most runs of one recording job the budgets allow (slot deferrals aside): 1 + every
    retry of both budgets — the bound loops-terminate checks, whatever the variant does."""
    return 1 + sum(retry_budget(ph, p) for ph in budget_phases(p))


def run_attempt(retry_count: int, fetch_retry_count: int) -> int:
    """Which run of its recording job this is (job.start's `attempt`): 1 + every retry spent
    from either budget (the stuck sweep's re-queues spend the CallLog one)."""
    return 1 + retry_count + fetch_retry_count


class RetryDecision(NamedTuple):
    """What a recording job does when its CallLog or audio is not there yet.

    action: 'retry' (schedule attempt `attempt` after `delay_s`), 'raise' (raise and let RQ's
    own Retry re-run it at once: the seed's behaviour — `delay_s` is the backoff the job computed
    and logged, never applied), or 'fail' (permanent). `phase` is the budget the retry spends
    ('calllog' or 'fetch'): the caller stores `attempt` in that budget's counter and records
    the phase on job.retry, so the backoff check follows each budget's schedule.
    """

    action: str
    attempt: int
    delay_s: float
    reason: str
    phase: str = "calllog"


def recording_retry_decision(retry_count: int, p: Policy, phase: str = "calllog",
                             fetch_retry_count: int = 0) -> RetryDecision:
    """Decide the next step after an attempt came up empty in `phase`: 'calllog' (no CallLog
    yet) or 'fetch' (the audio fetch failed). `retry_count` and `fetch_retry_count` are the
    run's retries so far against each budget; the one `retry_phase` picks is spent."""
    spent = retry_phase(phase, p)
    budget = retry_budget(phase, p)
    so_far = fetch_retry_count if spent == "fetch" else retry_count
    if p.has("infinite_immediate_retry"):
        return RetryDecision("retry", so_far + 1, 0.0, "re-run at once, no limit", spent)
    if so_far >= budget:
        what = "fetch" if spent == "fetch" else "recording"
        return RetryDecision("fail", so_far, 0.0, f"gave up after {budget} {what} retries", spent)
    attempt = so_far + 1
    if p.has("backoff_not_applied"):
        # The seed computes the delay, stores it in a message, and raises; RQ re-runs at once.
        # delay_s is what the job computed and logged; RQ does not apply it.
        return RetryDecision("raise", attempt, backoff_delay(attempt, p), "computed the backoff but raised", spent)
    return RetryDecision("retry", attempt, backoff_delay(attempt, p), "backoff", spent)


def stuck_run_over_budget(retry_count: int, p: Policy) -> bool:
    """Does the stuck sweep fail a stuck run for good rather than re-queue it? A re-queue spends
    one retry of the CallLog budget (retry_count), so once that is spent the run fails (002);
    `infinite_immediate_retry` (before) re-queues without limit."""
    return retry_count >= p.max_recording_retries and not p.has("infinite_immediate_retry")
