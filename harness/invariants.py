"""The ten invariants of DESIGN.md as pure functions `history, policy -> Verdict`, each one pass
of an online check (harness/checks_runs.py, harness/checks_rest.py) over the history.

A checker never drives the system: it reads a list of event records (sim or live, the same
schema) and the `Policy` whose bounds it checks against (the caller passes it explicitly; the
CLI takes it from the run directory's `run.json`, see harness/history.py). Each verdict says
whether the invariant holds (`True`), is broken (`False`) or could not be decided
(`"unknown"`), lists the anomalies grouped by type with the witness events that prove each,
and a `figure` dict of measured numbers. An exception inside a checker yields `"unknown"`,
never a pass. `online(policy)` gives all ten as one `harness.stream.Fanout`: fed event by event
(the model's sink, `loopfix sim`), it keeps only what the invariants must and its `verdicts()`
are those of `check_all` on the same events. Explanations are data (`Anomaly.facts`);
`render_*` turns them into text (harness/verdicts.py holds the verdict types and their
rendering, harness/query.py the history queries; both re-exported here).

Conventions the live app must follow for these checks to mean what they say:
- a recording retry is `job.retry(attempt, delay, phase)` (with the delay actually applied;
  phase is the budget it spends, `calllog` or `fetch`, each numbered from 1; absent means
  `calllog`) and
  `job.end(outcome="retry")`, in either order, and, when the scheduler moves the delayed job
  back onto the queue, `job.enqueue(via="retry")`. The backoff check measures `job.retry` →
  the job's next `job.start` for "too soon", and `job.retry` → that re-enqueue for "too
  late" (queue wait is capacity, not policy; with no re-enqueue event "too late" is not
  judged);
- slot-contention deferrals end a run with outcome `deferred`; they are not retries;
- playback-path enqueues carry `via="playback"`, the enqueue API's `via="enqueue_api"`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from loopfix.harness.bounds import expected_delay, player_time_bound, retry_after_granted_s, retry_phase_of  # noqa: F401
from loopfix.harness.checks_rest import (IdempotentDelete, LockExclusive, NothingLost, StatusSemantics,
                                         WorkerNeverBlocks)
from loopfix.harness.checks_runs import (TERMINAL_OUTCOMES, BackoffSchedule, FailFast, LoopsTerminate,  # noqa: F401
                                         NoDuplicateDownload, OneJobPerStorm)
from loopfix.harness.query import of, outage_windows, promotable_at, promotion_halts  # noqa: F401
from loopfix.harness.stream import Check, Fanout, check, checker_error
from loopfix.harness.verdicts import (MAX_EXAMPLES, NOT_OBSERVABLE, TEMPLATES, UNKNOWN, Anomaly, Event, Verdict,  # noqa: F401
                                      guarded, overall, render_anomaly, render_event, render_verdict, valid_label,
                                      verdict)
from loopfix.reference_app.policy import Policy

Checker = Callable[..., Verdict]
# name -> the online check's class (constructed with the policy and the checker's options)
CHECKS: dict[str, type[Check]] = {c.name: c for c in (
    LoopsTerminate, NoDuplicateDownload, OneJobPerStorm, BackoffSchedule, FailFast, StatusSemantics,
    IdempotentDelete, LockExclusive, NothingLost, WorkerNeverBlocks)}


def _run(name: str, history: Iterable[Event], p: Policy, **options: Any) -> Verdict:
    try:
        c = CHECKS[name](p, **options)
    except Exception as exc:  # noqa: BLE001 - a check that cannot start is undecided, never a pass
        return checker_error(name, exc)
    return check(c, history)


def check_loops_terminate(history: Sequence[Event], p: Policy) -> Verdict:
    """Every client session ends in a terminal outcome within 1 + player_max_retries requests
    and the player's time bound; no recording job is run more than policy.max_recording_runs
    times (1 + both retry budgets; runs after a slot deferral do not count: they are not
    retries). A live session's
    bound grows by the response times its requests report (`latency_s`, policy seconds): the
    player's waits are policy, a loaded server's latency is not (the model has none)."""
    return _run("loops-terminate", history, p)


def check_no_duplicate_download(history: Sequence[Event], p: Policy) -> Verdict:
    """At most one completed (ok, not skipped) download per recording, crashes included."""
    return _run("no-duplicate-download", history, p)


def check_one_job_per_storm(history: Sequence[Event], p: Policy, window_s: float | None = None) -> Verdict:
    """Click-driven enqueues (via playback or enqueue_api) of one recording: no two distinct
    jobs within `window_s` (default: the playback in-progress mark, playback_mark_ttl_s)."""
    return _run("one-job-per-storm", history, p, window_s=window_s)


def check_backoff_schedule(history: Sequence[Event], p: Policy, rel_tol: float = 0.02, abs_tol_s: float = 1.0) -> Verdict:
    """Retry gaps follow backoff_delay within rel_tol * delay + abs_tol_s (abs_tol_s is one
    scheduler tick), per retry budget: a job.retry's `phase` (calllog | fetch) names the budget,
    its attempt is numbered within it and may not exceed policy.retry_budget(phase), and the
    measured total of a phase whose budget a job used up matches that phase's schedule sum.
    A re-run straight after a failed attempt with no (or a zero) delay counts as too soon. A
    retry that came due while nothing could promote it (every worker down, the scheduler
    stopped, Redis paused or gone) is late only if re-queued later than that window's end."""
    return _run("backoff-schedule", history, p, rel_tol=rel_tol, abs_tol_s=abs_tol_s)


def check_fail_fast(history: Sequence[Event], p: Policy) -> Verdict:
    """Per call_sid, playback-path enqueues in any fail_fast_window_s (sliding) are at most
    fail_fast_max_attempts — the same sliding window the app's and the model's counters keep
    (the Coordination contract; the seed's fixed INCR-then-EXPIRE window is the fault
    fail_fast_incr_then_expire)."""
    return _run("fail-fast", history, p)


def check_status_semantics(history: Sequence[Event], p: Policy) -> Verdict:
    """202 has a Retry-After; 404 only for calls with no recording URL (or unknown calls);
    200 carries audio; an enqueue error is a 500."""
    return _run("status-semantics", history, p)


def check_idempotent_delete(history: Sequence[Event], p: Policy) -> Verdict:
    """While a business has an active delete job (requested, not yet ended; paused counts as
    active), every bulk-delete request of that business names that job."""
    return _run("idempotent-delete", history, p)


def check_lock_exclusive(history: Sequence[Event], p: Policy) -> Verdict:
    """Never two delete jobs of one business running at once (running: lead_job.start until
    its pause or end); a paused job keeps its lock; a release frees only its owner's lock."""
    return _run("lock-exclusive", history, p)


def check_nothing_lost(history: Sequence[Event], p: Policy) -> Verdict:
    """Once outages are over, every recording with a URL has a completed download; every
    requested lead is deleted exactly once; no lead is deleted outside its business's request."""
    return _run("nothing-lost", history, p)


def check_worker_never_blocks(history: Sequence[Event], p: Policy) -> Verdict:
    """No worker sleeps (on slot contention or anything else): any worker.sleep breaks it."""
    return _run("worker-never-blocks", history, p)


CHECKERS: dict[str, Checker] = {
    "loops-terminate": check_loops_terminate, "no-duplicate-download": check_no_duplicate_download,
    "one-job-per-storm": check_one_job_per_storm, "backoff-schedule": check_backoff_schedule,
    "fail-fast": check_fail_fast, "status-semantics": check_status_semantics,
    "idempotent-delete": check_idempotent_delete, "lock-exclusive": check_lock_exclusive,
    "nothing-lost": check_nothing_lost, "worker-never-blocks": check_worker_never_blocks,
}
INVARIANTS: tuple[str, ...] = tuple(CHECKS)


def _names(only: Iterable[str] | None) -> list[str]:
    names = list(only) if only is not None else list(INVARIANTS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown invariant(s) {', '.join(unknown)}; known: {', '.join(INVARIANTS)}")
    return names


def online(p: Policy, only: Iterable[str] | None = None, also: Sequence[Any] = (),
           each: Callable[[Event], None] | None = None, ordered: bool = False) -> Fanout:
    """Every invariant (or those in `only`) as one Fanout to feed event by event; `also`: more
    consumers fed in the same pass (objects with `handlers`, e.g. sim.metrics.HistoryMetrics);
    `each`: called with every event first (e.g. a history file's write); `ordered`: the events
    come in time order (the model's), so the checks may forget what no later event changes.
    `.verdicts()` lists the invariants' verdicts in DESIGN.md's order."""
    return Fanout([CHECKS[n](p) for n in _names(only)] + list(also), each, ordered)


def check_all(history: Iterable[Event], p: Policy, only: Iterable[str] | None = None) -> list[Verdict]:
    """Every invariant (or those in `only`), in DESIGN.md's order, in one pass over `history`."""
    return online(p, only).feed(history).verdicts()
