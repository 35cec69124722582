"""flows.enqueue.dedup_enqueue, driven with canned effect results: which Coordination steps
each variant takes around creating the run, and what it answers."""
from __future__ import annotations

from loopfix.reference_app.flows.effects import ActiveRun, Coord, CreateRun, drive_with, effect_type
from loopfix.reference_app.flows.enqueue import dedup_enqueue, pending_run
from loopfix.reference_app.policy import make_policy

KEY = ("CA1", "full")
CREATE = CreateRun("full", "webhook")


def run(variant: str, results: list, faults: str = "", dedup: bool = True):
    return drive_with(dedup_enqueue("CA1", "full", "webhook", dedup, make_policy(variant, faults)), results)


def test_fixed_claims_before_it_creates_the_run():
    assert run("fixed", ["tok", True]) == ([Coord("claim_dedup", KEY), CREATE], "enqueued")


def test_a_held_claim_is_a_duplicate_and_creates_nothing():
    assert run("fixed", [None]) == ([Coord("claim_dedup", KEY)], "duplicate")


def test_fixed_releases_its_own_claim_when_the_enqueue_fails():
    effects, reason = run("fixed", ["tok", False, True])
    assert (effects[-1], reason) == (Coord("release_dedup", ("CA1", "full", "tok")), "error")


def test_before_keeps_the_claim_after_a_failed_enqueue():
    assert run("before", ["tok", False]) == ([Coord("claim_dedup", KEY), CREATE], "error")


def test_seed_checks_then_creates_then_sets_so_concurrent_requests_all_pass_the_check():
    effects, reason = run("fixed", [False, True, None], faults="dedup_check_then_set")
    assert effects == [Coord("dedup_held", KEY), CREATE, Coord("set_dedup", KEY)] and reason == "enqueued"


def test_seed_sets_nothing_after_a_failed_enqueue():
    assert run("fixed", [False, False], faults="dedup_check_then_set") == ([Coord("dedup_held", KEY), CREATE], "error")


def test_without_dedup_the_run_is_created_with_no_key_at_all():
    assert run("fixed", [True], dedup=False) == ([CREATE], "enqueued")
    assert run("fixed", [False], dedup=False) == ([CREATE], "error")


def test_with_redis_down_a_run_committed_before_it_failed_is_the_enqueued_one():
    assert drive_with(pending_run(True, "full", "webhook"), []) == ([], "enqueued")


def test_with_redis_down_the_calls_active_run_is_the_duplicate():
    assert drive_with(pending_run(False, "full", "webhook"), [True]) == ([ActiveRun()], "duplicate")


def test_with_redis_down_and_no_active_run_a_queued_run_is_created_for_the_sweep():
    assert drive_with(pending_run(False, "full", "webhook"), [False, True]) == ([ActiveRun(), CREATE], "enqueued")


# --------------------------------------------------------------------------- the webhook and the enqueue API

from loopfix.reference_app.flows.effects import EmitValues, Enqueue, drive, fields_of  # noqa: E402
from loopfix.reference_app.flows.enqueue import enqueue_request, recording_callback  # noqa: E402


def _run(flow, reason="enqueued"):
    done = []

    def handle(effect):
        done.append(effect)
        return reason if type(effect) is Enqueue else None

    return drive(flow, handle), done


def test_a_recording_callback_records_the_recording_then_enqueues_its_full_job():
    value, done = _run(recording_callback(1, "CA1", "RE1", True, False, make_policy("fixed")))
    assert value == "enqueued" and [effect_type(e) for e in done] == [EmitValues, Enqueue, EmitValues]
    assert done[1] == Enqueue("full", "webhook", True) and fields_of(done[2])["status"] == 204
    assert fields_of(done[0]) == {"call_sid": "CA1", "recording_sid": "RE1", "business_id": 1, "has_url": True}


def test_a_replayed_callback_answers_duplicate_unless_the_fault_lets_it_enqueue_again():
    value, done = _run(recording_callback(1, "CA1", "RE1", True, True, make_policy("fixed")))
    assert value == "duplicate" and not any(type(e) is Enqueue for e in done)
    value, done = _run(recording_callback(1, "CA1", "RE1", True, True, make_policy("fixed", "webhook_replay_enqueues")))
    assert value == "enqueued" and any(type(e) is Enqueue for e in done)


def test_a_failed_webhook_enqueue_answers_500():
    value, done = _run(recording_callback(1, "CA1", "RE1", True, False, make_policy("fixed")), reason="error")
    assert value == "error" and fields_of(done[-1])["status"] == 500


def test_an_inline_callback_yields_the_enqueues_own_steps_and_reports_as_the_enqueue_effect_would():
    # enqueue_error_hidden: a failed enqueue is reported 'duplicate' (policy.reported_enqueue_reason)
    for faults, created, reported in (("", True, "enqueued"), ("", False, "error"),
                                      ("enqueue_error_hidden", False, "duplicate")):
        p = make_policy("fixed", faults)
        effects, value = drive_with(recording_callback(1, "CA1", "RE1", True, False, p, inline=True),
                                    [None, "tok", created] + [None] * (2 if created else 3))  # a release after a failure
        assert value == reported and fields_of(effects[-1]) == {"call_sid": "CA1", "reason": reported,
                                                       "status": 500 if reported == "error" else 204}
        assert effects[1:3] == [Coord("claim_dedup", KEY), CREATE]
        assert _run(recording_callback(1, "CA1", "RE1", True, False, p), reason=reported)[1][-1] == effects[-1]


def test_the_enqueue_api_answers_cached_without_enqueueing_and_404_without_a_url():
    assert _run(enqueue_request("CA1", True, True))[0] == ("cached", 200)
    assert _run(enqueue_request("CA1", False, False)) == (None, [])
    value, done = _run(enqueue_request("CA1", True, False), reason="error")
    assert value == ("error", 500) and done[0] == Enqueue("download_only", "enqueue_api", True)
