"""When a recording run is stuck or orphaned (seed 002, fixed by a heartbeat).

`RunState` is a run as the playback poll and the stuck sweep see it; `stuck_reason` says why
it counts as stuck (None: healthy); `run_orphaned` says whether Redis lost the job that would
run it.
"""
from __future__ import annotations

from typing import NamedTuple

from loopfix.reference_app.policy.core import Policy


class RunState(NamedTuple):
    """A recording run as the playback decision sees it; times are policy seconds, None = unset.
    (A NamedTuple: immutable, and cheap to build on every poll and sweep.)"""

    status: str  # queued | running | retry_wait | done | failed
    created_at: float
    started_at: float | None = None
    heartbeat_at: float | None = None
    next_attempt_at: float | None = None


ACTIVE_RUN_STATUSES = ("queued", "running", "retry_wait")
WAITING_RUN_STATUSES = ("queued", "retry_wait")  # stuck_reason wants worker liveness for these


def stuck_reason(run: RunState, now: float, p: Policy, worker_alive: bool | None = None) -> str | None:
    """Why `run` counts as stuck at `now`, or None when it is healthy (002, fixed by heartbeat).

    queued (or retry_wait): waiting longer than stuck_timeout since it became due (created, or
    its retry time) — but in `fixed` only while no worker is alive (`worker_alive` False or
    None = unknown): a job queued behind a backlog that live workers are busy with is waiting
    its turn, not stuck (seed, fault stuck_by_age: stuck by age alone, so a long backlog burns
    every queued job's retry budget);
    running: no heartbeat for heartbeat_timeout (fixed) / running longer than stuck_timeout by
    started_at (seed, fault stuck_by_age); running without started_at is always stuck.
    """
    if p.has("stuck_202_forever"):
        return None
    if run.status in WAITING_RUN_STATUSES and worker_alive is True and not p.has("stuck_by_age"):
        return None
    if run.status == "queued":
        due = max(run.created_at, run.next_attempt_at or run.created_at)
        if now - due > p.stuck_timeout_s:
            return f"queued {now - due:.0f} s without worker pickup"
    elif run.status == "retry_wait":
        due = run.next_attempt_at if run.next_attempt_at is not None else run.created_at
        if now - due > p.stuck_timeout_s:
            return f"retry due {now - due:.0f} s ago and not picked up"
    elif run.status == "running":
        if run.started_at is None:
            return "marked running but no started_at"
        if p.has("stuck_by_age"):
            if now - run.started_at > p.stuck_timeout_s:
                return f"running {now - run.started_at:.0f} s without completion"
        else:
            last_sign = run.heartbeat_at if run.heartbeat_at is not None else run.started_at
            if now - last_sign > p.heartbeat_timeout_s:
                return f"no heartbeat for {now - last_sign:.0f} s"
    return None


LIVE_JOB_STATUSES = ("queued", "scheduled", "started", "deferred")  # RQ statuses that will still run


def run_orphaned(run: RunState, job_status: str | None, now: float, p: Policy,
                 job_started_at: float | None = None) -> bool:
    """True when waiting `run` has no RQ job that will ever run it: Redis lost the job (restarted
    empty, or the enqueue never reached it; `job_status` None), the job ended without running
    it, or it was started (at `job_started_at`) a heartbeat timeout ago and the run never began
    (its worker died at that moment, e.g. RQ quitting on a Redis restart), or it has been
    'dequeued' — in no queue, not started — since `job_started_at`, a heartbeat timeout ago (a
    worker popped it and was killed before its work horse started it). Judged only a
    heartbeat timeout after the run became due, so a job being enqueued right now is not taken
    for lost. Fault `orphan_runs_not_swept`: never (the seeds trusted Redis)."""
    if p.has("orphan_runs_not_swept") or run.status not in WAITING_RUN_STATUSES:
        return False
    if job_status in ("started", "dequeued"):
        return job_started_at is not None and now - job_started_at > p.heartbeat_timeout_s
    if job_status in LIVE_JOB_STATUSES:
        return False
    due = max(run.created_at, run.next_attempt_at or run.created_at)
    return now - due > p.heartbeat_timeout_s
