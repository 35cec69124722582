"""flows.sweep, driven with canned effect results: what the workers' sweep does to a run it
found stuck or orphaned, in the app and the model alike."""
from __future__ import annotations

from loopfix.reference_app.flows.effects import ClaimRun, Coord, Emit, Park, drive_with
from loopfix.reference_app.flows.sweep import requeue_orphan, requeue_stuck
from loopfix.reference_app.policy import make_policy

FIXED = make_policy("fixed")


def stuck(retry_count: int, results: list, owner: str | None = "rq7"):
    return drive_with(requeue_stuck("7", "CA1", "full", retry_count, "no heartbeat for 61 s", 1, "RE1", owner, FIXED),
                      results)


def test_a_stuck_run_is_requeued_spending_one_retry_and_its_dead_owners_claims_freed():
    effects, requeued = stuck(1, [True, None, True, True, None, None])
    assert effects[0].fields["status"] == "queued" and effects[0].fields["retry_count"] == 2
    assert effects[1:] == [Emit("job.stuck", {"job_id": "7", "call_sid": "CA1", "reason": "no heartbeat for 61 s"}),
                           Coord("release_inflight", ("RE1", "rq7")), Coord("release_slot", (1, "rq7")),
                           Park(0.0, "requeue"),
                           Emit("job.enqueue",
                                {"job_id": "7", "call_sid": "CA1", "job_type": "full", "via": "requeue"})]
    assert requeued is True


def test_a_stuck_run_past_its_budget_fails_for_good_and_is_not_requeued():
    effects, requeued = stuck(FIXED.max_recording_retries, [True, None, True, True])
    assert effects[0].fields["status"] == "failed" and not any(isinstance(e, Park) for e in effects)
    assert requeued is False


def test_a_run_another_sweep_claimed_first_is_left_alone():
    effects, requeued = stuck(1, [False])
    assert [type(e) for e in effects] == [ClaimRun] and requeued is False


def test_a_run_that_never_had_an_owner_frees_no_claims():
    effects, _requeued = stuck(1, [True, None, None, None], owner=None)
    assert not any(isinstance(e, Coord) for e in effects)


def test_an_orphaned_run_is_enqueued_again_once():
    effects, requeued = drive_with(requeue_orphan("7", "CA1", "full"), [True, None, None])
    assert effects[1:] == [Park(0.0, "orphan"),
                           Emit("job.enqueue", {"job_id": "7", "call_sid": "CA1", "job_type": "full", "via": "orphan"})]
    assert requeued is True
    assert drive_with(requeue_orphan("7", "CA1", "full"), [False])[1] is False
