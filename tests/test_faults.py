"""The fault plan on real processes: a scenario's Twilio degrade window changes the running
stand-in's latency and error rate for the window and puts them back after it (also under the
slow-tail windows), and a redis_restart window kills the stack's private Redis (redis-server,
or the fakeredis fallback) and starts an empty one on the same port when it ends. Each window
is in the run's history as outage.start / outage.end."""
from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from loopfix.harness.scenario import load_scenario, parse_scenario
from loopfix.loadtests import runner
from loopfix.loadtests.faults import FaultPlan, twilio_settings
from loopfix.loadtests.stack import Stack
from loopfix.reference_app.config import Config
from loopfix.reference_app.events import HistoryWriter
from tests.conftest import read_events
from tests.test_recording_pipeline import wait_for

SCALE = 0.01


def plan_for(stack: Stack, scenario, run_dir: Path) -> FaultPlan:
    start = time.time()
    return FaultPlan(stack, scenario, start, HistoryWriter(run_dir, "env", SCALE, start))


def stub_settings(stack: Stack) -> dict:
    with urllib.request.urlopen(stack.stub_url + "/_config", timeout=5) as resp:
        return json.load(resp)


@pytest.mark.stack
def test_a_twilio_window_changes_the_running_stand_in_and_puts_it_back(tmp_path):
    s = parse_scenario({"time_scale": SCALE, "twilio": {"latency_median_s": 4, "fault_rate": 0.01, "slow_fraction": 0},
                        "outages": [{"target": "twilio", "at_s": 100, "duration_s": 200,
                                     "fault_rate": 0.7, "latency_median_s": 12}]})
    stack = Stack(tmp_path / "run", Config(data_dir=(tmp_path / "data").resolve(), policy=s.make_policy()))
    try:
        stack.start_stub(latency_s=4, error_rate=0.01)
        plan = plan_for(stack, s, tmp_path / "run")
        plan.start()
        during = wait_for(lambda: (c := stub_settings(stack))["error_rate"] == 0.7 and c, 10, "the window's error rate")
        assert during["latency_s"] == 12  # the window's two values together
        plan.outages_over.wait(10)
        after = stub_settings(stack)
        assert (after["error_rate"], after["latency_s"]) == (0.01, 4)
        kinds = [(e["kind"], e["target"], e["how"]) for e in read_events(tmp_path / "run")]
        assert kinds == [("outage.start", "twilio", "degrade"), ("outage.end", "twilio", "degrade")]
        assert plan.errors == []
    finally:
        stack.stop()


def test_a_slow_draw_inside_a_twilio_window_keeps_the_windows_error_rate():
    s = parse_scenario({"twilio": {"latency_median_s": 4, "fault_rate": 0.01},
                        "outages": [{"target": "twilio", "fault_rate": 0.5, "latency_median_s": 9}]})
    window = s.outages[0]
    assert twilio_settings(s, None, None) == {"latency_s": 4, "latency_sigma": 0.6, "error_rate": 0.01}
    assert twilio_settings(s, None, window) == {"latency_s": 9, "latency_sigma": 0.6, "error_rate": 0.5}
    assert twilio_settings(s, 400.0, window) == {"latency_s": 400.0, "latency_sigma": 0.0, "error_rate": 0.5}


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["redis-server", "fakeredis"])
def test_a_redis_restart_window_empties_redis_and_brings_it_back_on_the_same_port(tmp_path, kind):
    s = parse_scenario({"time_scale": SCALE, "twilio": {"slow_fraction": 0}, "outages": [
        {"target": "redis", "how": "redis_restart", "at_s": 50, "duration_s": 100}]})
    stack = Stack(tmp_path / "run", Config(data_dir=(tmp_path / "data").resolve(), policy=s.make_policy()))
    try:
        url = stack.start_redis(kind)
        r = redis.Redis.from_url(url, socket_timeout=1)
        r.set("claim", "job-1")
        plan = plan_for(stack, s, tmp_path / "run")
        plan.start()

        def refused() -> bool:
            try:
                r.ping()
                return False
            except redis.ConnectionError:
                return True

        wait_for(refused, 10, "Redis to refuse connections")  # killed at 50 policy s
        assert plan.outages_over.wait(10) and plan.errors == []
        assert stack.config.redis_url == url and stack.redis_kind == kind
        assert r.ping() and r.get("claim") is None  # the same port, empty
        events = read_events(tmp_path / "run")
        assert [(e["kind"], e["how"]) for e in events] == [("outage.start", "redis_restart"),
                                                          ("outage.end", "redis_restart")]
    finally:
        stack.stop()


def test_a_load_run_given_an_outside_redis_refuses_a_scenario_that_restarts_redis(tmp_path):
    opts = runner.LoadOptions(load_scenario("redis-restart"), users=1, runs_root=tmp_path / "runs",
                              redis_url="redis://127.0.0.1:6379/0")
    with pytest.raises(RuntimeError, match=r"Redis outages \(redis_restart\): they need the stack's own Redis"):
        runner.run_load(opts)
