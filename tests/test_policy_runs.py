"""reference_app/policy/runs.py: when a recording run counts as stuck, and when Redis lost its job."""
from __future__ import annotations

from loopfix.reference_app.policy import RunState, make_policy, run_orphaned, stuck_reason

FIXED = make_policy("fixed")
HB = FIXED.heartbeat_timeout_s  # 60 s


def test_a_running_run_is_stuck_one_second_past_the_heartbeat_timeout_not_at_it():
    run = RunState("running", created_at=0, started_at=0, heartbeat_at=100)
    assert stuck_reason(run, 100 + HB, FIXED) is None
    assert stuck_reason(run, 101 + HB, FIXED) == "no heartbeat for 61 s"


def test_without_any_heartbeat_started_at_is_the_last_sign_of_life():
    assert stuck_reason(RunState("running", 0, started_at=10), 71, FIXED) == "no heartbeat for 61 s"


def test_a_run_marked_running_without_started_at_is_stuck_in_every_variant_but_before():
    run = RunState("running", created_at=0)
    why = "marked running but no started_at"
    assert stuck_reason(run, 0, FIXED) == stuck_reason(run, 0, make_policy("seed")) == why
    assert stuck_reason(run, 10**6, make_policy("before")) is None  # stuck_202_forever


def test_stuck_by_age_declares_a_healthy_slow_download_stuck():
    run = RunState("running", 0, started_at=0, heartbeat_at=299)
    assert stuck_reason(run, 301, FIXED) is None
    assert stuck_reason(run, 301, make_policy("fixed", "stuck_by_age")) == "running 301 s without completion"


def test_a_queued_run_is_stuck_after_the_timeout_unless_live_workers_are_busy_ahead_of_it():
    run = RunState("queued", created_at=0)
    assert stuck_reason(run, 300, FIXED) is None
    assert stuck_reason(run, 301, FIXED) == "queued 301 s without worker pickup"
    assert stuck_reason(run, 301, FIXED, worker_alive=False) is not None
    assert stuck_reason(run, 301, FIXED, worker_alive=True) is None
    assert stuck_reason(run, 301, make_policy("fixed", "stuck_by_age"), worker_alive=True) is not None


def test_a_retry_wait_counts_from_its_retry_time_not_its_creation():
    run = RunState("retry_wait", created_at=0, next_attempt_at=1000)
    assert stuck_reason(run, 1300, FIXED) is None
    assert stuck_reason(run, 1301, FIXED) == "retry due 301 s ago and not picked up"


def test_finished_runs_are_never_stuck():
    assert stuck_reason(RunState("done", 0), 10**6, FIXED) is stuck_reason(RunState("failed", 0), 10**6, FIXED) is None


def test_a_waiting_run_whose_job_redis_lost_is_orphaned_a_heartbeat_timeout_after_it_became_due():
    run = RunState("queued", created_at=0)
    assert run_orphaned(run, None, HB, FIXED) is False  # maybe being enqueued right now
    assert run_orphaned(run, None, HB + 1, FIXED) is True
    assert run_orphaned(run, None, 10**6, make_policy("fixed", "orphan_runs_not_swept")) is False
    assert run_orphaned(run, None, 10**6, make_policy("before")) is False


def test_a_run_with_a_live_rq_job_is_not_orphaned():
    run = RunState("retry_wait", created_at=0, next_attempt_at=10)
    for status in ("queued", "scheduled", "deferred"):
        assert run_orphaned(run, status, 10**6, FIXED) is False
    assert run_orphaned(run, "finished", 10**6, FIXED) is True  # ended without running it


def test_a_job_started_or_dequeued_long_ago_whose_run_never_began_is_orphaned():
    run = RunState("queued", created_at=0)
    for status in ("started", "dequeued"):
        assert run_orphaned(run, status, 100 + HB, FIXED, job_started_at=100) is False
        assert run_orphaned(run, status, 101 + HB, FIXED, job_started_at=100) is True
        assert run_orphaned(run, status, 10**6, FIXED) is False  # start time unknown: not judged


def test_a_running_run_is_the_stuck_sweeps_business_not_the_orphan_sweeps():
    assert run_orphaned(RunState("running", 0, started_at=0), None, 10**6, FIXED) is False
