"""The checks from outside a service (harness/outside.py), on tiny literal histories: each
breaks on the observation it exists for, with its witnesses, holds on a clean one, and says
"not observable" or "unknown" — never holds — where the outside cannot decide."""
from __future__ import annotations

from loopfix.harness import invariants as inv
from loopfix.harness import outside
from loopfix.reference_app.policy import make_policy

P = make_policy("fixed", [], 1.0)


def ev(kind: str, t: float, **fields) -> dict:
    return {"t": t, "kind": kind, "source": "target", "proc": "test", **fields}


def created(t, call="CA1", rec="RE1", **facts):
    return ev("recording.created", t, call_sid=call, recording_sid=rec, business_id=1, has_url=True, **facts)


def fetch(start, end, rec="RE1", n=1, ok=False, sha=None):
    return [ev("download.start", start, job_id=None, call_sid=None, recording_sid=rec, fetch=n),
            ev("download.end", end, job_id=None, call_sid=None, recording_sid=rec, fetch=n, ok=ok, skipped=False,
               bytes=10 if ok else 0, sha256=sha if ok else None, status=200 if ok else 503)]


def poll(t, status, call="CA1", retry_after=3.0, sha=None, client="u1", session=1, n=1, audio=None):
    fields = {"body_sha256": sha} if sha else {}
    return ev("client.request", t, client=client, session=session, call_sid=call, status=status,
              retry_after=retry_after if status == 202 else None, n=n,
              audio_ok=(True if audio is None else audio) if status == 200 else None, latency_s=0.0, **fields)


def session(t0, statuses, call="CA1", client="u1", sha="aa", step=10.0):
    out = [ev("client.start", t0, client=client, session=1, call_sid=call, role="player")]
    for i, status in enumerate(statuses):
        out.append(poll(t0 + i * step, status, call, client=client, n=i + 1, sha=sha if status == 200 else None))
    out.append(ev("client.end", t0 + len(statuses) * step, client=client, session=1, call_sid=call,
                  outcome="played" if statuses[-1] == 200 else "gave_up", requests=len(statuses)))
    return out


def retried(schedule, rec="RE1", last_ok=True, first=0.0):
    """Fetches of one recording: each but the last fails at once, the next starting `gap` later."""
    h, t = [], first
    for i, gap in enumerate(schedule):
        h += fetch(t, t + 1, rec, n=i + 1)
        t = t + 1 + gap
    return h + fetch(t, t + 1, rec, n=len(schedule) + 1, ok=last_ok, sha="aa")


def sort(h):
    return sorted(h, key=lambda e: e["t"])


def by_name(verdicts):
    return {v.name: v for v in verdicts}


def target(history, hooks=True):
    return by_name(outside.check_target(sort(history), P, hooks=hooks, early_s=1.0, late_s=10.0))


# --------------------------------------------------------------------------- backoff-schedule


def test_retries_on_the_declared_schedule_hold_and_report_their_measured_total():
    v = outside.check_backoff_schedule(sort([created(0)] + retried([60, 120, 240, 480, 960], last_ok=False)), P)
    assert v.valid is True
    assert v.figure["recordings_with_full_schedule"] == 1 and v.figure["measured_full_schedule_total_s"] == 1860


def test_a_retry_without_backoff_is_too_soon_with_the_failed_and_the_next_fetch_as_witnesses():
    h = sort([created(0)] + retried([0, 120]))
    v = outside.check_backoff_schedule(h, P)
    assert v.valid is False and set(v.anomalies) == {"fetch-retry-too-soon"}
    a = v.anomalies["fetch-retry-too-soon"][0]
    assert [w["kind"] for w in a.witnesses] == ["download.end", "download.start"] and a.facts["expected_s"] == 60


def test_a_sixth_retry_is_one_too_many():
    v = outside.check_backoff_schedule(sort(retried([60, 120, 240, 480, 960, 1200])), P)
    assert v.valid is False and "fetch-retry-over-budget" in v.anomalies


def test_a_retry_later_than_the_tolerance_is_late_but_not_if_every_worker_was_stopped_meanwhile():
    h = retried([60, 400])
    v = outside.check_backoff_schedule(sort(h), P, late_s=10.0)
    assert v.valid is False and set(v.anomalies) == {"fetch-retry-too-late"}
    halted = h + [ev("outage.start", 100, target="workers", how="stop", workers=0),
                  ev("outage.end", 460, target="workers", how="stop", workers=0)]
    assert outside.check_backoff_schedule(sort(halted), P, late_s=10.0).valid is True


def test_a_new_job_after_the_budget_is_spent_and_a_player_clicked_restarts_the_count():
    h = retried([60, 120, 240, 480, 960], last_ok=False)
    spent = h[-1]["t"]
    h += [poll(spent + 5, 202)] + fetch(spent + 6, spent + 7, n=7, ok=True, sha="aa")
    assert outside.check_backoff_schedule(sort([created(0)] + h), P).valid is True
    without_click = [e for e in h if e["kind"] != "client.request"]
    assert outside.check_backoff_schedule(sort(without_click), P).valid is False


def test_backoff_with_no_failed_fetch_is_unknown_not_a_pass():
    assert outside.check_backoff_schedule(sort(fetch(0, 1, ok=True, sha="aa")), P).valid == inv.UNKNOWN


# --------------------------------------------------------------------------- loops, storms, duplicates


def test_a_recording_fetched_again_and_again_is_a_fetch_loop():
    v = outside.check_loops_terminate(sort(retried([60, 120, 240, 480, 960, 1200, 1200], last_ok=False)), P)
    assert v.valid is False and "fetch-loop" in v.anomalies
    assert outside.check_loops_terminate(sort(retried([60, 120])), P).valid is True


def storm(t, call="CA1"):
    return ev("client.start", t, client="s1", session=1, call_sid=call, role="storm")


def test_two_fetches_of_one_recording_at_once_break_one_job_per_storm():
    h = [created(0), storm(0)] + fetch(1, 5, ok=True, sha="aa") + fetch(2, 6, n=2, ok=True, sha="aa")
    v = outside.check_one_job_per_storm(sort(h), P)
    assert v.valid is False and v.anomalies["concurrent-fetches"][0].witnesses[1]["fetch"] == 2
    assert outside.check_one_job_per_storm(sort([created(0)] + fetch(1, 5, ok=True)), P).valid == inv.UNKNOWN


def test_a_stormed_recording_fetched_again_right_after_a_whole_fetch_is_a_second_job():
    """A storm's second job queued behind the first: it fetches 4 s after the first got the
    whole body (window 15 s); a retry 60 s after a failed fetch is backoff, not a storm."""
    again = [created(0), storm(0)] + fetch(1, 5, ok=True, sha="aa") + fetch(9, 10, n=2, ok=True, sha="aa")
    v = outside.check_one_job_per_storm(sort(again), P)
    assert v.valid is False and set(v.anomalies) == {"storm-refetch"}
    retried_after_failure = [created(0), storm(0)] + fetch(1, 5) + fetch(65, 66, n=2, ok=True, sha="aa")
    assert outside.check_one_job_per_storm(sort(retried_after_failure), P).valid is True
    unclicked = [created(0)] + fetch(1, 5, ok=True, sha="aa") + fetch(9, 10, n=2, ok=True, sha="aa") + [
        storm(0, call="CA2"), created(0, call="CA2", rec="RE2")]
    assert outside.check_one_job_per_storm(sort(unclicked), P).valid is True  # no storm clicked RE1


def test_two_completed_fetches_of_one_recording_are_a_duplicate_download():
    v = target([created(0)] + fetch(1, 2, ok=True, sha="aa") + fetch(50, 51, n=2, ok=True, sha="aa")
               + session(3, [200]))["no-duplicate-download"]
    assert v.valid is False and "duplicate-download" in v.anomalies


# --------------------------------------------------------------------------- fail-fast


def stopped(start=100, end=1000):
    return [ev("outage.start", start, target="workers", how="stop", workers=0),
            ev("outage.end", end, target="workers", how="stop", workers=0)]


def test_a_fourth_202_while_every_worker_is_stopped_breaks_fail_fast_and_a_500_holds():
    polls = [poll(200 + 100 * i, 202, n=i + 1) for i in range(4)]
    v = outside.check_fail_fast(sort(stopped() + polls), P)
    assert v.valid is False and len(v.anomalies["fail-fast-never-trips"][0].witnesses) == 4
    tripped = polls[:3] + [poll(500, 500, n=4)]
    assert outside.check_fail_fast(sort(stopped() + tripped), P).valid is True


def test_polls_before_the_service_can_know_or_inside_one_mark_do_not_count():
    early = [poll(100 + 10 * i, 202, n=i + 1) for i in range(4)]  # within the liveness timeout of the stop
    close = [poll(300 + 5 * i, 202, n=i + 1) for i in range(4)]  # 5 s apart: one playback mark
    assert outside.check_fail_fast(sort(stopped() + early), P).valid == inv.UNKNOWN
    assert outside.check_fail_fast(sort(stopped() + close), P).valid == inv.UNKNOWN


def test_fail_fast_without_the_workers_hooks_is_not_observable_and_not_counted_either_way():
    v = target([poll(200, 202)], hooks=False)["fail-fast"]
    assert v.valid == inv.NOT_OBSERVABLE and v.valid is not True
    assert inv.overall([v]) is True and inv.overall([v, inv.Verdict("x", inv.UNKNOWN)]) == inv.UNKNOWN


# --------------------------------------------------------------------------- status-semantics


def test_a_202_without_retry_after_and_a_200_with_another_recordings_bytes_break_status_semantics():
    h = [created(0)] + fetch(1, 2, ok=True, sha="aa")
    h += [poll(3, 202, retry_after=None), poll(10, 200, sha="bb")]
    v = outside.check_status_semantics(sort(h), P)
    assert v.valid is False and set(v.anomalies) == {"202-without-retry-after", "200-not-the-recording"}
    ok = [created(0)] + fetch(1, 2, ok=True, sha="aa") + [poll(3, 202), poll(10, 200, sha="aa")]
    assert outside.check_status_semantics(sort(ok), P).valid is True


def test_an_accepted_or_fetched_unsigned_callback_breaks_status_semantics():
    sent = ev("webhook.send", 1, hook="recording", call_sid="CA9", recording_sid="RE9", business_id=1,
              signed=False, status=204)
    v = outside.check_status_semantics(sort([sent] + fetch(2, 3, rec="RE9", ok=True, sha="aa")), P)
    assert set(v.anomalies) == {"unsigned-callback-accepted", "unsigned-callback-fetched"}
    refused = dict(sent, status=403)
    assert outside.check_status_semantics([refused], P).valid is True


# --------------------------------------------------------------------------- idempotent-delete, nothing-lost


def listed(t, business, ids, phase):
    return ev("leads.listed", t, business_id=business, lead_ids=ids, phase=phase)


def asked(t, business, job, ids, own):
    out = [ev("lead_job.request", t, business_id=business, job_id=job, existing=False, client="d", lead_ids=ids)]
    return out + [ev("lead.requested", t, business_id=business, lead_id=i, job_id=job) for i in own]


def seen(t, business, job, state, succeeded=None):
    return ev("lead_job.observe", t, business_id=business, job_id=job, state=state, succeeded=succeeded)


def test_two_delete_jobs_seen_active_at_once_break_idempotent_delete_but_one_after_another_hold():
    base = [listed(0, 1, [1, 2], "start"), listed(0, 2, [7], "start")]
    both = base + asked(1, 1, "a", [1, 2], [1, 2]) + asked(1.1, 1, "b", [1, 2], [1, 2]) + [
        seen(2, 1, "a", "queued"), seen(2, 1, "b", "queued"), seen(9, 1, "a", "completed", 2),
        seen(9, 1, "b", "completed", 0), listed(10, 1, [], "end"), listed(10, 2, [7], "end")]
    v = outside.check_idempotent_delete(sort(both), P)
    assert v.valid is False and set(v.anomalies) == {"two-jobs-active"}
    after = base + asked(1, 1, "a", [1], [1]) + [seen(2, 1, "a", "completed", 1)] + asked(3, 1, "b", [2], [2]) + [
        seen(4, 1, "b", "completed", 1), listed(10, 1, [], "end"), listed(10, 2, [7], "end")]
    assert outside.check_idempotent_delete(sort(after), P).valid is True


def test_another_tenants_lead_gone_breaks_idempotent_delete():
    h = [listed(0, 1, [1], "start"), listed(0, 2, [7], "start")] + asked(1, 1, "a", [1, 7], [1]) + [
        seen(2, 1, "a", "completed", 2), listed(10, 1, [], "end"), listed(10, 2, [], "end")]
    v = outside.check_idempotent_delete(sort(h), P)
    assert v.valid is False and "other-tenant-lead-gone" in v.anomalies
    assert "more-deletions-than-leads" not in v.anomalies  # 2 reported, 2 went


def test_no_delete_request_leaves_idempotent_delete_unknown():
    assert outside.check_idempotent_delete([listed(0, 1, [1], "start")], P).valid == inv.UNKNOWN


def test_an_accepted_recording_that_never_plays_and_a_requested_lead_left_are_lost():
    h = [created(0), created(0, call="CA2", rec="RE2", fails_by_design=True), listed(0, 1, [1], "start")]
    h += asked(1, 1, "a", [1], [1]) + session(5, [202, 404]) + [listed(20, 1, [1], "end")]
    v = outside.check_nothing_lost(sort(h), P)
    assert v.valid is False and set(v.anomalies) == {"recording-never-playable", "lead-not-deleted"}
    assert [a.facts["call_sid"] for a in v.anomalies["recording-never-playable"]] == ["CA1"]  # not the doomed one
    fine = [created(0), listed(0, 1, [1], "start")] + asked(1, 1, "a", [1], [1]) + session(5, [202, 200]) + [
        listed(20, 1, [], "end")]
    assert outside.check_nothing_lost(sort(fine), P).valid is True


def test_lock_exclusive_and_worker_never_blocks_are_never_observable():
    vs = target([created(0)] + fetch(1, 2, ok=True, sha="aa") + session(3, [200]))
    assert vs["lock-exclusive"].valid == inv.NOT_OBSERVABLE and vs["worker-never-blocks"].valid == inv.NOT_OBSERVABLE
    assert inv.valid_label(vs["lock-exclusive"].valid) == "not observable"


def test_a_fetch_the_service_gave_up_on_is_timed_from_the_stand_ins_silence_not_its_late_end():
    """A stalled fetch: the stand-in fell silent at 10, noticed the hang-up only at 80 (a busy
    machine); the retry at 71 is 61 s after the silence — neither too soon nor concurrent."""
    abandoned = fetch(0, 80)
    abandoned[1]["quiet_since"] = 10.0
    h = sort([created(0)] + abandoned + fetch(71, 72, n=2, ok=True, sha="aa") + [storm(0)])
    assert outside.check_backoff_schedule(h, P).valid is True
    assert outside.check_one_job_per_storm(h, P).valid is True
    too_soon = sort([created(0)] + abandoned + fetch(30, 31, n=2, ok=True, sha="aa"))
    assert outside.check_backoff_schedule(too_soon, P).valid is False  # 20 s after the silence: no backoff
