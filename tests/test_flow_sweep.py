"""flows.sweep, driven with canned effect results: what the workers' sweep does to a run it
found stuck or orphaned, in the app and the model alike."""
from __future__ import annotations

from loopfix.reference_app.flows.effects import ClaimRun, Coord, Emit, Park, drive_with, effect_type
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
    assert [effect_type(e) for e in effects] == [ClaimRun] and requeued is False


def test_a_run_that_never_had_an_owner_frees_no_claims():
    effects, _requeued = stuck(1, [True, None, None, None], owner=None)
    assert not any(type(e) is tuple and e[0] is Coord for e in effects)


def test_an_orphaned_run_is_enqueued_again_once():
    effects, requeued = drive_with(requeue_orphan("7", "CA1", "full"), [True, None, None])
    assert effects[1:] == [Park(0.0, "orphan"),
                           Emit("job.enqueue", {"job_id": "7", "call_sid": "CA1", "job_type": "full", "via": "orphan"})]
    assert requeued is True
    assert drive_with(requeue_orphan("7", "CA1", "full"), [False])[1] is False


# --------------------------------------------------------------------------- which runs, in which order

from loopfix.reference_app.flows.effects import drive  # noqa: E402
from loopfix.reference_app.flows.sweep import Focus, JobStatus, SweptRun, sweep  # noqa: E402
from loopfix.reference_app.policy import RunState  # noqa: E402

NOW = 10_000.0


def swept(ref, status, created_at=NOW, started_at=None, heartbeat_at=None):
    return SweptRun(ref, ref, "CA" + ref, "full", 0, 1, "RE" + ref, "rq" + ref,
                    RunState(status, created_at, started_at, heartbeat_at, None))


def sweep_once(runs, alive, job_status=("queued", None), p=FIXED):
    done = []

    def handle(effect):
        done.append(effect)
        kind = type(effect)
        if kind is tuple and effect[0] is Coord:
            return alive if effect[1] == "worker_alive" else True
        if kind is JobStatus:
            return job_status
        return True if kind is ClaimRun else None

    return drive(sweep(runs, NOW, p), handle), done


def test_liveness_is_read_once_and_a_healthy_running_run_is_passed_over():
    moved, done = sweep_once([swept("1", "running", NOW - 5, NOW - 5, NOW - 1)], alive=True)
    assert moved == 0 and done == [Coord("worker_alive")]


def test_a_dead_running_run_is_requeued_and_a_lost_waiting_one_enqueued_again_in_the_drivers_order():
    dead = swept("1", "running", 0.0, 0.0, 0.0)
    lost = swept("2", "queued", 0.0)
    moved, done = sweep_once([dead, lost], alive=True, job_status=(None, None))
    assert moved == 2
    focus = [e.ref for e in done if type(e) is Focus]
    vias = [e.via for e in done if type(e) is Park]
    assert focus == ["1", "2"] and vias == ["requeue", "orphan"]


def test_a_waiting_run_whose_job_will_still_run_is_left_alone():
    moved, done = sweep_once([swept("2", "queued", 0.0)], alive=True, job_status=("queued", None))
    assert moved == 0 and not any(type(e) is ClaimRun for e in done)


def test_with_no_worker_alive_a_long_waiting_run_is_stuck_not_asked_about_its_job():
    moved, done = sweep_once([swept("2", "queued", 0.0)], alive=False)
    assert moved == 1 and not any(type(e) is JobStatus for e in done)
    assert [e.via for e in done if type(e) is Park] == ["requeue"]
