"""The functional core: every decision the seeds describe, as pure functions of a `Policy`.

The Flask routes and RQ jobs call these with state read from Redis and the database; the
SimPy model (`sim/`) calls the same functions with simulated state, so the model cannot drift
from the app. Nothing here imports Flask, Redis, SQLAlchemy or SimPy, reads the environment or
reads a clock: time is always an argument, in *policy seconds* (wall seconds / `time_scale`).

One module per concept — read the one for the rule you want:

    faults.py    the fault catalogue, the variants (`Variant`: before / seed / fixed)
    core.py      the frozen `Policy`: every constant, the variant and its faults, time scaling
    settings.py  a Policy from loose strings (env, `--set`, a scenario's [policy]): make_policy
    backoff.py   recording-job retries: the backoff schedule, the two budgets, the decision (000)
    runs.py      when a recording run is stuck or orphaned (002, heartbeat)
    failfast.py  when a call's attempts trip fail-fast (002)
    playback.py  the playback poll: its decision, the gate's question, the action (002, 003)
    enqueue.py   enqueue statuses and dedup, play-click dedup, the recording callback (001, 003, 004)
    slots.py     the download semaphore: defer schedule, in-flight TTL (004)
    player.py    the browser player: retry, delay, outcome (002)
    leads.py     bulk lead deletion and the BulkGate lock TTLs (000, 003)
    describe.py  a Policy described as data, the '~52 min' claim checked
    events.py    the history's event schema (EVENT_FIELDS, event, dumps)

Every public name is re-exported here, so `from loopfix.reference_app.policy import X` works for any
rule. Variants and faults: `before` is the system the seeds started from, `seed` is the seeds'
final code as written (latent faults included), `fixed` is the reference fix; each behaviour
that differs is one named fault in `FAULTS`, and `extra_faults` switches on any single one.
"""
from __future__ import annotations

from loopfix.reference_app.policy.backoff import (
    RETRY_PHASES,
    RetryDecision,
    backoff_delay,
    backoff_schedule,
    backoff_total,
    budget_phases,
    max_recording_runs,
    recording_retry_decision,
    retry_budget,
    retry_phase,
    run_attempt,
    stuck_run_over_budget,
)
from loopfix.reference_app.policy.core import Policy
from loopfix.reference_app.policy.describe import describe
from loopfix.reference_app.policy.enqueue import (
    ENQUEUE_REASON_STATUS,
    enqueue_dedup_ttl,
    enqueue_retry_is_int,
    enqueue_status,
    normalise_recording_url,
    playback_dedups,
    recording_callback_enqueues,
    reported_enqueue_reason,
)
from loopfix.reference_app.policy.failfast import fail_fast_tripped
from loopfix.reference_app.policy.faults import FAULTS, SEED_LOCK_TTL_S, VARIANT_FAULTS, VARIANTS, Variant
from loopfix.reference_app.policy.leads import (
    BULK_DELETE_JOB_TYPE,
    BULK_DELETE_MAX_IDS,
    BULK_DELETE_OP,
    BULK_JOB_ACTIVE,
    BULK_JOB_FINISHED,
    LEAD_ID_MAX,
    BadLeadIds,
    BulkDedupMode,
    ResumeDecision,
    batches,
    bulk_batch_fails,
    bulk_dedup_mode,
    bulk_job_timeout_s,
    bulk_resume_decision,
    bulk_should_pause,
    bulk_should_stop,
    lock_ttl,
    parse_lead_ids,
)
from loopfix.reference_app.policy.playback import (
    GATED_DECISIONS,
    REDIS_UNAVAILABLE_RETRY_AFTER_S,
    STUCK_RUN_FAILED_WHEN,
    PlaybackAction,
    PlaybackDecision,
    PlaybackGateAsk,
    PlaybackState,
    fails_stuck_run,
    playback_action,
    playback_decision,
    playback_gate_ask,
    retry_after,
    retry_after_header,
)
from loopfix.reference_app.policy.player import player_delay, player_outcome, player_should_retry
from loopfix.reference_app.policy.runs import (
    ACTIVE_RUN_STATUSES,
    LIVE_JOB_STATUSES,
    WAITING_RUN_STATUSES,
    RunState,
    run_orphaned,
    stuck_reason,
)
from loopfix.reference_app.policy.settings import _OVERRIDABLE, make_policy, parse_faults
from loopfix.reference_app.policy.slots import inflight_ttl, slot_defer_delay

# Names that left the core for the layer that owns them, still importable from here so that no
# importer had to change when policy.py became this package. Resolved on first use (PEP 562), so
# the core does not import the app at load time. New code imports them from their home.
_MOVED = {
    "media_host_allowed": "loopfix.reference_app.media",  # the SSRF allowlist: the app's, not a seed rule
    "format_policy_value": "loopfix.reference_app.config",  # LOOPFIX_POLICY's NAME=VALUE syntax
    "parse_assignments": "loopfix.reference_app.config",
    "split_assignments": "loopfix.reference_app.config",
}


def __getattr__(name: str) -> object:
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(home), name)
