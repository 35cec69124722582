"""The checkers on tiny literal histories: one that holds, one per way of breaking each invariant,
with its witnesses. The backoff-schedule checker: test_invariants_backoff.py; generated valid
histories: test_invariants_generated.py."""
from __future__ import annotations

import pytest

from loopfix.harness import invariants as inv
from loopfix.reference_app.policy import make_policy
from tests.invariants_support import P, ev, only


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


BOUND = inv.player_time_bound(P)


@pytest.mark.parametrize("history", [
    session("u1", 4), session("u1", 14, end="gave_up"), session("u1", 2, end="timeout"),
    session("u1", 3, gap=400.0), session("u1", 2, gap=BOUND / 2), session("u1", 2, gap=BOUND / 2 + 1e-6),
    session("u1", 13, end="gave_up"), session("u1", 3)[1:], session("u1", 0, end="not_found")[:1] + session(
        "u1", 0, end="not_found", t0=BOUND + 1.0)[1:]])
def test_a_session_judged_as_it_ends_on_a_stream_in_time_order_is_judged_as_in_the_whole_history(history):
    whole = inv.check_loops_terminate(history, P)
    streamed = inv.online(P, only=["loops-terminate"], ordered=True).feed(history).verdicts()[0]
    assert streamed.to_dict() == whole.to_dict()


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
