"""Recovery after a worker outage or crash, on real processes (gunicorn, RQ workers with
loopfix's ticker, a private Redis, the Twilio stand-in): nothing a poll or a crash did while no
worker could run a job may leave a recording that is never fetched once workers return.

Two ways a recording was lost in live `worker-outage` and `worker-crash` runs:
- a poll found a run stuck (queued 5 min with no worker alive), marked it failed, and then
  fail-fast answered 500 — so no job replaced it, its own RQ job was skipped once workers were
  back, and the player had stopped on the 500. fixed fails a stuck run only when a new job
  replaces it (policy.fails_stuck_run); `stuck_failed_before_fail_fast` (seed) keeps the seed's
  order and loses the recording;
- a worker died after RQ started a job and before the job's run began: the run stays `queued`,
  which stuck detection never calls stuck while workers are alive. RQ re-runs the job when only
  the work horse died; when the whole worker died the job stays `started` in Redis with no one
  to notice, and the workers' sweep re-enqueues the run (policy.run_orphaned);
  `orphan_runs_not_swept` (seed) leaves it queued for good.
"""
from __future__ import annotations

import os
import signal
import time

import pytest
import requests
from sqlalchemy import select

from loopfix.harness.invariants import check_nothing_lost
from loopfix.loadtests.stack import children
from loopfix.reference_app.jobs import HANG_AFTER_DEQUEUE, HANG_BEFORE_RUN_START
from loopfix.reference_app.models import RecordingRun
from tests.conftest import add_business, auth, read_events, sid
from tests.test_crash import downloaded
from tests.test_recording_pipeline import post_signed, recording_form, start, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.stack]


def webhook_recording(stack, svc) -> tuple[dict, str, str]:
    """A business whose one call gets a recording by a signed callback (history:
    recording.created, the job enqueued); returns (business, call_sid, recording_sid)."""
    b = add_business(svc)
    call, rec = b["calls"][0]["call_sid"], sid("RE")
    r = post_signed(stack, "/webhooks/twilio/recording", b, recording_form(stack, b, call, rec, ".mp3"))
    assert r.status_code == 204, r.text
    return b, call, rec


def the_run(svc, call_sid: str) -> RecordingRun:
    with svc.sessions() as s:
        runs = s.scalars(select(RecordingRun).where(RecordingRun.call_sid == call_sid)).all()
        assert len(runs) == 1, [(r.id, r.status) for r in runs]
        s.expunge(runs[0])
        return runs[0]


def poll(stack, business, call_sid) -> int:
    return requests.get(f"{stack.app_url}/api/recordings/file/{call_sid}", headers=auth(business), timeout=10).status_code


def lost_recordings(stack, svc) -> tuple[bool | str, set[str], list[dict]]:
    """The checker's nothing-lost verdict on the live history: valid, the lost RecordingSids
    and their witness events."""
    v = check_nothing_lost(read_events(stack.config.history_dir), svc.policy)
    lost = v.anomalies.get("recording-not-downloaded", [])
    return v.valid, {a.facts["recording_sid"] for a in lost}, [w for a in lost for w in a.witnesses]


# ----------------------------------------------------------------------------- stuck run + fail-fast


@pytest.mark.parametrize("faults, fetched", [("", True), ("stuck_failed_before_fail_fast", False)])
def test_a_stuck_run_found_as_fail_fast_trips_is_still_fetched_once_workers_return(
        stack_factory, make_config, faults, fetched):
    """No worker at all: the player's polls count three attempts, the fourth answers 500. Past
    the stuck timeout (still inside the fail-fast window) one more poll finds the run stuck and
    answers 500 again. fixed leaves the run queued, so the worker that starts afterwards
    fetches the recording; the seed's order failed it first and the recording is lost."""
    stack, svc = start(stack_factory, make_config, workers=0, time_scale=0.02, faults=faults)
    p = svc.policy
    b, call, rec = webhook_recording(stack, svc)
    statuses = []
    for _ in range(4):
        statuses.append(poll(stack, b, call))
        time.sleep(p.wall(p.playback_mark_ttl_s) * 1.2)
    assert statuses == [202, 202, 202, 500]
    stuck_at = the_run(svc, call).created_at + p.wall(p.stuck_timeout_s + p.playback_mark_ttl_s)
    time.sleep(max(0.0, stuck_at - time.time()))
    assert poll(stack, b, call) == 500  # stuck, and fail-fast has tripped: no new job
    events = read_events(stack.config.history_dir)
    trips = [e for e in events if e["kind"] == "fail_fast.trip"]
    stuck = [e for e in events if e["kind"] == "job.stuck"]
    assert len(trips) == 2
    assert len(stuck) == (0 if fetched else 1)

    run = the_run(svc, call)
    assert run.status == ("queued" if fetched else "failed")
    stack.start_worker()
    if fetched:
        wait_for(lambda: downloaded(svc, rec), 60, "the recording to be fetched once a worker is back")
    else:  # the run's own RQ job runs, finds its run failed, and does nothing
        wait_for(lambda: svc.coord.job_status(run.rq_job_id)[0] == "finished", 60, "the old job to be consumed")
        assert not downloaded(svc, rec) and rec not in stack.ledger()
    valid, lost, witnesses = lost_recordings(stack, svc)
    assert (valid, lost) == ((True, set()) if fetched else (False, {rec}))
    if not fetched:
        assert [w["kind"] for w in witnesses] == ["recording.created"]
        # the cause, in the history: the stuck mark and the trip came from the one poll
        assert abs(stuck[0]["t"] - trips[-1]["t"]) < p.playback_mark_ttl_s


# ----------------------------------------------------------------------------- crash before the run starts


@pytest.mark.parametrize("crash_point, kill, faults, fetched", [
    (HANG_BEFORE_RUN_START, "horse", "", True),
    (HANG_BEFORE_RUN_START, "worker", "", True),
    (HANG_BEFORE_RUN_START, "worker", "orphan_runs_not_swept", False),
    (HANG_AFTER_DEQUEUE, "worker", "", True),
    pytest.param(HANG_AFTER_DEQUEUE, "worker", "orphan_runs_not_swept", False,
                 marks=pytest.mark.slow),  # CI time: the sweep's absence breaks the case above in CI
])
def test_a_worker_killed_between_dequeue_and_run_start_leaves_no_run_queued_for_good(
        stack_factory, make_config, crash_point, kill, faults, fetched):
    """The worker hangs at a crash point and the work horse alone — or the whole worker — is
    SIGKILLed there: after RQ marked the job started and before its run began
    (HANG_BEFORE_RUN_START), or after the worker popped the job off the queue and before a work
    horse started it (HANG_AFTER_DEQUEUE: RQ still calls it queued, no queue holds it — live
    worker-crash runs lost recordings this way). horse: RQ sees its horse die and re-runs the
    job. worker: a replacement worker's sweep finds the run queued behind a job that was
    started, or seen dequeued, a heartbeat timeout ago and re-enqueues it; without that sweep
    (`orphan_runs_not_swept`) the run stays queued and the recording is never fetched."""
    stack, svc = start(stack_factory, make_config, workers=0, time_scale=0.01, faults=faults)
    p = svc.policy
    first = stack.start_worker(extra_env={"LOOPFIX_CRASH_POINTS": crash_point})
    b, call, rec = webhook_recording(stack, svc)
    job_id = the_run(svc, call).rq_job_id
    hung_status = "started" if crash_point == HANG_BEFORE_RUN_START else "dequeued"
    wait_for(lambda: (svc.config.data_dir / crash_point).exists()
             and svc.coord.job_status(job_id)[0] == hung_status, 60, f"the job to hang {hung_status}")
    assert the_run(svc, call).status == "queued"
    if kill == "horse":
        horses = children(first.pid)
        assert horses, "the worker has no work horse"
        for pid in horses:
            os.kill(pid, signal.SIGKILL)
    else:
        # at once, as a dying machine: Proc.kill freezes the worker before its horse dies, or
        # RQ in a worker that outlived its horse by a moment retried the job (the horse case),
        # and orphan_runs_not_swept's run was found `done` by timing
        stack.kill_worker(first.name)
        stack.start_worker()
    if fetched:
        wait_for(lambda: downloaded(svc, rec), 60, "the recording to be fetched after the kill")
        vias = [e["via"] for e in read_events(stack.config.history_dir) if e["kind"] == "job.enqueue"]
        assert kill == "horse" or "orphan" in vias  # RQ cannot re-run a job whose worker is gone
    else:
        # the fixed sweep re-enqueues a heartbeat timeout after the job started; give it ten
        time.sleep(p.wall(10 * p.heartbeat_timeout_s))
        assert the_run(svc, call).status == "queued" and svc.coord.job_status(job_id)[0] == hung_status
        assert not downloaded(svc, rec)
    valid, lost, witnesses = lost_recordings(stack, svc)
    assert (valid, lost) == ((True, set()) if fetched else (False, {rec}))
    assert fetched or [w["kind"] for w in witnesses] == ["recording.created"]
