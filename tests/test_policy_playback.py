"""reference_app/policy/playback.py: the poll's decision, the gate's question, the action after it,
Retry-After — each with the variant or fault that must change its answer."""
from __future__ import annotations

import pytest

from loopfix.reference_app.policy import (
    PlaybackDecision,
    PlaybackState,
    RunState,
    fails_stuck_run,
    make_policy,
    playback_action,
    playback_decision,
    playback_gate_ask,
    retry_after,
    retry_after_header,
)

FIXED = make_policy("fixed")


def poll(run: RunState | None, now: float, p=FIXED, worker_alive: bool | None = None, url: bool = True,
         ready: bool = False) -> PlaybackDecision:
    return playback_decision(PlaybackState(url, ready, run, worker_alive), now, p)


def test_a_ready_file_is_served_even_without_a_recording_url():
    assert (poll(None, 0, url=False, ready=True).kind, poll(None, 0, url=False, ready=True).status) == ("serve", 200)


def test_a_call_without_a_recording_url_is_404_never_202():
    assert (poll(RunState("queued", 0), 0, url=False).kind, poll(None, 0, url=False).status) == ("not_found", 404)


def test_the_first_poll_starts_a_job_and_waits_the_normal_retry_after():
    d = poll(None, 0)
    assert (d.kind, d.status, d.retry_after_s, d.reason) == ("start", 202, FIXED.retry_after_s, "no run yet")


@pytest.mark.parametrize("status,reason,retry", [
    ("failed", "previous run failed", FIXED.retry_after_recovery_s),
    ("done", "done but file missing", FIXED.retry_after_s),
])
def test_a_finished_run_without_its_file_starts_a_new_job(status, reason, retry):
    d = poll(RunState(status, 0), 10)
    assert (d.kind, d.reason, d.retry_after_s) == ("start", reason, retry)


def test_a_run_queued_past_the_stuck_timeout_is_replaced_but_before_waits_on_it_forever():
    run = RunState("queued", created_at=0)
    assert poll(run, FIXED.stuck_timeout_s + 100).kind == "start"
    assert poll(run, FIXED.stuck_timeout_s + 100).reason.startswith("stuck: queued 400 s")
    assert poll(run, 10**6, make_policy("before")).kind == "wait"  # stuck_202_forever


def test_a_run_queued_behind_a_backlog_of_live_workers_waits_on_fixed_and_is_replaced_on_seed():
    run = RunState("queued", created_at=0)
    assert poll(run, 400, worker_alive=True).kind == "wait"
    assert poll(run, 400, make_policy("seed"), worker_alive=True).kind == "start"  # stuck_by_age


def test_a_queued_run_with_no_live_worker_counts_a_fail_fast_attempt_unless_that_is_unreachable():
    run = RunState("queued", created_at=0)
    d = poll(run, 10, worker_alive=False)
    assert (d.kind, d.status, d.retry_after_s) == ("no_worker", 202, FIXED.retry_after_recovery_s)
    assert poll(run, 10, make_policy("fixed", "fail_fast_unreachable"), worker_alive=False).kind == "wait"


def test_a_slow_download_with_a_fresh_heartbeat_waits_on_fixed_and_is_replaced_by_age_on_seed():
    run = RunState("running", created_at=0, started_at=0, heartbeat_at=395)
    assert poll(run, 400).kind == "wait"
    assert poll(run, 400, make_policy("seed")).kind == "start"


def test_a_retry_wait_answers_retry_after_until_the_retry_within_bounds():
    assert poll(RunState("retry_wait", 0, next_attempt_at=130), 100).retry_after_s == 30
    assert poll(RunState("retry_wait", 0, next_attempt_at=1000), 100).retry_after_s == FIXED.retry_after_max_s
    assert poll(RunState("retry_wait", 0, next_attempt_at=101), 100).retry_after_s == FIXED.retry_after_s


def test_retry_after_without_a_pending_retry_is_the_normal_wait():
    assert retry_after(None, 0, FIXED) == retry_after(RunState("running", 0, 0), 0, FIXED) == FIXED.retry_after_s


@pytest.mark.parametrize("seconds,header", [(0, "1"), (0.2, "1"), (3.0, "3"), (3.1, "4"), (60, "60")])
def test_retry_after_header_is_whole_seconds_and_never_zero(seconds, header):
    assert retry_after_header(seconds) == header


def test_the_gate_reads_liveness_only_when_the_answer_depends_on_it():
    run = RunState("queued", created_at=0)
    alive, dead = poll(run, 10, worker_alive=True), poll(run, 10, worker_alive=False)
    ask = playback_gate_ask(alive, dead)
    assert (ask.read_alive, ask.gate_if_alive, ask.gate_if_dead, ask.round_trip) == (True, False, True, True)
    # fail_fast_unreachable: liveness changes nothing, so the poll asks Redis nothing
    p = make_policy("fixed", "fail_fast_unreachable")
    ask = playback_gate_ask(poll(run, 10, p, worker_alive=True), poll(run, 10, p, worker_alive=False))
    assert (ask.read_alive, ask.round_trip) == (False, False)


def test_a_start_decision_takes_the_mark_whatever_the_liveness():
    start = poll(None, 0)
    ask = playback_gate_ask(start, start)
    assert (ask.read_alive, ask.gate_if_alive, ask.gate_if_dead, ask.round_trip) == (False, True, True, True)


def test_a_stuck_run_is_failed_when_replaced_on_fixed_and_as_soon_as_found_on_seed():
    assert (fails_stuck_run("found", FIXED), fails_stuck_run("replacing", FIXED)) == (False, True)
    seed = make_policy("seed")
    assert (fails_stuck_run("found", seed), fails_stuck_run("replacing", seed)) == (True, False)
    with pytest.raises(ValueError):
        fails_stuck_run("later", FIXED)


def test_a_no_worker_poll_answers_202_until_the_fourth_attempt_then_500_unless_fail_fast_is_off():
    no_worker = PlaybackDecision("no_worker", 202, 5.0, "no worker is processing the queue")
    third = playback_action(no_worker, False, True, 3, FIXED)
    assert (third.enqueue, third.status, third.retry_after_s, third.trip) == (False, 202, 5.0, False)
    fourth = playback_action(no_worker, False, True, 4, FIXED)
    assert (fourth.status, fourth.error, fourth.trip) == (500, "worker_not_processing_queue", True)
    assert playback_action(no_worker, False, True, 4, make_policy("fixed", "no_fail_fast")).status == 202


def test_a_start_poll_without_the_mark_waits_and_leaves_the_job_to_the_poll_that_has_it():
    a = playback_action(poll(None, 0), False, False, 0, FIXED)
    assert (a.enqueue, a.status, a.retry_after_s, a.fail_stuck) == (False, 202, FIXED.retry_after_s, False)


def test_a_start_poll_with_the_mark_enqueues():
    a = playback_action(poll(None, 0), False, True, 1, FIXED)
    assert (a.enqueue, a.status, a.fail_stuck, a.trip) == (True, 202, False, False)
