"""The invariants judged from outside a service loopfix did not write (target mode).

A target history holds only what is observable outside the service (`source: target`): every
request and answer of the players, deleters and webhook senders (`client.*`, `webhook.send`,
`recording.created` for an accepted signed recording callback, `lead_job.request`,
`lead.requested`, `lead_job.observe`, `leads.listed`), the workers outages loopfix caused
through the target's hooks (`outage.*`), and every fetch the service made of loopfix's media
stand-in (`download.start` / `download.end` with the fault served and the body's sha256).

Each check says what it can see: a verdict is True, False (with witnesses), "unknown" (the
history does not decide it), or NOT_OBSERVABLE — lock-exclusive and worker-never-blocks
always (they need the service's insides), fail-fast without a workers_stop hook. Not
observable is never a pass: it is printed as such and `invariants.overall` leaves it out of
the exit code only because it says nothing either way.

From the outside:
- loops-terminate: every player session ends within its bounds (the same check as live), and
  no recording is fetched again and again past 1 + its fetch retry budget;
- no-duplicate-download: at most one completed fetch per recording at the stand-in;
- one-job-per-storm: no two fetches of one recording at once, and none again within the dedup
  window of a whole fetch of a recording a storm clicked (a click storm's second job);
- backoff-schedule: a recording's retries, timed from the end of a failed fetch to the start of
  the next, against the declared schedule; a retry that comes early or one too many is broken,
  a late one is a figure, broken only past the stated tolerance (a retry that fell due while
  loopfix had every worker stopped is late only past the outage's end);
- fail-fast: while every worker is stopped, the poll past the attempt limit (polls at least a
  playback mark apart, within the window, once the service can know no worker is alive) must
  not be another 202;
- status-semantics: 202 with Retry-After; 404 never for an accepted recording; a 200 carries the
  very bytes the stand-in served for that recording; an unsigned callback is refused and never
  acted on;
- idempotent-delete: no two delete jobs of a business active at once, no lead deleted twice,
  no other tenant's lead gone;
- nothing-lost: every accepted recording (not one whose every fetch fails by design) is playable
  by the end; every lead a business asked to delete is gone.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

from loopfix.harness import invariants as inv
from loopfix.harness.query import of, outage_windows, promotable_at, promotion_halts
from loopfix.harness.verdicts import NOT_OBSERVABLE, Anomaly, Event, Verdict, guarded, verdict
from loopfix.reference_app import policy as policy_mod
from loopfix.reference_app.policy import Policy

REL_TOL = 0.02  # of the expected backoff, both ways
NOT_OBSERVABLE_WHY = {
    "lock-exclusive": "the service's locks are inside it: two jobs holding one business's lock leave no trace outside",
    "worker-never-blocks": "a worker sleeping inside the service leaves no trace outside",
    "fail-fast": "needs the target's workers_stop/workers_start hooks (none ran)",
}


def _not_observable(name: str, why: str | None = None) -> Verdict:
    return Verdict(name, NOT_OBSERVABLE, {}, {"why": why or NOT_OBSERVABLE_WHY[name]})


def _fetches(history: Iterable[Event]) -> dict[Any, list[dict[str, Any]]]:
    """Per recording, its fetches in start order: {start, end (None while open), ok}."""
    by_rec: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    open_: dict[tuple[Any, Any], dict[str, Any]] = {}
    for e in of(history, "download.start", "download.end"):
        key = (e.get("recording_sid"), e.get("fetch"))
        if e["kind"] == "download.start":
            f = {"start": e, "end": None}
            open_[key] = f
            by_rec[key[0]].append(f)
        elif key in open_:
            open_.pop(key)["end"] = e
    return by_rec


def _plays(history: Iterable[Event], rec_of_call: Mapping[Any, Any]) -> dict[Any, list[float]]:
    """Per recording, the times its call's player requests were sent."""
    out: dict[Any, list[float]] = defaultdict(list)
    for e in of(history, "client.request"):
        rec = rec_of_call.get(e.get("call_sid"))
        if rec is not None:
            out[rec].append(float(e["t"]) - float(e.get("latency_s") or 0.0))
    return out


def _recordings(history: Iterable[Event]) -> dict[Any, Event]:
    """recording_sid -> its recording.created (an accepted, signed recording callback)."""
    return {e.get("recording_sid"): e for e in of(history, "recording.created")}


def _attempt_runs(fetches: list[dict[str, Any]], plays: list[float], budget: int):
    """Yield (fetch, its number in the current run of retries, the failed fetch before it or
    None). Numbering restarts after a completed fetch, and after the budget was spent when a
    play came since (the service may start a new job for a player once the last one failed)."""
    n, last_failed = 0, None
    for f in fetches:
        start = float(f["start"]["t"])
        if last_failed is not None and n > budget:
            since = float(last_failed["end"]["t"])
            if any(since <= t <= start for t in plays):
                n, last_failed = 0, None
        n += 1
        yield f, n, last_failed
        end = f["end"]
        if end is None or end.get("ok"):
            n, last_failed = 0, None
        else:
            last_failed = f


def check_loops_terminate(history: Sequence[Event], p: Policy) -> Verdict:
    """Sessions as live (client.*), and no recording fetched past 1 + its fetch retry budget."""
    base = inv.check_loops_terminate(history, p)
    budget = policy_mod.retry_budget("fetch", p)
    recs = _recordings(history)
    plays = _plays(history, {e.get("call_sid"): sid for sid, e in recs.items()})
    found = [a for group in base.anomalies.values() for a in group]
    worst = 0
    for sid, fetches in _fetches(history).items():
        for f, n, _prev in _attempt_runs(fetches, plays.get(sid, []), budget):
            worst = max(worst, n)
            if n == budget + 2:
                found.append(Anomaly("fetch-loop", {"recording_sid": sid, "fetches": n, "bound": budget + 1},
                                     (fetches[0]["start"], f["start"])))
    if base.valid not in (True, False) and not found:
        return base
    return verdict("loops-terminate", found, {**base.figure, "max_fetch_run": worst, "fetch_run_bound": budget + 1})


def check_one_job_per_storm(history: Sequence[Event], p: Policy) -> Verdict:
    """A burst of clicks makes at most one job: no two fetches of one recording at once, and no
    recording a storm (or double-click) clicked fetched again within the dedup window
    (playback_mark_ttl_s) of a fetch that got it whole — a second job queued behind the first.
    A retry after a failed fetch waits its backoff, longer than the window; decided only when a
    storm clicked."""
    window = p.playback_mark_ttl_s
    rec_of_call = {e.get("call_sid"): sid for sid, e in _recordings(history).items()}
    stormed = {rec_of_call.get(e.get("call_sid")) for e in of(history, "client.start")
               if e.get("role") in ("storm", "double_clicker")} - {None}
    found: list[Anomaly] = []
    for sid, fetches in _fetches(history).items():
        for i, f in enumerate(fetches[1:], 1):
            before = fetches[i - 1]
            end = before["end"]
            # two at once: the next began while this one was still being sent, or before this one
            # ended with the whole body taken (a fetch the service gave up on, silent, is neither)
            began = float(f["start"]["t"])
            if end is None or (began < float(end["t"]) and (
                    end.get("ok") or began < float(end.get("quiet_since", end["t"])))):
                found.append(Anomaly("concurrent-fetches", {"recording_sid": sid}, (before["start"], f["start"])))
            elif sid in stormed and end.get("ok") and began - float(end["t"]) < window:
                found.append(Anomaly("storm-refetch", {"recording_sid": sid, "after_s": began - float(end["t"]),
                                                       "window_s": window}, (end, f["start"])))
    why = None if stormed else "no click storm or double-click on an accepted recording in the history"
    return verdict("one-job-per-storm", found, {"window_s": window, "stormed_recordings": len(stormed)}, why)


def check_backoff_schedule(history: Sequence[Event], p: Policy, early_s: float = 1.0,
                           late_s: float = 1.0) -> Verdict:
    """Retry gaps at the stand-in against backoff_delay: `early_s`/`late_s` (policy seconds)
    plus REL_TOL of the gap are the stated tolerance each way."""
    budget = policy_mod.retry_budget("fetch", p)
    recs = _recordings(history)
    plays = _plays(history, {e.get("call_sid"): sid for sid, e in recs.items()})
    found: list[Anomaly] = []
    halts = promotion_halts(history)  # every worker stopped: a due retry waits for them, not late
    gaps = 0
    lateness: list[float] = []
    full: list[float] = []
    for sid, fetches in _fetches(history).items():
        total = 0.0
        for f, n, prev in _attempt_runs(fetches, plays.get(sid, []), budget):
            if n > budget + 1:
                found.append(Anomaly("fetch-retry-over-budget", {"recording_sid": sid, "attempt": n - 1,
                                                                  "max": budget},
                                     (f["start"],)))
                continue
            if prev is None:
                total = 0.0
                continue
            expected = policy_mod.backoff_delay(n - 1, p)
            # the service gave up on a fetch between the stand-in's last byte and the recorded end
            failed_at, started = float(prev["end"]["t"]), float(f["start"]["t"])
            gave_up_earliest = min(failed_at, float(prev["end"].get("quiet_since", failed_at)))
            gap = started - failed_at
            gaps += 1
            total += gap
            late = started - promotable_at(failed_at + expected, halts)
            lateness.append(late)
            facts = {"recording_sid": sid, "attempt": n - 1, "gap_s": gap, "expected_s": expected}
            if started - gave_up_earliest < expected - (REL_TOL * expected + early_s):
                found.append(Anomaly("fetch-retry-too-soon", facts, (prev["end"], f["start"])))
            elif late > REL_TOL * expected + late_s:
                found.append(Anomaly("fetch-retry-too-late", facts, (prev["end"], f["start"])))
            if n == budget + 1:
                full.append(total)
    figure = {"rel_tol": REL_TOL, "early_tol_s": early_s, "late_tol_s": late_s, "gaps_checked": gaps,
              "max_late_s": max(lateness, default=0.0), "max_early_s": -min(lateness, default=0.0),
              "configured_schedule_s": policy_mod.backoff_schedule(p, "fetch"),
              "configured_total_s": policy_mod.backoff_total(p, "fetch"),
              "recordings_with_full_schedule": len(full),
              "measured_full_schedule_total_s": sum(full) / len(full) if full else None}
    return verdict("backoff-schedule", found, figure, None if gaps or found else "no failed fetch was retried")


def _all_workers_stopped(history: Sequence[Event]) -> list[tuple[float, float]]:
    return [(float(s["t"]), end) for s, end in outage_windows(history)
            if s.get("target") == "workers" and not s.get("workers")]


def check_fail_fast(history: Sequence[Event], p: Policy, hooks: bool = True) -> Verdict:
    """While every worker is stopped: per call, polls at least playback_mark_ttl_s apart and
    later than heartbeat_timeout_s into the outage (the service may take that long to know),
    within fail_fast_window_s of the first; the one past fail_fast_max_attempts must not be
    202."""
    windows = _all_workers_stopped(history)
    if not hooks or not windows:
        return _not_observable("fail-fast")
    limit, mark, window = p.fail_fast_max_attempts, p.playback_mark_ttl_s, p.fail_fast_window_s
    found: list[Anomaly] = []
    decided = trips = 0
    per_call: dict[Any, list[Event]] = defaultdict(list)
    for e in of(history, "client.request"):
        sent = float(e["t"]) - float(e.get("latency_s") or 0.0)
        if any(start + p.heartbeat_timeout_s <= sent and float(e["t"]) <= end for start, end in windows):
            per_call[e.get("call_sid")].append(e)
    for call, polls in per_call.items():
        counted: list[Event] = []
        for e in polls:
            if counted and float(e["t"]) - float(counted[-1]["t"]) < mark:
                continue
            if counted and float(e["t"]) - float(counted[0]["t"]) >= window:
                counted = []
            counted.append(e)
            if e.get("status") == 500:
                trips += 1
                break
            if len(counted) == limit + 1:
                decided += 1
                if e.get("status") == 202:
                    found.append(Anomaly("fail-fast-never-trips", {"call_sid": call, "polls": len(counted),
                                                                    "limit": limit, "window_s": window},
                                         tuple(counted)))
                break
    figure = {"limit": limit, "window_s": window, "calls_decided": decided, "trips_seen": trips}
    why = None if decided or trips else "no call was polled past the attempt limit while every worker was stopped"
    return verdict("fail-fast", found, figure, why)


def check_status_semantics(history: Sequence[Event], p: Policy) -> Verdict:
    """The live rules (202 has Retry-After, 404 only without a recording, 200 is audio), plus:
    a 200's body is a body the stand-in served for that recording; an unsigned callback is
    refused and its recording never fetched."""
    base = inv.check_status_semantics(history, p)
    found = [a for group in base.anomalies.values() for a in group]
    recs = _recordings(history)
    rec_of_call = {e.get("call_sid"): sid for sid, e in recs.items()}
    served: dict[Any, set[str]] = defaultdict(set)
    fetched: dict[Any, Event] = {}
    for e in of(history, "download.end"):
        fetched.setdefault(e.get("recording_sid"), e)
        if e.get("ok") and e.get("sha256"):
            served[e.get("recording_sid")].add(e["sha256"])
    for e in of(history, "client.request"):
        sha = e.get("body_sha256")
        rec = rec_of_call.get(e.get("call_sid"))
        if e.get("status") == 200 and sha and rec is not None and sha not in served.get(rec, ()):
            found.append(Anomaly("200-not-the-recording", {"call_sid": e.get("call_sid"), "recording_sid": rec},
                                 (recs[rec], e)))
    for e in of(history, "webhook.send"):
        if e.get("signed") is False and 200 <= int(e.get("status") or 0) < 300:
            found.append(Anomaly("unsigned-callback-accepted", {"hook": e.get("hook"), "call_sid": e.get("call_sid"),
                                                                 "status": e.get("status")}, (e,)))
        if e.get("signed") is False and e.get("recording_sid") in fetched and e.get("recording_sid") not in recs:
            found.append(Anomaly("unsigned-callback-fetched", {"recording_sid": e.get("recording_sid")},
                                 (e, fetched[e.get("recording_sid")])))
    return verdict("status-semantics", found, dict(base.figure))


def check_idempotent_delete(history: Sequence[Event], p: Policy) -> Verdict:
    """Two jobs of one business are active at once when each was seen (its 202) no later than
    the other was last seen active; a lead is deleted twice when a business's jobs report more
    deletions than leads went; another tenant's lead must not go."""
    seen: dict[tuple[Any, Any], Event] = {}
    active: dict[tuple[Any, Any], Event] = {}
    succeeded: dict[tuple[Any, Any], int] = {}
    for e in of(history, "lead_job.request", "lead_job.observe"):
        key = (e.get("business_id"), e.get("job_id"))
        if e["kind"] == "lead_job.request":
            seen.setdefault(key, e)
        else:
            if e.get("state") in ("queued", "running", "paused"):
                active[key] = e
            if e.get("succeeded") is not None:
                succeeded[key] = int(e["succeeded"])
    found: list[Anomaly] = []
    by_business: dict[Any, list[Any]] = defaultdict(list)
    for b, job in seen:
        by_business[b].append(job)
    for b, jobs in by_business.items():
        for i, x in enumerate(jobs):
            for y in jobs[i + 1:]:
                sx, sy, ax, ay = seen[(b, x)], seen[(b, y)], active.get((b, x)), active.get((b, y))
                if ax and ay and float(sx["t"]) <= float(ay["t"]) and float(sy["t"]) <= float(ax["t"]):
                    found.append(Anomaly("two-jobs-active", {"business_id": b, "job_a": x, "job_b": y},
                                         (sx, sy, ax, ay)))
    listed = _listed(history)
    gone: dict[Any, set[int]] = {}
    for b, start in listed["start"].items():
        end = listed["end"].get(b)
        if end is not None:
            gone[b] = set(start) - set(end)
    reported, went = sum(succeeded.values()), sum(map(len, gone.values()))
    if succeeded and reported > went:  # more deletions than leads went: some lead was deleted twice
        found.append(Anomaly("more-deletions-than-leads", {"reported": reported, "gone": went},
                             tuple(of(history, "lead_job.observe"))[-2:]))
    requested = {(e.get("business_id"), e.get("lead_id")) for e in of(history, "lead.requested")}
    asked_by: dict[Any, set[Any]] = defaultdict(set)
    for e in of(history, "lead_job.request"):
        for lead in e.get("lead_ids") or ():
            asked_by[lead].add(e.get("business_id"))
    for b, ids in gone.items():
        for lead in sorted(ids):
            if (b, lead) not in requested:
                kind = "other-tenant-lead-gone" if asked_by.get(lead, set()) - {b} else "unrequested-lead-gone"
                found.append(Anomaly(kind, {"business_id": b, "lead_id": lead}, (listed["end_events"][b],)))
    figure = {"jobs": len(seen), "businesses": len(by_business),
              "leads_gone": sum(map(len, gone.values()))}
    return verdict("idempotent-delete", found, figure, None if seen else "no bulk-delete request was answered")


def _listed(history: Iterable[Event]) -> dict[str, Any]:
    """{"start": {business: {lead: True}}, "end": {...}, "end_events": {business: event}}."""
    out: dict[str, Any] = {"start": {}, "end": {}, "end_events": {}}
    for e in of(history, "leads.listed"):
        if e.get("lead_ids") is None:
            continue
        out[e.get("phase")][e.get("business_id")] = dict.fromkeys(int(x) for x in e["lead_ids"])
        if e.get("phase") == "end":
            out["end_events"][e.get("business_id")] = e
    return out


def check_nothing_lost(history: Sequence[Event], p: Policy) -> Verdict:
    """Every accepted recording (not one planned to fail for good) played by the end; every lead
    a business asked to delete is gone from its listing."""
    open_outages = [s for s, end in outage_windows(history) if end == math.inf]
    played = {e.get("call_sid") for e in of(history, "client.request") if e.get("status") == 200
              and e.get("audio_ok") is True}
    last_poll: dict[Any, Event] = {}
    for e in of(history, "client.request"):
        last_poll[e.get("call_sid")] = e
    found: list[Anomaly] = []
    recs = [e for e in of(history, "recording.created") if e.get("has_url") and not e.get("fails_by_design")]
    for e in recs:
        if e.get("call_sid") not in played:
            found.append(Anomaly("recording-never-playable", {"call_sid": e.get("call_sid"),
                                                              "recording_sid": e.get("recording_sid")},
                                 tuple(w for w in (e, last_poll.get(e.get("call_sid"))) if w)))
    listed = _listed(history)
    undecided = []
    for e in of(history, "lead.requested"):
        end = listed["end"].get(e.get("business_id"))
        if end is None:
            undecided.append(e.get("business_id"))
        elif int(e.get("lead_id")) in end:
            found.append(Anomaly("lead-not-deleted", {"business_id": e.get("business_id"), "lead_id": e.get("lead_id")},
                                 (e, listed["end_events"][e.get("business_id")])))
    why = None
    if open_outages:
        why = "the history ends during an outage: nothing-lost is judged only once outages are over"
        found = []
    elif undecided:
        why = f"no final lead listing for business(es) {sorted(set(map(str, undecided)))}"
    figure = {"recordings_accepted": len(recs), "played": len(played & {e.get("call_sid") for e in recs}),
              "leads_requested": len(of(history, "lead.requested"))}
    return verdict("nothing-lost", found, figure, why)


def check_target(history: Sequence[Event], p: Policy, *, hooks: bool, early_s: float, late_s: float) -> list[Verdict]:
    """Every invariant from outside, in DESIGN.md's order; `hooks`: the workers hooks ran."""
    checks = {
        "loops-terminate": lambda: check_loops_terminate(history, p),
        "no-duplicate-download": lambda: inv.check_no_duplicate_download(history, p),
        "one-job-per-storm": lambda: check_one_job_per_storm(history, p),
        "backoff-schedule": lambda: check_backoff_schedule(history, p, early_s, late_s),
        "fail-fast": lambda: check_fail_fast(history, p, hooks),
        "status-semantics": lambda: check_status_semantics(history, p),
        "idempotent-delete": lambda: check_idempotent_delete(history, p),
        "lock-exclusive": lambda: _not_observable("lock-exclusive"),
        "nothing-lost": lambda: check_nothing_lost(history, p),
        "worker-never-blocks": lambda: _not_observable("worker-never-blocks"),
    }
    return [guarded(name, checks[name])() for name in inv.INVARIANTS]


inv.TEMPLATES.update({
    "fetch-loop": "recording {recording_sid} fetched {fetches} times in a row without success (bound {bound})",
    "concurrent-fetches": "recording {recording_sid} was fetched twice at once",
    "storm-refetch": "recording {recording_sid}, clicked by a storm, was fetched again {after_s:.1f} s after a "
                     "whole fetch (window {window_s:g} s)",
    "fail-fast-never-trips": "{call_sid}: poll {polls} while every worker was stopped still answered 202 "
                             "(limit {limit} per {window_s:g} s)",
    "200-not-the-recording": "200 for {call_sid} carried bytes the stand-in never served for {recording_sid}",
    "unsigned-callback-accepted": "an unsigned {hook} callback for {call_sid} was accepted ({status})",
    "unsigned-callback-fetched": "recording {recording_sid}, announced only by an unsigned callback, was fetched",
    "two-jobs-active": "business {business_id}: delete jobs {job_a} and {job_b} were active at once",
    "other-tenant-lead-gone": "lead {lead_id} of business {business_id} is gone though only another tenant "
                              "asked to delete it",
    "unrequested-lead-gone": "lead {lead_id} of business {business_id} is gone though no request named it",
    "more-deletions-than-leads": "the delete jobs report {reported} deletions, {gone} leads went",
    "fetch-retry-over-budget": "recording {recording_sid} fetch retry {attempt} (budget {max})",
    "fetch-retry-too-soon": "recording {recording_sid} retry {attempt} came {gap_s:.1f} s after the failed fetch "
                            "(policy {expected_s:g} s)",
    "fetch-retry-too-late": "recording {recording_sid} retry {attempt} came {gap_s:.1f} s after the failed fetch "
                            "(policy {expected_s:g} s)",
    "recording-never-playable": "recording {recording_sid} ({call_sid}) was accepted but never played",
})
