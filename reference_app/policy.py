"""The functional core: every decision the seeds describe, as pure functions of a `Policy`.

The Flask routes and RQ jobs call these with state read from Redis and the database; the
SimPy model (`sim/`) calls the same functions with simulated state, so the model cannot drift
from the app. Nothing here imports Flask, Redis, SQLAlchemy or SimPy, and nothing reads a
clock: time is always an argument, in *policy seconds* (wall seconds / `time_scale`).

Variants and faults: `before` is the system the seeds started from, `seed` is the seeds' final
code as written (latent faults included), `fixed` is the reference fix. Each behaviour that
differs is one named fault in `FAULTS`; a variant is a set of faults, and `extra_faults` can
switch on any single one for a test or a report.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

VARIANTS = ("before", "seed", "fixed")

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
_BY_NAME_ONLY = frozenset({"redirect_followed_anywhere", "tenant_unscoped_lookup"})  # in no variant: LOOPFIX_FAULTS / faults= only
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


@dataclass(frozen=True)
class Policy:
    """Every constant of the system, in policy seconds, with the variant and its faults.

    `time_scale` multiplies every duration when it is turned into wall time (`wall()`);
    1.0 is real time, 0.01 runs the 1,860 s backoff in about 19 s.
    """

    variant: str = "fixed"
    extra_faults: frozenset[str] = frozenset()
    time_scale: float = 1.0
    # recording job (000): retries waiting for the CallLog; retries fetching its audio, a budget of their own
    max_recording_retries: int = 5
    max_fetch_retries: int = 5
    backoff_base_s: float = 60.0
    backoff_cap_s: float = 1200.0
    # RQ enqueue (001)
    enqueue_retry_max: int = 3
    enqueue_dedup_ttl_s: float = 120.0
    before_enqueue_dedup_ttl_s: float = 1800.0
    # playback (002, 003)
    playback_mark_ttl_s: float = 15.0
    retry_after_s: float = 3.0
    retry_after_recovery_s: float = 5.0
    retry_after_max_s: float = 60.0
    fail_fast_max_attempts: int = 3
    fail_fast_window_s: float = 600.0
    stuck_timeout_s: float = 300.0
    heartbeat_interval_s: float = 10.0
    heartbeat_timeout_s: float = 60.0
    # download semaphore (004)
    slots_per_business: int = 2
    inflight_ttl_s: float = 900.0
    before_inflight_ttl_s: float = 120.0
    queued_ttl_s: float = 1200.0
    slot_defer_s: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0, 40.0)
    before_slot_wait_s: float = 60.0
    # media downloads: redirects followed, each only to an allowed media host
    media_redirects_max: int = 3
    # bulk delete (003)
    bulk_batch_size: int = 50
    bulk_throttle_s: float = 0.2
    bulk_max_runtime_s: float = 300.0
    bulk_max_batch_failures: int = 10
    lock_ttl_s: tuple[tuple[str, float], ...] = SEED_LOCK_TTL_S
    # browser player (002)
    player_max_retries: int = 12
    player_base_s: float = 1.0
    player_cap_s: float = 20.0
    faults: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {self.variant!r}")
        unknown = sorted(set(self.extra_faults) - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(sorted(FAULTS))}")
        if not (self.time_scale > 0 and math.isfinite(self.time_scale)):
            raise ValueError(f"time_scale must be a positive number, not {self.time_scale!r}")
        if self.max_recording_retries < 0:
            raise ValueError("max_recording_retries must be >= 0")
        if self.max_fetch_retries < 0:
            raise ValueError("max_fetch_retries must be >= 0")
        if self.fail_fast_max_attempts < 1:
            raise ValueError("fail_fast_max_attempts must be >= 1")
        if self.slots_per_business < 1:
            raise ValueError("slots_per_business must be >= 1")
        object.__setattr__(self, "faults", VARIANT_FAULTS[self.variant] | frozenset(self.extra_faults))

    def has(self, fault: str) -> bool:
        """True when `fault` is switched on, by the variant or by `extra_faults`."""
        if fault not in FAULTS:
            raise KeyError(f"unknown fault {fault!r}")
        return fault in self.faults

    def wall(self, policy_s: float) -> float:
        """Policy seconds → wall seconds under `time_scale`."""
        return policy_s * self.time_scale

    def wall_ms(self, policy_s: float) -> int:
        """Policy seconds → whole wall milliseconds for Redis PX/PEXPIRE, never below 1."""
        return max(1, int(round(policy_s * self.time_scale * 1000)))

    def policy_seconds(self, wall_s: float) -> float:
        """Wall seconds → policy seconds (how histories record time)."""
        return wall_s / self.time_scale


# --------------------------------------------------------------------------- construction

_OVERRIDABLE = {f.name: f for f in dataclasses.fields(Policy) if f.init and f.name not in ("variant", "extra_faults")}


def parse_faults(text: str | None) -> frozenset[str]:
    """`'a,b'` → {'a','b'}; blanks ignored; unknown names raise ValueError listing the known ones."""
    names = frozenset(n.strip() for n in (text or "").split(",") if n.strip())
    unknown = sorted(names - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(sorted(FAULTS))}")
    return names


def _parse_value(name: str, raw: object) -> object:
    current = _OVERRIDABLE[name]
    kind = current.type if isinstance(current.type, str) else getattr(current.type, "__name__", "")
    try:
        if kind == "int":
            return int(raw)  # type: ignore[arg-type]
        if kind == "float":
            return float(raw)  # type: ignore[arg-type]
        if kind.startswith("tuple[float"):
            items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
            return tuple(float(x) for x in items)
        if name == "lock_ttl_s":
            return _parse_lock_ttls(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} takes a {kind}, not {raw!r}") from None
    raise ValueError(f"{name} cannot be overridden")


def _parse_lock_ttls(raw: object) -> tuple[tuple[str, float], ...]:
    """`'delete_leads_bulk:2,default:5'` (or a mapping) → seed 003's table with those entries
    replaced or added; the other operations keep their seed TTLs."""
    pairs = raw.items() if isinstance(raw, Mapping) else (
        item.split(":", 1) for item in str(raw).split(",") if item.strip())
    table = dict(SEED_LOCK_TTL_S)
    for op, ttl in pairs:
        table[str(op).strip()] = float(ttl)
    return tuple(table.items())


def format_policy_value(value: object) -> str:
    """The inverse of the parsing above, for `NAME=VALUE` in LOOPFIX_POLICY."""
    if isinstance(value, tuple):
        return ",".join(f"{v[0]}:{v[1]:g}" if isinstance(v, tuple) else f"{v:g}" for v in value)
    return str(value)


def make_policy(
    variant: str = "fixed",
    faults: str | Sequence[str] | None = None,
    time_scale: float | str = 1.0,
    overrides: Mapping[str, object] | None = None,
) -> Policy:
    """Build a Policy from loose settings (env strings, CLI `--set k=v`, a scenario's [policy]).

    Raises ValueError with a message that says what to fix.
    """
    extra = parse_faults(faults) if isinstance(faults, str) or faults is None else parse_faults(",".join(faults))
    try:
        scale = float(time_scale)
    except (TypeError, ValueError):
        raise ValueError(f"time_scale must be a number, not {time_scale!r}") from None
    values: dict[str, object] = {}
    for name, raw in (overrides or {}).items():
        key = {"max_retries": "max_recording_retries"}.get(name, name)
        if key not in _OVERRIDABLE or key in ("time_scale", "faults"):
            raise ValueError(f"unknown policy constant {name!r}; known: {', '.join(sorted(_OVERRIDABLE))}")
        values[key] = _parse_value(key, raw)
    return Policy(variant=variant, extra_faults=extra, time_scale=scale, **values)  # type: ignore[arg-type]


def split_assignments(text: str) -> list[str]:
    """LOOPFIX_POLICY's `'a=1,slot_defer_s=2,5,10,b=x'` → `['a=1', 'slot_defer_s=2,5,10', 'b=x']`:
    an item without `=` continues the previous value (a list-valued constant)."""
    items: list[str] = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        if "=" not in part and items:
            items[-1] += "," + part.strip()
        else:
            items.append(part.strip())
    return items


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """`['max_retries=6']` → {'max_retries': '6'}; a malformed item raises ValueError."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        out[name.strip()] = value.strip()
    return out


def describe(p: Policy) -> dict[str, object]:
    """Every constant, the backoff schedule with its sum, and the seeds' '~52 min' claim checked."""
    constants = {f.name: getattr(p, f.name) for f in dataclasses.fields(Policy) if f.name != "extra_faults"}
    constants["faults"] = sorted(p.faults)
    constants["lock_ttl_s"] = dict(p.lock_ttl_s)
    constants["slot_defer_s"] = list(p.slot_defer_s)
    schedule = backoff_schedule(p)
    claimed_s = 52 * 60
    six = dataclasses.replace(p, max_recording_retries=6)
    phases = budget_phases(p)
    return {
        "constants": constants,
        "backoff_schedule_s": schedule,
        "backoff_total_s": sum(schedule),
        "fetch_backoff_schedule_s": backoff_schedule(p, "fetch"),
        "fetch_backoff_total_s": backoff_total(p, "fetch"),
        "retry_bound": {
            "budgets": {ph: retry_budget(ph, p) for ph in phases},
            "max_runs": max_recording_runs(p),
            "max_backoff_wait_s": sum(backoff_total(p, ph) for ph in phases),
            "bounded": not p.has("infinite_immediate_retry"),
            "explanation": (
                "one budget (shared_retry_budget): CallLog waits and fetch failures spend the same "
                f"{p.max_recording_retries} retries" if len(phases) == 1 else
                f"{p.max_recording_retries} retries waiting for the CallLog + {p.max_fetch_retries} fetching the "
                f"audio, each on the backoff schedule: at most {max_recording_runs(p)} runs and "
                f"{backoff_total(p, 'calllog'):g} + {backoff_total(p, 'fetch'):g} s of backoff"
            ) + ("" if not p.has("infinite_immediate_retry") else "; infinite_immediate_retry: no bound at all"),
        },
        "claim_52_min": {
            "claimed_s": claimed_s,
            "configured_total_s": sum(schedule),
            "holds": abs(sum(schedule) - claimed_s) <= 0.05 * claimed_s,
            "six_retries_total_s": backoff_total(six),
            "explanation": (
                f"{'+'.join(f'{d:g}' for d in schedule)} = {sum(schedule):g} s = {sum(schedule) / 60:g} min; "
                f"the seeds' '~52 minutes' needs a sixth retry at the {p.backoff_cap_s:g} s cap: "
                f"{backoff_total(six):g} s = {backoff_total(six) / 60:g} min"
            ),
        },
    }


# --------------------------------------------------------------------------- recording retries


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


@dataclass(frozen=True)
class RetryDecision:
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


# --------------------------------------------------------------------------- stuck detection


@dataclass(frozen=True)
class RunState:
    """A recording run as the playback decision sees it; times are policy seconds, None = unset."""

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


# --------------------------------------------------------------------------- playback


@dataclass(frozen=True)
class PlaybackState:
    """What GET /api/recordings/file/<call_sid> knows before it decides."""

    has_recording_url: bool
    file_ready: bool
    run: RunState | None
    worker_alive: bool | None = None  # for a waiting run (WAITING_RUN_STATUSES); None: unknown


@dataclass(frozen=True)
class PlaybackDecision:
    """kind: serve (200) | not_found (404) | wait (202) | start (create a job; `reason` says why) |
    no_worker (a job waits but no worker is alive: count a fail-fast attempt, 202 or 500)."""

    kind: str
    status: int
    retry_after_s: float | None = None
    reason: str = ""


def playback_decision(state: PlaybackState, now: float, p: Policy) -> PlaybackDecision:
    """Seed 002's status semantics: 200 ready, 202 processing, 404 never, start a job otherwise."""
    if state.file_ready:
        return PlaybackDecision("serve", 200, reason="file ready")
    if not state.has_recording_url:
        return PlaybackDecision("not_found", 404, reason="no recording URL for this call")
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


@dataclass(frozen=True)
class PlaybackGateAsk:
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


@dataclass(frozen=True)
class PlaybackAction:
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


def fail_fast_tripped(attempts_in_window: int, p: Policy) -> bool:
    """True when this attempt (counted, 1-based, in the window) exceeds the limit (002)."""
    if p.has("no_fail_fast"):
        return False
    return attempts_in_window > p.fail_fast_max_attempts


ENQUEUE_REASON_STATUS = {"enqueued": 202, "cached": 200, "duplicate": 200, "error": 500}


def enqueue_status(reason: str) -> int:
    """Seed 001's tuple reason → HTTP status: an enqueue error is a 500, never a 200."""
    return ENQUEUE_REASON_STATUS[reason]


def reported_enqueue_reason(reason: str, p: Policy) -> str:
    """The reason the enqueue reports: before (enqueue_error_hidden) a failed enqueue returns
    False like a dedup hit, so the caller reports 'duplicate' (001)."""
    return "duplicate" if reason == "error" and p.has("enqueue_error_hidden") else reason


def enqueue_dedup_ttl(p: Policy) -> float:
    return p.before_enqueue_dedup_ttl_s if p.has("long_dedup_ttl") else p.enqueue_dedup_ttl_s


def enqueue_retry_is_int(via: str, p: Policy) -> bool:
    """Does an enqueue made `via` this path pass `retry=3` as an int, so RQ raises (001)?

    Only the enqueue API's (`via == "enqueue_api"`, seed 001's routes_calls endpoints): that is
    where seed 001's loop lived (a failed enqueue answered 200 'duplicate' forever). The webhook,
    playback and retry paths are taken to predate the `retry=` argument, so that in `before`
    seed 000's immediate-retry loop and seed 003's job-per-click loop still run instead of every
    job failing at enqueue.
    """
    return via == "enqueue_api" and p.has("retry_as_int")


def playback_dedups(p: Policy) -> bool:
    """Does a play click pass the playback mark and the enqueue dedup before it enqueues?

    before (enqueue_every_click): neither — the play route predates PlaybackDedup (003) and
    enqueued on every click, so repeated clicks give duplicate jobs.
    """
    return not p.has("enqueue_every_click")


# --------------------------------------------------------------------------- URLs


def normalise_recording_url(url: str, p: Policy) -> str:
    """Twilio's RecordingUrl → the audio URL to store (001).

    fixed: a `.json` *suffix* of the path becomes `.mp3`; an extension-less recording URL gets
    `.mp3`; anything else is unchanged (query and fragment kept). seed: `.replace` everywhere;
    before: stored as sent.
    """
    if p.has("json_recording_url"):
        return url
    if p.has("json_replace_everywhere"):
        return url.replace(".json", ".mp3") if url.endswith(".json") else url
    parts = urlsplit(url)
    path = parts.path
    last = path.rsplit("/", 1)[-1]
    if last.endswith(".json"):
        path = path[: -len(".json")] + ".mp3"
    elif last and "." not in last:
        path = path + ".mp3"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def recording_callback_enqueues(recording_known: bool, p: Policy) -> bool:
    """Does a completed-recording callback enqueue a run? Not when its RecordingSid already has
    a run or a file (fixed): Twilio signs no timestamp, so a replay — or Twilio's own retry — is
    a valid callback, and must be idempotent. `webhook_replay_enqueues`: only the enqueue dedup
    window stands between a late replay and a second run."""
    return not recording_known or p.has("webhook_replay_enqueues")


def media_host_allowed(url: str, allowed: Sequence[str]) -> bool:
    """Is `url` on the allowlist? `host` entries allow https only; `host:port` entries allow
    http or https on exactly that port (local stand-ins). User-info and other schemes refuse,
    and so does any whitespace, control or non-ASCII character: urlsplit silently strips some
    of them where requests/urllib3 parse differently, and a URL two parsers read differently
    is how an allowlist is bypassed."""
    if any(not "\x21" <= c <= "\x7e" for c in url):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return False
    host = parts.hostname.lower()
    for entry in allowed:
        entry = entry.strip().lower()
        if not entry:
            continue
        name, _, entry_port = entry.partition(":")
        if entry_port:
            if host == name and port == int(entry_port):
                return True
        elif host == name and parts.scheme == "https" and port in (None, 443):
            return True
    return False


# --------------------------------------------------------------------------- download slots


def slot_defer_delay(defer_count: int, p: Policy) -> float:
    """Delay before a job that found no free slot tries again: 2, 5, 10, 20, 40, 40, ... (004)."""
    return p.slot_defer_s[min(defer_count, len(p.slot_defer_s) - 1)]


def inflight_ttl(p: Policy) -> float:
    return p.before_inflight_ttl_s if p.has("short_inflight_ttl") else p.inflight_ttl_s


# --------------------------------------------------------------------------- browser player


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


def player_outcome(status: int) -> str:
    """Terminal outcome of a session that stopped on `status`."""
    return {200: "played", 206: "played", 404: "not_found", 500: "worker_offline"}.get(status, "gave_up")


# --------------------------------------------------------------------------- bulk delete


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


# --- added for lead deletion (issue 3) ------------------------------------------------------

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


def bulk_dedup_mode(p: Policy) -> str:
    """How a bulk-delete request finds an active job (000):
    'new_job' (before: none, every click makes a job), 'check_then_insert' (seed: look, then
    insert later — concurrent requests all miss), 'constraint' (fixed: insert, and the
    database's one-active-job constraint turns every loser into a read of the winner)."""
    if p.has("new_job_per_delete_click"):
        return "new_job"
    if p.has("delete_check_then_insert"):
        return "check_then_insert"
    return "constraint"


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
