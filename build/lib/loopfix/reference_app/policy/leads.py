"""Bulk lead deletion (seeds 000, 003): request parsing, job dedup, batches, pause/stop, resume,
and the BulkGate lock TTLs.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Sequence

from loopfix.reference_app.policy.core import Policy


def lock_ttl(operation: str, p: Policy) -> float:
    """BulkGate lock TTL of an operation (003's table), default for unknown operations."""
    table = dict(p.lock_ttl_s)
    return table.get(operation, table["default"])


def bulk_should_pause(elapsed_s: float, p: Policy) -> bool:
    """Pause (keep the lock) once a run has used its runtime budget (003)."""
    return elapsed_s > p.bulk_max_runtime_s


def bulk_should_stop(consecutive_batch_failures: int, p: Policy) -> bool:
    """Fail the job after this many batches failed in a row (003)."""
    return consecutive_batch_failures >= p.bulk_max_batch_failures


def batches(ids: Sequence[int], p: Policy) -> list[list[int]]:
    """Split lead ids into batches of bulk_batch_size, order kept."""
    n = p.bulk_batch_size
    return [list(ids[i : i + n]) for i in range(0, len(ids), n)]


BULK_DELETE_OP = "delete_leads_bulk"  # the BulkGate operation (003's lock table)
BULK_DELETE_JOB_TYPE = "delete_leads"  # BackgroundJob.job_type (000)
BULK_JOB_ACTIVE = ("queued", "running", "paused")  # a job in these blocks a second one (000)
BULK_JOB_FINISHED = ("completed", "failed")  # only these release the lock (003)
BULK_DELETE_MAX_IDS = 10_000  # lead ids one bulk-delete request may name
LEAD_ID_MAX = 2**31 - 1  # lead ids are 32-bit integer keys


class BadLeadIds(ValueError):
    """A bulk-delete body the API refuses; `code` is the machine-readable error name."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def parse_lead_ids(raw: object, max_ids: int = BULK_DELETE_MAX_IDS) -> list[int]:
    """The request's `lead_ids` → distinct lead ids in request order.

    Refuses (BadLeadIds) anything but a non-empty list of integers in 1..LEAD_ID_MAX (a bool
    is not an integer here, nor is 3.0 or "3"), and more than `max_ids` distinct ids.
    Duplicates are dropped, not refused: a double-listed lead is still deleted once.
    """
    if not isinstance(raw, list):
        raise BadLeadIds("lead_ids_not_a_list", "lead_ids must be a JSON list of lead ids")
    if not raw:
        raise BadLeadIds("lead_ids_empty", "lead_ids must name at least one lead")
    bad = [x for x in raw if isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= LEAD_ID_MAX]
    if bad:
        raise BadLeadIds("lead_ids_not_integers",
                         f"lead ids must be integers from 1 to {LEAD_ID_MAX}; got {_preview(bad[0])}")
    ids = list(dict.fromkeys(raw))
    if len(ids) > max_ids:
        raise BadLeadIds("too_many_lead_ids", f"at most {max_ids} lead ids per request, got {len(ids)}")
    return ids


def _preview(value: object, limit: int = 40) -> str:
    text_ = repr(value)
    return text_ if len(text_) <= limit else text_[: limit - 3] + "..."


class BulkDedupMode(StrEnum):
    """How a bulk-delete request finds an active job of its business (000); a member equals its
    string value."""

    NEW_JOB = "new_job"  # before: none, every click makes a job
    CHECK_THEN_INSERT = "check_then_insert"  # seed: look, then insert later: concurrent requests all miss
    CONSTRAINT = "constraint"  # fixed: insert; the one-active-job constraint turns every loser into a read


def bulk_dedup_mode(p: Policy) -> BulkDedupMode:
    """How a bulk-delete request finds an active job (000):
    'new_job' (before: none, every click makes a job), 'check_then_insert' (seed: look, then
    insert later — concurrent requests all miss), 'constraint' (fixed: insert, and the
    database's one-active-job constraint turns every loser into a read of the winner)."""
    if p.has("new_job_per_delete_click"):
        return BulkDedupMode.NEW_JOB
    if p.has("delete_check_then_insert"):
        return BulkDedupMode.CHECK_THEN_INSERT
    return BulkDedupMode.CONSTRAINT


def bulk_batch_fails(requested: int, found: int, p: Policy) -> bool:
    """Does a batch that found only `found` of its `requested` leads fail the job?
    Before the fix (000) it did; fixed and seed skip leads that are already gone."""
    return p.has("delete_fails_on_missing_leads") and found < requested


def bulk_job_timeout_s(p: Policy) -> float:
    """Policy seconds RQ lets one run of a delete job take: it pauses after its runtime
    budget plus one batch, so twice the budget is only ever reached by a hung job."""
    return 2 * p.bulk_max_runtime_s


@dataclass(frozen=True)
class ResumeDecision:
    """kind: resume (202: enqueue a new run) | queued (202: a run is already waiting) |
    running (409: a live run holds it) | finished (409: completed or failed, nothing to resume)."""

    kind: str
    status: int
    reason: str


def bulk_resume_decision(status: str, now: float, heartbeat_at: float | None, queued_at: float | None,
                         lock_held: bool, p: Policy) -> ResumeDecision:
    """May POST /api/jobs/<id>/resume start a new run of a delete job? Times in policy seconds.

    A paused job always may (it kept its lock for this). A running job may only once it is
    evidently dead: no heartbeat for heartbeat_timeout_s, or its lock is gone (a live run
    refreshes it every batch) — a worker killed mid-job. A queued job may once it has waited
    stuck_timeout_s for a worker (its RQ job was lost). A new run supersedes the old one, so a
    wrong guess costs a takeover, never a second delete.
    """
    if status in BULK_JOB_FINISHED:
        return ResumeDecision("finished", 409, f"job is {status}")
    if status == "paused":
        return ResumeDecision("resume", 202, "paused")
    if status == "running":
        if heartbeat_at is None or now - heartbeat_at > p.heartbeat_timeout_s:
            age = "ever" if heartbeat_at is None else f"{now - heartbeat_at:.0f} s"
            return ResumeDecision("resume", 202, f"running without a heartbeat for {age}")
        if not lock_held:
            return ResumeDecision("resume", 202, "running but its lock is gone")
        return ResumeDecision("running", 409, f"running, last heartbeat {now - heartbeat_at:.0f} s ago")
    if status == "queued":
        waited = now - queued_at if queued_at is not None else float("inf")
        if waited > p.stuck_timeout_s:
            return ResumeDecision("resume", 202, f"queued {waited:.0f} s without a worker")
        return ResumeDecision("queued", 202, "already queued")
    raise ValueError(f"unknown job status {status!r}")
