"""The stack runner leaves no process behind: a SIGKILLed worker takes its RQ work horse with it
(the horse leads a process group of its own, so a group signal alone would miss it), a stop
during a job leaves no orphan, and a paused or restarted Redis comes back. The promoted retry
of a recording job is in the live history as `job.enqueue(via="retry")`."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis
from rq import Queue

from loopfix.loadtests.stack import Stack, descendants, marked_pids
from loopfix.reference_app.config import Config

pytestmark = [pytest.mark.redis, pytest.mark.stack]


def busy_worker(tmp_path: Path) -> tuple[Stack, str, list[int]]:
    """A stack with Redis and one worker whose work horse is running a long job."""
    stack = Stack(tmp_path / "run", Config(data_dir=(tmp_path / "data").resolve()))
    stack.start_redis()
    stack.start_worker("worker1")
    Queue("recordings", connection=redis.Redis.from_url(stack.config.redis_url)).enqueue("time.sleep", 60)
    deadline = time.monotonic() + 20
    while not (horses := descendants(stack.procs["worker1"].pid)):
        assert time.monotonic() < deadline, "the worker never forked a work horse"
        time.sleep(0.05)
    return stack, "worker1", horses


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_sigkilled_worker_leaves_no_work_horse_behind(tmp_path):
    stack, name, horses = busy_worker(tmp_path)
    try:
        assert all(os.getpgid(h) == h for h in horses)  # the horse leads its own group
        killed = stack.kill_worker(name)
        assert set(horses) <= set(killed)
        time.sleep(0.2)
        assert not any(alive(h) for h in horses)
        assert not stack.procs[name].alive
    finally:
        stack.stop()


def test_stop_during_a_job_leaves_no_process_of_the_stack(tmp_path):
    stack, _name, horses = busy_worker(tmp_path)
    marker = stack.marker
    assert set(horses) <= set(marked_pids(marker))
    stack.stop()  # SIGTERM: RQ waits for the 60 s job, so the stop has to kill it
    assert marked_pids(marker) == []
    assert not any(alive(h) for h in horses)


def test_a_paused_then_restarted_redis_answers_again(tmp_path):
    stack = Stack(tmp_path / "run", Config())
    try:
        url = stack.start_redis()
        conn = redis.Redis.from_url(url, socket_timeout=0.3)
        conn.set("k", "v")
        stack.pause_redis()
        with pytest.raises(redis.exceptions.TimeoutError):
            conn.get("k")
        stack.resume_redis()
        assert redis.Redis.from_url(url).get("k") == b"v"
        assert stack.restart_redis() == url
        assert redis.Redis.from_url(url).get("k") is None  # nothing on disk: an empty Redis
    finally:
        stack.stop()


def test_a_retry_promoted_late_by_a_stopped_scheduler_is_caught_with_live_witnesses(tmp_path):
    """The ticker records each promotion as job.enqueue(via="retry"); with the worker (and its
    ticker) stopped through the first 60 s backoff, the promotion comes late and the checker
    says so, naming the job.retry and the late job.enqueue."""
    from loopfix.loadtests.verdicts import check_live
    from loopfix.reference_app.models import Business
    from loopfix.reference_app.policy import make_policy
    from loopfix.reference_app.recordings import enqueue_recording
    from loopfix.reference_app.services import Services
    from tests.conftest import read_events, sid

    config = Config(data_dir=(tmp_path / "data").resolve(), history_dir=(tmp_path / "history").resolve(),
                    run_epoch=time.time(), policy=make_policy("fixed", time_scale=0.01))
    stack = Stack(tmp_path / "run", config)
    try:
        stack.start_redis()
        stack.start_worker("worker1")
        svc = Services(stack.config)
        with svc.sessions() as s:
            b = Business(name="b", api_token="t", twilio_account_sid=sid("AC"), twilio_auth_token="x")
            s.add(b)
            s.commit()
            enqueue_recording(svc, s, business_id=b.id, call_sid=sid("CA"), recording_sid=sid("RE"),
                              recording_url="https://api.twilio.com/x.mp3", job_type="full", via="webhook")

        def events_of(kind: str, **match) -> list[dict]:
            return [e for e in read_events(config.history_dir) if e["kind"] == kind
                    and all(e.get(k) == v for k, v in match.items())]

        deadline = time.monotonic() + 20
        while not events_of("job.retry", attempt=1):  # the CallLog is missing: retry 1 in 60 s
            assert time.monotonic() < deadline
            time.sleep(0.01)
        stack.procs["worker1"].signal(signal.SIGSTOP)
        time.sleep(1.5)  # 150 policy seconds: the 60 s retry is due while nobody ticks
        stack.procs["worker1"].signal(signal.SIGCONT)
        while not events_of("job.start", attempt=2):  # the checker judges a retry at its run
            assert time.monotonic() < deadline
            time.sleep(0.01)
        verdict = {v.name: v for v in check_live(read_events(config.history_dir), config.policy)}["backoff-schedule"]
        assert verdict.valid is False
        late = verdict.anomalies["retry-too-late"][0]
        assert [w["kind"] for w in late.witnesses] == ["job.retry", "job.enqueue"]
        assert late.witnesses[1]["via"] == "retry" and late.facts["gap_s"] > 100
    finally:
        stack.stop()


def test_an_idle_worker_asked_to_stop_exits_by_itself(tmp_path):
    stack = Stack(tmp_path / "run", Config(data_dir=(tmp_path / "data").resolve()))
    try:
        stack.start_redis()
        worker = stack.start_worker("worker1")
        worker.signal(signal.SIGTERM)
        # it exits on its own (restarted as if Redis had dropped it, it would never): the bound is a
        # deadline for a busy machine, not a speed
        assert worker.popen.wait(timeout=60) == 0
    finally:
        stack.stop()
