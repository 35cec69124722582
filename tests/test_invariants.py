"""The checkers on tiny literal histories (one that holds, one per way of breaking each
invariant, with its witnesses) and on generated histories that are valid by construction."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import invariants as inv
from reference_app.events import event
from reference_app.policy import backoff_delay, make_policy, player_delay

P = make_policy("fixed")


def ev(kind, t, **fields):
    return event(kind, t, "live", "test", **fields)


def only(verdict, anomaly_type):
    """The verdict is broken by exactly this anomaly type; return its anomalies."""
    assert verdict.valid is False, inv.render_verdict(verdict)
    assert set(verdict.anomalies) == {anomaly_type}, inv.render_verdict(verdict)
    return verdict.anomalies[anomaly_type]


# --------------------------------------------------------------------------- loops-terminate


def session(client, n_requests, status=202, end="played", t0=0.0, gap=1.0, call="CA1"):
    h = [ev("client.start", t0, client=client, session=1, call_sid=call, role="player")]
    for i in range(n_requests):
        h.append(ev("client.request", t0 + i * gap, client=client, session=1, call_sid=call,
                    status=200 if (i == n_requests - 1 and end == "played") else status,
                    retry_after=None if (i == n_requests - 1 and end == "played") else 3.0, n=i + 1,
                    audio_ok=end == "played" and i == n_requests - 1))
    if end is not None:
        h.append(ev("client.end", t0 + n_requests * gap, client=client, session=1, call_sid=call, outcome=end,
                    requests=n_requests))
    return h


def test_bounded_session_that_plays_holds():
    assert inv.check_loops_terminate(session("u1", 4), P).valid is True


def test_session_past_the_request_bound_is_a_loop():
    (a,) = only(inv.check_loops_terminate(session("u1", 14, end="gave_up"), P), "unbounded-session")
    assert a.facts["requests"] == 14 and a.facts["bound"] == 13
    assert [w["kind"] for w in a.witnesses] == ["client.start", "client.request", "client.request", "client.end"]


def test_unended_session_past_the_bound_at_history_end_is_a_loop():
    (a,) = only(inv.check_loops_terminate(session("u1", 30, end=None), P), "looping-session")
    assert a.witnesses[-1]["n"] == 30


def test_unended_session_within_bounds_is_not_judged_a_loop():
    assert inv.check_loops_terminate(session("u1", 3, end=None), P).valid is True


def test_session_open_longer_than_the_time_bound_is_unterminated():
    h = session("u1", 2, end=None) + [ev("outage.end", 5000.0, target="workers", how="stop")]
    only(inv.check_loops_terminate(h, P), "unterminated-session")


def test_session_ending_without_a_terminal_outcome_is_flagged():
    only(inv.check_loops_terminate(session("u1", 2, end="timeout"), P), "non-terminal-outcome")


def test_session_lasting_longer_than_the_time_bound_is_flagged():
    only(inv.check_loops_terminate(session("u1", 3, gap=400.0), P), "session-too-long")


def _runs(n):
    h = []
    for i in range(n):
        h += [ev("job.start", i * 1.0, job_id="7", call_sid="CA1", attempt=i + 1, worker="w"),
              ev("job.end", i * 1.0 + 0.5, job_id="7", call_sid="CA1", outcome="retry")]
    return h


@pytest.mark.parametrize("policy,bound", [
    (P, 1 + P.max_recording_retries + P.max_fetch_retries),  # both budgets: CallLog waits, then fetch failures
    (make_policy("fixed", "shared_retry_budget"), 1 + P.max_recording_retries),  # the seeds' one budget
])
def test_job_run_more_than_both_retry_budgets_plus_one_times_is_a_loop(policy, bound):
    assert inv.check_loops_terminate(_runs(bound), policy).valid is True
    (a,) = only(inv.check_loops_terminate(_runs(bound + 2), policy), "job-rerun-unbounded")
    assert a.facts == {"job_id": "7", "call_sid": "CA1", "runs": bound + 2, "bound": bound}
    assert a.witnesses[1]["attempt"] == bound + 1  # the first run past the bound


def test_runs_after_slot_deferral_are_not_retries():
    h = []
    for i in range(10):
        h += [ev("job.start", i * 1.0, job_id="7", call_sid="CA1", attempt=1, worker="w"),
              ev("job.end", i * 1.0 + 0.5, job_id="7", call_sid="CA1", outcome="deferred")]
    assert inv.check_loops_terminate(h, P).valid is True


# --------------------------------------------------------------------------- no-duplicate-download


def download(t, job, sid="RE1", ok=True, skipped=False):
    return ev("download.end", t, job_id=job, call_sid="CA1", recording_sid=sid, ok=ok, skipped=skipped, bytes=10)


def test_one_completed_download_and_skips_hold():
    h = [download(1, "1"), download(2, "2", skipped=True), download(3, "3", ok=False)]
    assert inv.check_no_duplicate_download(h, P).valid is True


def test_two_completed_downloads_of_one_recording_break_it():
    (a,) = only(inv.check_no_duplicate_download([download(1, "1"), download(9, "1")], P), "duplicate-download")
    assert a.facts["count"] == 2 and [w["t"] for w in a.witnesses] == [1, 9]


# --------------------------------------------------------------------------- one-job-per-storm


def enqueue(t, job, call="CA1", via="playback"):
    return ev("job.enqueue", t, job_id=job, call_sid=call, job_type="download_only", via=via)


def test_one_enqueue_per_window_holds():
    h = [enqueue(0.0, "1"), enqueue(20.0, "2"), enqueue(0.001, "3", call="CA2"), enqueue(1.0, "4", via="webhook")]
    assert inv.check_one_job_per_storm(h, P).valid is True


def test_two_jobs_from_concurrent_clicks_break_it():
    (a,) = only(inv.check_one_job_per_storm([enqueue(0.0, "1"), enqueue(0.002, "2")], P), "storm-duplicate-enqueue")
    assert a.facts["job_ids"] == ["1", "2"] and len(a.witnesses) == 2


def test_enqueue_api_clicks_count_as_a_storm_too():
    h = [enqueue(0.0, "1", via="enqueue_api"), enqueue(3.0, "2", via="playback")]
    only(inv.check_one_job_per_storm(h, P), "storm-duplicate-enqueue")


# --------------------------------------------------------------------------- backoff-schedule


def retry_cycle(job, attempt, t, delay, start_after, requeue=True):
    h = [ev("job.retry", t, job_id=job, call_sid="CA1", attempt=attempt, delay=delay),
         ev("job.end", t, job_id=job, call_sid="CA1", outcome="retry")]
    if requeue:
        h.append(ev("job.enqueue", t + delay + 0.5, job_id=job, call_sid="CA1", job_type="full", via="retry"))
    h.append(ev("job.start", t + start_after, job_id=job, call_sid="CA1", attempt=attempt + 1, worker="w"))
    return h


def full_schedule(job="1", wait=0.7):
    h, t = [ev("job.start", 0.0, job_id=job, call_sid="CA1", attempt=1, worker="w")], 0.0
    for n in range(1, 6):
        d = backoff_delay(n, P)
        h += retry_cycle(job, n, t + 1, d, d + wait)
        t += 1 + d + wait
    h.append(ev("job.end", t + 1, job_id=job, call_sid="CA1", outcome="failed"))
    return h


def test_retries_on_schedule_hold_and_the_total_is_measured():
    v = inv.check_backoff_schedule(full_schedule(), P)
    assert v.valid is True, inv.render_verdict(v)
    assert v.figure["configured_total_s"] == 1860
    assert abs(v.figure["measured_full_schedule_total_s"] - 1860 - 5 * 0.7) < 1e-6
    assert v.figure["rel_tol"] == 0.02 and v.figure["abs_tol_s"] == 1.0
    assert v.figure["claim_52_min"]["six_retries_total_s"] == 3060


def test_retry_with_zero_delay_that_reruns_at_once_breaks_it():
    h = [ev("job.start", 0, job_id="1", call_sid="CA1", attempt=1, worker="w")] + retry_cycle("1", 1, 1.0, 0.0, 0.5,
                                                                                              requeue=False)
    v = inv.check_backoff_schedule(h, P)
    assert set(v.anomalies) == {"delay-not-policy", "retry-too-soon"}
    (soon,) = v.anomalies["retry-too-soon"]
    assert soon.facts["expected_s"] == 60 and [w["kind"] for w in soon.witnesses] == ["job.retry", "job.start"]


def test_rerun_after_a_failed_attempt_with_no_retry_event_breaks_it():
    h = [ev("job.start", 0, job_id="1", call_sid="CA1", attempt=1, worker="w"),
         ev("job.end", 1, job_id="1", call_sid="CA1", outcome="failed"),
         ev("job.start", 1.2, job_id="1", call_sid="CA1", attempt=2, worker="w")]
    (a,) = only(inv.check_backoff_schedule(h, P), "rerun-without-backoff")
    assert [w["kind"] for w in a.witnesses] == ["job.end", "job.start"]


def test_requeue_much_later_than_the_delay_breaks_it():
    h = retry_cycle("1", 1, 0.0, 60.0, 200.0, requeue=False)
    h.insert(2, ev("job.enqueue", 150.0, job_id="1", call_sid="CA1", job_type="full", via="retry"))
    only(inv.check_backoff_schedule(h, P), "retry-too-late")


@pytest.mark.parametrize("down, late", [(0, False), (3, True)])
def test_a_retry_due_while_every_worker_is_down_is_late_only_past_the_outage(down, late):
    """Due at 60 s inside a 50-400 s outage, re-queued at 401 s: with every worker down
    (workers 0) nothing could promote it sooner; with 3 of them down the rest could."""
    h = retry_cycle("1", 1, 0.0, 60.0, 410.0, requeue=False)
    h.insert(2, ev("job.enqueue", 401.0, job_id="1", call_sid="CA1", job_type="full", via="retry"))
    h += [ev("outage.start", 50.0, target="workers", how="crash", workers=down),
          ev("outage.end", 400.0, target="workers", how="crash", workers=down)]
    h.sort(key=lambda e: e["t"])
    v = inv.check_backoff_schedule(h, P)
    if late:
        (a,) = only(v, "retry-too-late")
        assert [w["kind"] for w in a.witnesses] == ["job.retry", "job.enqueue"]
    else:
        assert v.valid is True, inv.render_verdict(v)


def test_queue_wait_after_a_timely_requeue_is_not_lateness():
    assert inv.check_backoff_schedule(retry_cycle("1", 1, 0.0, 60.0, 400.0), P).valid is True


def test_attempt_past_the_maximum_breaks_it():
    h = retry_cycle("1", 6, 0.0, 1200.0, 1200.5)
    only(inv.check_backoff_schedule(h, P), "too-many-attempts")


def retry_cycle_in(phase, job, attempt, t, delay, start_after):
    return [{**e, "phase": phase} if e["kind"] == "job.retry" else e
            for e in retry_cycle(job, attempt, t, delay, start_after)]


def calllog_then_fetch(fetch_retries, fetch_gap=lambda d: d + 0.7, first_fetch_attempt=1):
    """A job that waits out the whole CallLog budget, then retries `fetch_retries` failed fetches."""
    h = full_schedule()[:-1]  # without its final 'failed'
    t = h[-1]["t"]
    for n in range(first_fetch_attempt, first_fetch_attempt + fetch_retries):
        d = backoff_delay(n, P)
        h += retry_cycle_in("fetch", "1", n, t + 1, d, fetch_gap(d))
        t = h[-1]["t"]
    return h


def test_fetch_retries_after_the_whole_calllog_schedule_hold_on_their_own_budget():
    v = inv.check_backoff_schedule(calllog_then_fetch(P.max_fetch_retries), P)
    assert v.valid is True, inv.render_verdict(v)
    assert v.figure["gaps_checked_by_phase"] == {"calllog": P.max_recording_retries, "fetch": P.max_fetch_retries}
    assert v.figure["jobs_with_full_schedule_by_phase"] == {"calllog": 1, "fetch": 1}
    assert v.figure["measured_full_schedule_total_s_by_phase"]["fetch"] == pytest.approx(
        sum(backoff_delay(n, P) for n in range(1, P.max_fetch_retries + 1)) + 0.7 * P.max_fetch_retries)


def test_a_fetch_retry_too_soon_breaks_it_with_the_fetch_phase_in_its_witness():
    h = calllog_then_fetch(2, fetch_gap=lambda d: 0.5)
    v = inv.check_backoff_schedule(h, P)
    soon = only(v, "retry-too-soon")
    assert [a.facts["phase"] for a in soon] == ["fetch", "fetch"]
    assert [a.facts["expected_s"] for a in soon] == [backoff_delay(1, P), backoff_delay(2, P)]
    assert soon[0].witnesses[0]["kind"] == "job.retry" and soon[0].witnesses[0]["phase"] == "fetch"
    assert "fetch retry 1" in inv.render_anomaly(soon[0])


def test_fetch_retries_counted_on_the_calllog_budget_break_it_past_that_budget():
    # the seeds' one retry_count numbers a fetch retry after five CallLog retries as attempt 6
    h = calllog_then_fetch(1, first_fetch_attempt=P.max_recording_retries + 1)
    (a,) = only(inv.check_backoff_schedule(h, P), "too-many-attempts")
    assert a.facts["phase"] == "fetch" and a.facts["max"] == P.max_fetch_retries


def test_tolerance_is_a_parameter():
    h = retry_cycle("1", 1, 0.0, 60.0, 57.0)  # 3 s early: outside 2 % + 1 s, inside 5 s
    assert inv.check_backoff_schedule(h, P).valid is False
    assert inv.check_backoff_schedule(h, P, abs_tol_s=5.0).valid is True


# --------------------------------------------------------------------------- fail-fast


def test_three_playback_jobs_per_window_hold():
    h = [enqueue(0, "1"), enqueue(300, "2"), enqueue(590, "3"), enqueue(900, "4")]
    assert inv.check_fail_fast(h, P).valid is True


def test_fourth_playback_job_in_the_window_breaks_it():
    h = [enqueue(0, "1"), enqueue(100, "2"), enqueue(200, "3"), enqueue(300, "4"), enqueue(1, "9", via="webhook")]
    (a,) = only(inv.check_fail_fast(h, P), "too-many-jobs")
    assert a.facts["jobs"] == 4 and [w["job_id"] for w in a.witnesses] == ["1", "2", "3", "4"]


# --------------------------------------------------------------------------- status-semantics


def request(t, status, call="CA1", retry_after=None, audio_ok=False):
    return ev("client.request", t, client="u1", session=1, call_sid=call, status=status, retry_after=retry_after,
              n=1, audio_ok=audio_ok)


def created(call, has_url):
    return ev("recording.created", 0, call_sid=call, recording_sid="RE" + call, business_id=1, has_url=has_url)


def test_well_formed_statuses_hold():
    h = [created("CA1", True), created("CA2", False), request(1, 202, retry_after=3.0),
         request(2, 200, audio_ok=True), request(3, 404, call="CA2"), request(4, 404, call="CA9"), request(5, 500),
         ev("enqueue.result", 6, call_sid="CA1", reason="error", status=500)]
    assert inv.check_status_semantics(h, P).valid is True


def test_202_without_retry_after_breaks_it():
    only(inv.check_status_semantics([request(1, 202)], P), "202-without-retry-after")


def test_404_for_a_call_with_a_recording_url_breaks_it():
    (a,) = only(inv.check_status_semantics([created("CA1", True), request(1, 404)], P), "404-with-recording-url")
    assert [w["kind"] for w in a.witnesses] == ["recording.created", "client.request"]


def test_200_without_audio_breaks_it():
    only(inv.check_status_semantics([request(1, 200, audio_ok=False)], P), "200-without-audio")


def test_enqueue_error_answered_200_breaks_it():
    h = [ev("enqueue.result", 1, call_sid="CA1", reason="error", status=200)]
    only(inv.check_status_semantics(h, P), "error-not-500")


# --------------------------------------------------------------------------- idempotent-delete


def lead_request(t, job, existing, b=1):
    return ev("lead_job.request", t, business_id=b, job_id=job, existing=existing, client="d1")


def lead_end(t, job, status="completed", b=1):
    return ev("lead_job.end", t, business_id=b, job_id=job, status=status, processed=1)


def test_repeated_requests_naming_the_active_job_hold():
    h = [lead_request(0, "1", False), lead_request(0.1, "1", True), lead_end(5, "1"), lead_request(6, "2", False),
         lead_request(0.2, "3", False, b=2)]
    assert inv.check_idempotent_delete(h, P).valid is True


def test_second_job_while_one_is_active_breaks_it():
    (a,) = only(inv.check_idempotent_delete([lead_request(0, "1", False), lead_request(0.01, "2", False)], P),
                "second-job-while-active")
    assert (a.facts["active_job"], a.facts["new_job"]) == ("1", "2")


def test_a_paused_job_is_still_active():
    h = [lead_request(0, "1", False), ev("lead_job.pause", 300, business_id=1, job_id="1", processed=10),
         lead_request(400, "2", False)]
    only(inv.check_idempotent_delete(h, P), "second-job-while-active")


# --------------------------------------------------------------------------- lock-exclusive


def lead_start(t, job, b=1):
    return ev("lead_job.start", t, business_id=b, job_id=job)


def release(t, owner, holder, freed=True):
    return ev("lock.release", t, business_id=1, op="delete_leads_bulk", owner=owner, freed=freed, holder=holder)


def test_jobs_one_after_another_hold():
    h = [lead_start(0, "1"), ev("lead_job.pause", 300, business_id=1, job_id="1", processed=5),
         lead_start(360, "1"), lead_end(400, "1"), release(400, "1", "1"), lead_start(401, "2"), lead_end(402, "2")]
    assert inv.check_lock_exclusive(h, P).valid is True


def test_two_jobs_running_at_once_break_it():
    (a,) = only(inv.check_lock_exclusive([lead_start(0, "1"), lead_start(1, "2")], P), "concurrent-delete-jobs")
    assert [w["job_id"] for w in a.witnesses] == ["1", "2"]


def test_release_that_frees_another_jobs_lock_breaks_it():
    (a,) = only(inv.check_lock_exclusive([release(1, "2", "1")], P), "released-anothers-lock")
    assert a.facts == {"business_id": 1, "owner": "2", "holder": "1"}


def test_lock_released_while_paused_breaks_it():
    h = [lead_start(0, "1"), ev("lead_job.pause", 300, business_id=1, job_id="1", processed=5), release(301, "1", "1")]
    only(inv.check_lock_exclusive(h, P), "lock-released-during-pause")


# --------------------------------------------------------------------------- nothing-lost


def test_everything_downloaded_and_deleted_once_holds():
    h = [created("CA1", True), created("CA2", False), download(5, "1", sid="RECA1"),
         ev("lead.requested", 0, business_id=1, lead_id=10, job_id="1"),
         ev("lead.delete", 1, business_id=1, lead_id=10, job_id="1")]
    assert inv.check_nothing_lost(h, P).valid is True


def test_recording_with_url_never_downloaded_breaks_it():
    (a,) = only(inv.check_nothing_lost([created("CA1", True), download(5, "1", sid="RECA1", ok=False)], P),
                "recording-not-downloaded")
    assert a.witnesses[0]["kind"] == "recording.created"


def test_leads_deleted_never_twice_or_outside_their_business_break_it():
    h = [ev("lead.requested", 0, business_id=1, lead_id=10, job_id="1"),
         ev("lead.requested", 0, business_id=1, lead_id=11, job_id="1"),
         ev("lead.delete", 1, business_id=1, lead_id=11, job_id="1"),
         ev("lead.delete", 2, business_id=1, lead_id=11, job_id="2"),
         ev("lead.delete", 3, business_id=2, lead_id=10, job_id="3"),
         ev("lead.delete", 4, business_id=2, lead_id=99, job_id="3")]
    v = inv.check_nothing_lost(h, P)
    assert set(v.anomalies) == {"lead-not-deleted", "lead-deleted-twice", "other-tenant-touched", "unrequested-delete"}
    assert v.anomalies["other-tenant-touched"][0].facts["owner"] == 1


def test_history_ending_mid_outage_is_undecided_not_a_pass():
    h = [created("CA1", True), ev("outage.start", 1, target="workers", how="stop")]
    v = inv.check_nothing_lost(h, P)
    assert v.valid == inv.UNKNOWN and "outage" in inv.render_verdict(v)


# --------------------------------------------------------------------------- worker-never-blocks


def test_no_sleep_holds_and_any_sleep_breaks_it():
    assert inv.check_worker_never_blocks([download(1, "1")], P).valid is True
    (a,) = only(inv.check_worker_never_blocks([ev("worker.sleep", 1, job_id="4", seconds=2.0, reason="slot")], P),
                "worker-slept")
    assert inv.render_anomaly(a) == "job 4 slept 2 s in the worker (slot)"


# --------------------------------------------------------------------------- composition


def test_an_exception_inside_a_checker_is_unknown_never_a_pass():
    verdicts = inv.check_all([{"kind": "client.request"}, {"kind": "job.enqueue", "via": "playback"}], P)
    assert all(v.valid in (True, inv.UNKNOWN) for v in verdicts)
    broken = [v for v in verdicts if v.valid == inv.UNKNOWN]
    assert broken and all("checker-error" in v.anomalies for v in broken)
    assert inv.overall(verdicts) == inv.UNKNOWN


def test_every_invariant_of_the_design_is_checked():
    """Not the INVARIANTS constant: what check_all returns, one verdict per invariant of DESIGN's table."""
    assert tuple(v.name for v in inv.check_all([], P)) == ("loops-terminate", "no-duplicate-download", "one-job-per-storm", "backoff-schedule",
                              "fail-fast", "status-semantics", "idempotent-delete", "lock-exclusive", "nothing-lost",
                              "worker-never-blocks")


def test_rendering_is_separate_from_the_data():
    v = inv.check_no_duplicate_download([download(1, "1"), download(9, "2")], P)
    text = inv.render_verdict(v)
    assert "recording RE1 downloaded 2 times, by jobs ['1', '2']" in text and "t=9.000 download.end" in text
    assert v.to_dict()["anomalies"]["duplicate-download"][0]["facts"]["count"] == 2


# --------------------------------------------------------------------------- generated valid histories


@st.composite
def valid_histories(draw):
    """Recordings that each wait out some retries on schedule and download once, players that
    stop within their bounds, delete jobs one at a time per business: valid by construction."""
    h: list[dict] = []
    n_calls = draw(st.integers(1, 6))
    t_clock = 0.0
    for i in range(n_calls):
        call, sid, job = f"CA{i}", f"RE{i}", str(i)
        t = t_clock + draw(st.floats(0, 50))
        h.append(ev("recording.created", t, call_sid=call, recording_sid=sid, business_id=1, has_url=True))
        h.append(ev("job.enqueue", t, job_id=job, call_sid=call, job_type="full", via="webhook"))
        t += draw(st.floats(0, 30))
        retries = draw(st.integers(0, P.max_recording_retries))
        for n in range(1, retries + 1):
            h.append(ev("job.start", t, job_id=job, call_sid=call, attempt=n, worker="w"))
            d = backoff_delay(n, P)
            h += [ev("job.retry", t + 0.1, job_id=job, call_sid=call, attempt=n, delay=d),
                  ev("job.end", t + 0.1, job_id=job, call_sid=call, outcome="retry")]
            promote = t + 0.1 + d + draw(st.floats(0, 1))
            h.append(ev("job.enqueue", promote, job_id=job, call_sid=call, job_type="full", via="retry"))
            t = promote + draw(st.floats(0, 100))
        h.append(ev("job.start", t, job_id=job, call_sid=call, attempt=retries + 1, worker="w"))
        h.append(ev("download.start", t, job_id=job, call_sid=call, recording_sid=sid))
        t += draw(st.floats(0.1, 600))
        h.append(ev("download.end", t, job_id=job, call_sid=call, recording_sid=sid, ok=True, skipped=False,
                    bytes=1))
        h.append(ev("job.end", t, job_id=job, call_sid=call, outcome="done"))
        polls = draw(st.integers(1, 1 + P.player_max_retries))
        tp = t_clock + draw(st.floats(0, 20))
        h.append(ev("client.start", tp, client=f"u{i}", session=1, call_sid=call, role="player"))
        for k in range(polls):
            last = k == polls - 1
            status = 200 if last and draw(st.booleans()) else 202
            h.append(ev("client.request", tp, client=f"u{i}", session=1, call_sid=call, status=status,
                        retry_after=None if status == 200 else 3.0, n=k + 1, audio_ok=status == 200))
            tp += player_delay(k, 3.0, P)
        outcome = "played" if status == 200 else "gave_up"
        h.append(ev("client.end", tp, client=f"u{i}", session=1, call_sid=call, outcome=outcome, requests=polls))
        t_clock = t
    t = t_clock
    for j in range(draw(st.integers(0, 3))):
        job = f"L{j}"
        h.append(ev("lead_job.request", t, business_id=1, job_id=job, existing=False, client="d"))
        h.append(ev("lead.requested", t, business_id=1, lead_id=j, job_id=job))
        for _ in range(draw(st.integers(0, 3))):
            h.append(ev("lead_job.request", t + 0.01, business_id=1, job_id=job, existing=True, client="d"))
        h.append(ev("lock.acquire", t + 1, business_id=1, op="delete_leads_bulk", owner=job, ok=True))
        h.append(ev("lead_job.start", t + 1, business_id=1, job_id=job))
        h.append(ev("lead.delete", t + 2, business_id=1, lead_id=j, job_id=job))
        h.append(ev("lead_job.end", t + 3, business_id=1, job_id=job, status="completed", processed=1))
        h.append(ev("lock.release", t + 3, business_id=1, op="delete_leads_bulk", owner=job, freed=True, holder=job))
        t += 4
    h.sort(key=lambda e: e["t"])
    return h


@settings(max_examples=60, deadline=None, database=None)
@given(valid_histories())
def test_generated_valid_histories_satisfy_every_invariant(history):
    verdicts = inv.check_all(history, P)
    assert all(v.valid is True for v in verdicts), "\n".join(inv.render_verdict(v) for v in verdicts)
