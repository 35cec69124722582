"""A `Policy` described as data: every constant, the backoff schedules with their sums, the retry
bound, and the seeds' '~52 minutes' claim checked against the configured schedule.

`loopfix policy` prints it; the backoff-schedule checker and the reports quote its claim. It
decides nothing.
"""
from __future__ import annotations

import dataclasses

from loopfix.reference_app.policy.backoff import (
    backoff_schedule,
    backoff_total,
    budget_phases,
    max_recording_runs,
    retry_budget,
)
from loopfix.reference_app.policy.core import Policy


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
