"""The playback poll (seeds 002, 003): GET /api/recordings/file/<call_sid>'s status semantics.

`playback_decision` picks serve / not_found / wait / start / no_worker from what the poll
knows; `playback_gate_ask` says what it must ask the coordination store (liveness, the playback
mark and the fail-fast count); `playback_action` says what it does once the gate answered.
Retry-After values come from here too.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from loopfix.reference_app.policy.core import Policy
from loopfix.reference_app.policy.failfast import fail_fast_tripped
from loopfix.reference_app.policy.runs import ACTIVE_RUN_STATUSES, RunState, stuck_reason


class PlaybackState(NamedTuple):
    """What GET /api/recordings/file/<call_sid> knows before it decides. (This, the decision
    and the gate's question are NamedTuples: immutable, and cheap to build on every poll —
    a frozen dataclass sets each field through object.__setattr__; so is PlaybackAction.)"""

    has_recording_url: bool
    file_ready: bool
    run: RunState | None
    worker_alive: bool | None = None  # for a waiting run (WAITING_RUN_STATUSES); None: unknown


class PlaybackDecision(NamedTuple):
    """kind: serve (200) | not_found (404) | wait (202) | start (create a job; `reason` says why) |
    no_worker (a job waits but no worker is alive: count a fail-fast attempt, 202 or 500)."""

    kind: str
    status: int
    retry_after_s: float | None = None
    reason: str = ""


# The decisions that never vary, made once: built per poll (by keyword, through a dict of
# keywords), they cost the model 14.9 M instructions of the day's `full 1` (about 4,000 a poll).
SERVE = PlaybackDecision("serve", 200, reason="file ready")
NOT_FOUND = PlaybackDecision("not_found", 404, reason="no recording URL for this call")


def playback_decision(state: PlaybackState, now: float, p: Policy) -> PlaybackDecision:
    """Seed 002's status semantics: 200 ready, 202 processing, 404 never, start a job otherwise."""
    if state.file_ready:
        return SERVE
    if not state.has_recording_url:
        return NOT_FOUND
    run = state.run
    if run is not None and run.status in ACTIVE_RUN_STATUSES:
        why = stuck_reason(run, now, p, state.worker_alive)
        if why is None:
            if run.status == "queued" and state.worker_alive is False and not p.has("fail_fast_unreachable"):
                return PlaybackDecision("no_worker", 202, p.retry_after_recovery_s, "no worker is processing the queue")
            return PlaybackDecision("wait", 202, retry_after(run, now, p), "processing")
        return PlaybackDecision("start", 202, p.retry_after_recovery_s, f"stuck: {why}")
    if run is not None and run.status == "done":
        # The run finished but the file is gone (deleted, or never written): fetch again.
        return PlaybackDecision("start", 202, p.retry_after_s, "done but file missing")
    if run is not None and run.status == "failed":
        return PlaybackDecision("start", 202, p.retry_after_recovery_s, "previous run failed")
    return PlaybackDecision("start", 202, p.retry_after_s, "no run yet")


REDIS_UNAVAILABLE_RETRY_AFTER_S = 1  # a poll that needed Redis while it was unreachable: 503, retry after this
GATED_DECISIONS = ("start", "no_worker")  # the decisions that take the playback mark and count a fail-fast attempt


class PlaybackGateAsk(NamedTuple):
    """What a poll asks Redis before it answers (the app's Coordinator.playback_gate): read
    worker liveness when the answer depends on it (`read_alive`), and take the playback mark
    and count a fail-fast attempt when the decision for that liveness is gated."""

    read_alive: bool
    gate_if_alive: bool
    gate_if_dead: bool

    @property
    def round_trip(self) -> bool:
        """Does the poll need Redis at all? (When it does and Redis is unreachable, it answers
        503 redis_unavailable.)"""
        return self.read_alive or self.gate_if_dead


def playback_gate_ask(if_alive: PlaybackDecision, if_dead: PlaybackDecision) -> PlaybackGateAsk:
    """The gate's question for a poll whose decision is `if_alive` with a live worker and
    `if_dead` without one (the same decision twice when liveness does not matter)."""
    return PlaybackGateAsk(if_alive != if_dead, if_alive.kind in GATED_DECISIONS, if_dead.kind in GATED_DECISIONS)


STUCK_RUN_FAILED_WHEN = ("found", "replacing")


def fails_stuck_run(stage: str, p: Policy) -> bool:
    """Does a poll whose decision is `start` on a stuck active run mark that run failed at
    `stage`: 'found' (as soon as the gate answered, whatever fail-fast then says) or
    'replacing' (after the mark and fail-fast let the poll through, just before it enqueues the
    replacement)? playback_action applies it for the app and the model.

    fixed: 'replacing' only, so a stuck run is failed only when a new job replaces it. When
    fail-fast trips (no worker) the run is left as it is: its RQ job still runs once workers
    return, or the workers' sweeper re-queues it. seed (`stuck_failed_before_fail_fast`):
    'found' — seed 002 marks failed, then checks attempts, then creates; a tripped poll leaves
    a failed run and no job, and the recording is lost.
    """
    if stage not in STUCK_RUN_FAILED_WHEN:
        raise ValueError(f"stage must be one of {', '.join(STUCK_RUN_FAILED_WHEN)}, not {stage!r}")
    return stage == ("found" if p.has("stuck_failed_before_fail_fast") else "replacing")


class PlaybackAction(NamedTuple):
    """What a poll whose decision is 'start' or 'no_worker' does once the gate has answered
    (the playback mark, 003; the fail-fast count, 002), in this order: mark the stuck run it
    found failed (`fail_stuck`), record a fail-fast trip (`trip`), then either answer `status`
    (with `error` for a 500, `retry_after_s` for a 202) or, when `enqueue`, create the job and
    answer 202 after `retry_after_s` (500 `enqueue_failed` if the enqueue failed)."""

    fail_stuck: bool
    enqueue: bool
    status: int = 202
    retry_after_s: float | None = None
    error: str | None = None
    trip: bool = False


def playback_action(d: PlaybackDecision, stuck: bool, marked: bool, attempts: int, p: Policy) -> PlaybackAction:
    """The steps after the gate for decision `d` ('start' or 'no_worker'): `stuck` — the
    decision replaces a stuck active run; `marked` — this poll holds the playback mark (a poll
    without it answers 202 and leaves the job to the one that has it); `attempts` — its
    fail-fast count in the window. The app's poll and the model's both follow this."""
    found = stuck and fails_stuck_run("found", p)
    if not marked:
        return PlaybackAction(found, False, 202, p.retry_after_s)
    if fail_fast_tripped(attempts, p):
        return PlaybackAction(found, False, 500, error="worker_not_processing_queue", trip=True)
    if d.kind == "no_worker":
        return PlaybackAction(found, False, 202, d.retry_after_s)
    return PlaybackAction(found or (stuck and fails_stuck_run("replacing", p)), True, 202, d.retry_after_s)


def retry_after(run: RunState | None, now: float, p: Policy) -> float:
    """Retry-After for a 202: until the scheduled retry when one is pending, within bounds."""
    if run is not None and run.status == "retry_wait" and run.next_attempt_at is not None:
        return min(max(p.retry_after_s, run.next_attempt_at - now), p.retry_after_max_s)
    return p.retry_after_s


def retry_after_header(seconds: float) -> str:
    """HTTP Retry-After is whole seconds (RFC 9110); never 0 so a client always waits a tick."""
    return str(max(1, math.ceil(seconds)))
