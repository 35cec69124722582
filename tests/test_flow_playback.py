"""flows.playback.poll, driven with canned effect results (h11 style): the effects each poll
yields, in order, and the reply it ends with — no Redis, no SimPy, no Flask."""
from __future__ import annotations

from loopfix.reference_app.flows.coordination import PlaybackGate
from loopfix.reference_app.flows.effects import Coord, EmitValues, Enqueue, FailStuck, Gap, drive_with, effect_type
from loopfix.reference_app.flows.playback import Gated, PollCall, Reply, decide, gate_and_act, poll
from loopfix.reference_app.policy import PlaybackGateAsk, RunState, make_policy

FIXED = make_policy("fixed")
NOW = 1000.0


def call(run: RunState | None = None, has_url: bool = True, file_ready: bool = False) -> PollCall:
    return PollCall(7, "CA1", has_url, file_ready, run)


def queued(age_s: float) -> RunState:
    return RunState("queued", NOW - age_s)


def test_a_ready_file_is_served_without_touching_shared_state():
    effects, reply = drive_with(poll(call(file_ready=True), NOW, FIXED), [])
    assert (effects, reply) == ([], Reply(200, serve=True))


def test_a_call_without_recording_url_answers_404_without_touching_shared_state():
    effects, reply = drive_with(poll(call(has_url=False), NOW, FIXED), [])
    assert effects == [] and reply.status == 404 and reply.body["error"] == "no_recording_url"


def test_a_first_poll_asks_the_gate_then_enqueues_and_reports_the_attempt():
    gate = Coord("playback_gate", (7, "CA1", PlaybackGateAsk(False, True, True)))
    effects, reply = drive_with(poll(call(), NOW, FIXED), [PlaybackGate(None, True, 1), "enqueued", None])
    assert effects == [gate, Enqueue("download_only", "playback", True),
                       EmitValues("enqueue.result", ("CA1", "enqueued", 202))]
    assert reply == Reply(202, {"status": "processing", "attempt": 1, "max_attempts": 3}, FIXED.retry_after_s)


def test_a_poll_without_the_mark_waits_and_enqueues_nothing():
    effects, reply = drive_with(poll(call(), NOW, FIXED), [PlaybackGate(None, False, 0)])
    assert len(effects) == 1 and reply == Reply(202, {"status": "processing"}, FIXED.retry_after_s)


def test_a_waiting_run_asks_liveness_and_with_a_live_worker_just_waits():
    effects, reply = drive_with(poll(call(queued(10)), NOW, FIXED), [PlaybackGate(True, None, 0)])
    assert effects == [Coord("playback_gate", (7, "CA1", PlaybackGateAsk(True, False, True)))]
    assert reply.status == 202 and not any(isinstance(e, Enqueue) for e in effects)


def test_the_fourth_attempt_with_no_worker_trips_fail_fast_and_enqueues_nothing():
    effects, reply = drive_with(poll(call(queued(10)), NOW, FIXED), [PlaybackGate(False, True, 4), None])
    assert effects[1:] == [EmitValues("fail_fast.trip", ("CA1", 4))]
    assert reply.status == 500 and reply.body["error"] == "worker_not_processing_queue"


def test_the_third_attempt_with_no_worker_answers_202_and_enqueues_nothing():
    effects, reply = drive_with(poll(call(queued(10)), NOW, FIXED), [PlaybackGate(False, True, 3)])
    assert len(effects) == 1 and reply.status == 202 and reply.body["attempt"] == 3


def test_fixed_fails_a_stuck_run_only_when_a_new_job_replaces_it():
    stuck = queued(400)
    _effects, tripped = drive_with(poll(call(stuck), NOW, FIXED), [PlaybackGate(False, True, 4), None])
    effects, _reply = drive_with(poll(call(stuck), NOW, FIXED), [PlaybackGate(False, True, 1), None, "enqueued", None])
    assert not any(isinstance(e, FailStuck) for e in _effects) and tripped.status == 500
    assert isinstance(effects[1], FailStuck) is True and isinstance(effects[2], Enqueue) is True


def test_seed_fails_a_stuck_run_even_when_fail_fast_trips():
    seed = make_policy("fixed", "stuck_failed_before_fail_fast")
    effects, reply = drive_with(poll(call(queued(400)), NOW, seed), [PlaybackGate(False, True, 4), None, None])
    assert [effect_type(e) for e in effects[1:]] == [FailStuck, EmitValues] and reply.status == 500


def test_a_failed_enqueue_answers_500_enqueue_failed():
    effects, reply = drive_with(poll(call(), NOW, FIXED), [PlaybackGate(None, True, 1), "error", None])
    assert effects[-1] == EmitValues("enqueue.result", ("CA1", "error", 500))
    assert reply == Reply(500, {"error": "enqueue_failed"})


def test_the_seeds_check_then_mark_leaves_a_gap_between_the_check_and_the_mark():
    racy = make_policy("fixed", "playback_check_then_mark")
    effects, reply = drive_with(poll(call(queued(10)), NOW, racy), [False, False, None, None, 1])
    assert effects == [Coord("worker_alive"), Coord("playback_marked", (7, "CA1")), Gap(),
                       Coord("set_playback_mark", (7, "CA1")), Coord("count_attempt", ("CA1",))]
    assert reply.status == 202


def test_without_marks_every_click_is_counted_and_enqueued_without_dedup():
    every = make_policy("fixed", "enqueue_every_click,fail_fast_incr_then_expire")
    effects, _reply = drive_with(poll(call(), NOW, every), [1, "enqueued", None])
    assert effects[:2] == [Coord("count_attempt", ("CA1",)), Enqueue("download_only", "playback", False)]


def test_a_poll_that_needs_no_gate_is_answered_by_decide_alone():
    assert decide(call(file_ready=True), NOW, FIXED) == Reply(200, serve=True)
    assert decide(call(has_url=False), NOW, FIXED).status == 404
    assert decide(call(queued(10), file_ready=True), NOW, FIXED) == Reply(200, serve=True)


def test_a_gated_poll_run_in_two_parts_does_what_poll_does():
    for run, answers in ((None, [PlaybackGate(None, True, 1), "enqueued", None]),
                         (queued(10), [PlaybackGate(False, True, 4), None]),
                         (queued(400), [PlaybackGate(False, True, 1), None, "enqueued", None])):
        first = decide(call(run), NOW, FIXED)
        assert isinstance(first, Gated)
        in_two_parts = drive_with(gate_and_act(call(run), first, FIXED), answers)
        assert in_two_parts == drive_with(poll(call(run), NOW, FIXED), answers)
