"""flows.recording, driven with canned effect results: the slot, the deferral and the retry
steps of the recording job, as the app's RQ job and the model's workers both take them."""
from __future__ import annotations

from loopfix.reference_app.flows.effects import Coord, Emit, Finish, Park, RetryByRQ, Save, Sleep, drive_with
from loopfix.reference_app.flows.recording import defer, retry_later, take_slot
from loopfix.reference_app.policy import make_policy

FIXED = make_policy("fixed")


def test_a_free_slot_is_taken_and_recorded():
    effects, ok = drive_with(take_slot("7", 1, "rq7", "CA1", FIXED), [True, None])
    assert effects == [Coord("acquire_slot", (1, "rq7", "CA1")),
                       Emit("slot.acquire", {"job_id": "7", "business_id": 1, "ok": True})]
    assert ok is True


def test_fixed_never_waits_for_a_slot_in_the_worker():
    effects, ok = drive_with(take_slot("7", 1, "rq7", "CA1", FIXED), [False, None])
    assert not any(isinstance(e, Sleep) for e in effects) and ok is False


def test_the_blocking_slot_loop_sleeps_a_second_at_a_time_until_a_slot_frees():
    blocking = make_policy("fixed", "blocking_slot_loop")
    results = [False, None, None, False, None, None, True, None]
    effects, ok = drive_with(take_slot("7", 1, "rq7", "CA1", blocking), results)
    assert [type(e) for e in effects] == [Coord, Emit, Sleep, Coord, Emit, Sleep, Coord, Emit] and ok is True


def test_a_deferral_reparks_the_job_after_the_policys_delay_without_sleeping():
    effects, delay = drive_with(defer("7", "CA1", 2, FIXED), [None, None, None])
    assert delay == FIXED.slot_defer_s[2]
    assert effects == [Save({"defer_count": 3, "status": "queued", "next_attempt_in_s": delay}), Park(delay, "defer"),
                       Emit("job.end", {"job_id": "7", "call_sid": "CA1", "outcome": "deferred"})]


def test_the_seeds_deferral_sleeps_in_the_worker_then_requeues_at_once():
    effects, delay = drive_with(defer("7", "CA1", 0, make_policy("fixed", "slot_defer_sleeps")), [None] * 5)
    assert [type(e) for e in effects] == [Save, Emit, Sleep, Park, Emit]
    assert effects[2] == Sleep(delay) and effects[3] == Park(0.0, "defer")


def test_a_missing_calllog_retries_after_the_backoff_and_records_the_attempt():
    effects, d = drive_with(retry_later("7", "CA1", 1, 0, "calllog", "CallLog not found", FIXED), [None] * 5)
    assert (d.attempt, d.delay_s) == (2, 120.0)
    assert effects[1] == Emit("job.retry", {"job_id": "7", "call_sid": "CA1", "attempt": 2, "delay": 120.0,
                                            "phase": "calllog"})
    assert effects[2:4] == [Save({"status": "retry_wait", "next_attempt_in_s": 120.0}), Park(120.0, "retry")]


def test_a_spent_budget_fails_the_run_for_good():
    effects, d = drive_with(retry_later("7", "CA1", 5, 0, "calllog", "CallLog not found", FIXED), [None])
    assert d.action == "fail" and effects == [Finish("failed", "CallLog not found after 5 calllog retries")]


def test_the_fetch_phase_spends_its_own_budget():
    effects, d = drive_with(retry_later("7", "CA1", 5, 0, "fetch", "audio not available", FIXED), [None] * 5)
    assert d.action != "fail" and effects[0].fields["fetch_retry_count"] == 1


def test_the_seed_raises_for_rq_to_retry_at_once():
    seed = make_policy("seed")
    effects, _d = drive_with(retry_later("7", "CA1", 0, 0, "calllog", "CallLog not found", seed), [None] * 5)
    assert [type(e) for e in effects] == [Save, Emit, Save, Emit, RetryByRQ]
