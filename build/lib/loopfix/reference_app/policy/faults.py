"""The fault catalogue and the variants: which seed-era bug each toggle switches on.

Each behaviour that differs between the system the seeds started from and its fix is one named
fault in `FAULTS` (the key is the LOOPFIX_FAULTS toggle, the value says what it does). A variant
is a set of faults: `before` — the bugs the seeds started from; `seed` — the seeds' final code
as written, latent faults included; `fixed` — none. `Policy.extra_faults` switches on any single
one for a test or a report. Variants are the `Variant` enum; its members are strings, so
`"fixed"` from run.json, a scenario file or a CLI flag is the same value.
"""
from __future__ import annotations

from enum import StrEnum


class Variant(StrEnum):
    """A tier of faults (DESIGN "Variants"); a member equals its string value."""

    BEFORE = "before"
    SEED = "seed"
    FIXED = "fixed"


VARIANTS: tuple[str, ...] = tuple(v.value for v in Variant)  # ("before", "seed", "fixed")

# One line each: what the fault does. The key is the toggle name (LOOPFIX_FAULTS).
FAULTS: dict[str, str] = {
    # --- the `before` tier: the bugs the seeds started from ---------------------------------
    "new_job_per_delete_click": "every bulk-delete request creates a new job (seed 000, before)",
    "delete_fails_on_missing_leads": "the delete job fails when a batch's leads are already gone (000)",
    "infinite_immediate_retry": "a recording job missing its CallLog/audio is re-run at once, forever (000)",
    "retry_as_int": "enqueue passes retry=3 (an int), RQ raises 'int' object has no attribute 'max' (001)",
    "dedup_set_before_enqueue": "the enqueue dedup key is set before enqueue and stays if enqueue fails (001)",
    "enqueue_error_hidden": "enqueue returns True/False: a failed enqueue looks like a dedup hit, HTTP 200 (001)",
    "stuck_202_forever": "an active job answers 202 forever: no stuck detection (002)",
    "no_fail_fast": "no per-call attempt counter: stuck jobs are re-created without limit (002)",
    "json_recording_url": "RecordingUrl is stored as Twilio sent it, .json and all (001)",
    "enqueue_every_click": "no playback dedup: every play click enqueues (003)",
    "long_dedup_ttl": "the enqueue dedup key lives 30 min instead of 120 s (004)",
    "blocking_slot_loop": "slot contention blocks the worker in a 60 x 1 s sleep loop (004)",
    "short_inflight_ttl": "the semaphore in-flight TTL is 120 s, shorter than slow downloads (004)",
    "semaphore_in_api": "the download slot is taken by the API request, not by the worker (004)",
    "player_unbounded": "the browser player retries 202 (and errors) forever (002)",
    # --- the `seed` tier: latent faults in the seeds' final code (DESIGN.md 1-10) ------------
    "lock_release_unowned": "BulkGate release is a plain DEL: it frees whoever holds the lock (003)",
    "lock_refresh_unowned": "BulkGate refresh is EXISTS then EXPIRE, refreshing whoever holds it (003)",
    "playback_check_then_mark": "playback dedup checks then marks: concurrent clicks both enqueue (003)",
    "dedup_check_then_set": "enqueue dedup checks, enqueues, then sets: concurrent requests all enqueue (001/004)",
    "backoff_not_applied": "the job computes a backoff but raises; RQ Retry(max=3) re-runs it at once (000/001)",
    "slot_defer_sleeps": "the 'non-blocking' slot defer still sleeps in the worker before re-queuing (004)",
    "fail_fast_incr_then_expire": "fail-fast INCR and EXPIRE are two calls: a crash between leaves no TTL (002)",
    "no_heartbeat": "the worker refreshes no heartbeat and no Redis claim while downloading (002/004)",
    "stuck_by_age": "a job is stuck after a fixed 5 min: running, even while it is downloading; queued, even "
    "while live workers are busy with a backlog ahead of it (002)",
    "json_replace_everywhere": ".replace('.json', '.mp3') rewrites every occurrence, not the suffix (001)",
    "download_not_idempotent": "a re-run downloads again: no skip-if-complete, no atomic rename (RQ re-run)",
    "delete_check_then_insert": "bulk-delete dedup is check-then-insert: concurrent requests race (000/003)",
    "orphan_runs_not_swept": "a queued run whose RQ job Redis lost (a restart, or an enqueue cut off by a pause) "
    "is never enqueued again, and a failed enqueue fails the run: the database and Redis disagree for good",
    "fail_fast_unreachable": "attempts are counted only when a stuck job is re-created: with a 5 min stuck "
    "timeout and a 10 min window the 4th attempt never lands in the window, so fail-fast never trips (002)",
    "webhook_replay_enqueues": "a replayed recording callback enqueues a new run once the 120 s dedup window "
    "has passed: only the window, not the RecordingSid, makes the webhook idempotent",
    "stuck_failed_before_fail_fast": "a poll marks a stuck run failed before it checks fail-fast: when fail-fast "
    "trips no job replaces it, and the recording is never fetched once workers return (002: mark failed, then "
    "check attempts, then create)",
    "shared_retry_budget": "waiting for a late CallLog and failed audio fetches spend one retry budget (000's one "
    "retry_count): a recording whose CallLog needed the last retry is lost to a single transient Twilio fault",
    # --- not from the seeds (their downloader is not shown): switched on only by name ---------
    "redirect_followed_anywhere": "the download follows redirects wherever they point (requests' default): "
    "the media allowlist guards only the first hop",
    "tenant_unscoped_lookup": "calls and delete jobs are looked up by id alone, not by (business, id): any "
    "valid token reads, streams, enqueues and resumes every tenant's",
}

_BEFORE_ONLY = frozenset(
    {
        "new_job_per_delete_click",
        "delete_fails_on_missing_leads",
        "infinite_immediate_retry",
        "retry_as_int",
        "dedup_set_before_enqueue",
        "enqueue_error_hidden",
        "stuck_202_forever",
        "no_fail_fast",
        "json_recording_url",
        "enqueue_every_click",
        "long_dedup_ttl",
        "blocking_slot_loop",
        "short_inflight_ttl",
        "semaphore_in_api",
        "player_unbounded",
    }
)
# in no variant: switched on only by name (LOOPFIX_FAULTS / faults=)
_BY_NAME_ONLY = frozenset({"redirect_followed_anywhere", "tenant_unscoped_lookup"})
_SEED = frozenset(set(FAULTS) - _BEFORE_ONLY - _BY_NAME_ONLY)
# `before` predates every fix, so it also has the seed faults its own bugs do not supersede.
_BEFORE = _BEFORE_ONLY | {
    "shared_retry_budget",
    "no_heartbeat",
    "lock_release_unowned",
    "lock_refresh_unowned",
    "download_not_idempotent",
    "orphan_runs_not_swept",
    "webhook_replay_enqueues",
}
VARIANT_FAULTS: dict[str, frozenset[str]] = {
    "before": frozenset(_BEFORE),
    "seed": _SEED,
    "fixed": frozenset(),
}

# seed 003's BulkGate table, seconds.
SEED_LOCK_TTL_S: tuple[tuple[str, float], ...] = (
    ("delete_leads_bulk", 3600),
    ("update_leads_bulk", 1800),
    ("delete_receipts_all", 3600),
    ("delete_imported_leads", 1800),
    ("broadcast_whatsapp", 7200),
    ("enqueue_outbound_calls", 3600),
    ("default", 1800),
)

