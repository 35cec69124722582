"""What a checker says: an `Anomaly` (its facts and witness events), a `Verdict` (holds,
broken, "unknown" or — in target mode — "not observable"), how verdicts compose (`overall`) and
how they read as text (`render_*`, from each anomaly type's template; explanations are data
first, prose second). The checkers are in harness/invariants.py and harness/outside.py.
"""
from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

Event = Mapping[str, Any]
UNKNOWN = "unknown"
NOT_OBSERVABLE = "not observable"  # target mode: the invariant needs the service's insides
MAX_EXAMPLES = 20  # anomalies kept per type; the figure counts them all


@dataclass(frozen=True)
class Anomaly:
    """One counter-example: its type, the facts that explain it, the events that prove it."""

    type: str
    facts: Mapping[str, Any]
    witnesses: tuple[Event, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "facts": dict(self.facts), "witnesses": [dict(w) for w in self.witnesses]}


@dataclass(frozen=True)
class Verdict:
    """valid: True (holds), False (broken), or "unknown" (could not be decided)."""

    name: str
    valid: bool | str
    anomalies: Mapping[str, tuple[Anomaly, ...]] = field(default_factory=dict)
    figure: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "valid": self.valid,
            "anomalies": {k: [a.to_dict() for a in v] for k, v in self.anomalies.items()},
            "figure": dict(self.figure),
        }

    def witness_kinds(self) -> set[str]:
        """Every event kind named as a witness (handy in tests and summaries)."""
        return {w["kind"] for group in self.anomalies.values() for a in group for w in a.witnesses}


def verdict(name: str, found: Sequence[Anomaly], figure: dict[str, Any], unknown_reason: str | None = None) -> Verdict:
    """The verdict of `found` anomalies: broken if any (grouped by type, MAX_EXAMPLES kept each,
    all counted in the figure), else unknown when `unknown_reason` says why it is undecided,
    else holds."""
    grouped: dict[str, list[Anomaly]] = defaultdict(list)
    for a in found:
        grouped[a.type].append(a)
    figure = dict(figure)
    figure["anomaly_counts"] = {k: len(v) for k, v in sorted(grouped.items())}
    anomalies = {k: tuple(v[:MAX_EXAMPLES]) for k, v in sorted(grouped.items())}
    if found:
        return Verdict(name, False, anomalies, figure)
    if unknown_reason:
        return Verdict(name, UNKNOWN, {"undecided": (Anomaly("undecided", {"reason": unknown_reason}),)}, figure)
    return Verdict(name, True, {}, figure)


def guarded(name: str, check: Callable[..., Verdict]) -> Callable[..., Verdict]:
    """`check` with an exception inside it turned into an `unknown` verdict naming the error:
    a broken checker must never pass."""

    @functools.wraps(check)
    def run(*args: Any, **kwargs: Any) -> Verdict:
        try:
            return check(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported as the verdict, never raised, never a pass
            err = Anomaly("checker-error", {"error": f"{type(exc).__name__}: {exc}"})
            return Verdict(name, UNKNOWN, {"checker-error": (err,)}, {})

    return run


def overall(verdicts: Iterable[Verdict]) -> bool | str:
    """False if any is broken, else unknown if any is undecided, else True. A verdict that is
    not observable (target mode) says nothing either way and is left out — never a pass: it
    is printed as what it is."""
    vs = [v for v in verdicts if v.valid != NOT_OBSERVABLE]
    if any(v.valid is False for v in vs):
        return False
    if any(v.valid == UNKNOWN for v in vs):
        return UNKNOWN
    return True


TEMPLATES: dict[str, str] = {
    "unbounded-session": "client {client} session {session} on {call_sid} made {requests} requests (bound {bound})",
    "looping-session": "client {client} session {session} on {call_sid} made {requests} requests and never ended "
                       "(bound {bound})",
    "unterminated-session": "client {client} session {session} on {call_sid} still open after {age_s:.0f} s "
                            "(bound {bound_s:.0f} s)",
    "non-terminal-outcome": "client {client} session {session} ended with non-terminal outcome {outcome!r}",
    "session-too-long": "client {client} session {session} lasted {duration_s:.0f} s (bound {bound_s:.0f} s)",
    "job-rerun-unbounded": "job {job_id} ({call_sid}) ran {runs} times (bound {bound})",
    "duplicate-download": "recording {recording_sid} downloaded {count} times, by jobs {job_ids}",
    "storm-duplicate-enqueue": "clicks on {call_sid} enqueued {jobs} jobs within {span_s:.3f} s "
                               "(window {window_s:g} s): {job_ids}",
    "too-many-attempts": "job {job_id} retried as {phase} attempt {attempt} (max {max})",
    "delay-not-policy": "job {job_id} {phase} retry {attempt} was given delay {delay_s:g} s, policy says {expected_s:g} s",
    "retry-too-soon": "job {job_id} {phase} retry {attempt} started {gap_s:.2f} s after it was scheduled "
                      "(policy {expected_s:g} s)",
    "retry-too-late": "job {job_id} {phase} retry {attempt} was re-queued {gap_s:.2f} s after it was scheduled "
                      "(policy {expected_s:g} s)",
    "rerun-without-backoff": "job {job_id} re-ran {gap_s:.2f} s after failed attempt {attempt} "
                             "(policy {expected_s:g} s)",
    "too-many-jobs": "{jobs} playback jobs for {call_sid} within {window_s:g} s (limit {limit})",
    "error-not-500": "enqueue error on {call_sid} answered {status}, not 500",
    "202-without-retry-after": "202 for {call_sid} without Retry-After",
    "404-with-recording-url": "404 for {call_sid}, which has a recording URL",
    "200-without-audio": "{status} for {call_sid} without audio",
    "second-job-while-active": "business {business_id} got new delete job {new_job} while job {active_job} "
                               "was active",
    "concurrent-delete-jobs": "business {business_id}: job {started_job} started while job {running_job} "
                              "was running",
    "released-anothers-lock": "business {business_id}: job {owner}'s release freed the lock held by {holder}",
    "lock-released-during-pause": "business {business_id}: job {owner} released its lock while paused",
    "recording-not-downloaded": "recording {recording_sid} ({call_sid}) has a URL but was never downloaded",
    "lead-not-deleted": "lead {lead_id} of business {business_id} was requested but never deleted",
    "lead-deleted-twice": "lead {lead_id} of business {business_id} was deleted {count} times",
    "other-tenant-touched": "business {business_id} deleted lead {lead_id}, which belongs to {owner}",
    "unrequested-delete": "business {business_id} deleted lead {lead_id}, which no request named",
    "worker-slept": "job {job_id} slept {seconds:g} s in the worker ({reason})",
    "checker-error": "the checker failed: {error}",
    "undecided": "{reason}",
}


def render_anomaly(a: Anomaly) -> str:
    """One anomaly as one sentence, from its facts."""
    template = TEMPLATES.get(a.type)
    try:
        return template.format(**a.facts) if template else f"{a.type}: {dict(a.facts)}"
    except (KeyError, ValueError, TypeError):
        return f"{a.type}: {dict(a.facts)}"


def render_event(e: Event) -> str:
    """A witness event as `t=12.000 kind key=value ...`."""
    rest = " ".join(f"{k}={e[k]}" for k in sorted(e) if k not in ("t", "kind", "source", "proc"))
    return f"t={float(e['t']):.3f} {e['kind']} {rest}"


def valid_label(valid: bool | str) -> str:
    if valid == NOT_OBSERVABLE:
        return NOT_OBSERVABLE
    return {True: "holds", False: "BROKEN"}.get(valid, "unknown")  # type: ignore[arg-type]


def render_verdict(v: Verdict, examples: int = 2, witnesses: int = 3) -> str:
    """A verdict as a few lines: status, then per anomaly type a count, examples and witnesses."""
    lines = [f"{v.name}: {valid_label(v.valid)}"]
    if v.valid == NOT_OBSERVABLE and v.figure.get("why"):
        lines.append(f"  {v.figure['why']}")
    counts = v.figure.get("anomaly_counts", {})
    for kind, group in v.anomalies.items():
        lines.append(f"  {kind} x{counts.get(kind, len(group))}")
        for a in group[:examples]:
            lines.append(f"    - {render_anomaly(a)}")
            for w in a.witnesses[:witnesses]:
                lines.append(f"        {render_event(w)}")
    return "\n".join(lines)
