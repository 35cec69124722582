"""A Redis restart and a Twilio degrade window from the scenario file (scenarios/redis-restart.toml),
in the model and on the live stack, judged by the same checker.

Model (fast): on `fixed` every invariant holds across the restart, and the runs whose queued
or parked job Redis lost are enqueued again by the sweeper (`via = "orphan"`, after the window);
with `orphan_runs_not_swept` (the seeds trusted Redis) nothing-lost names the lost recordings.
A degrade window with fault_rate 1 fails every download inside it and none outside.

Live: the stack runs the same file at time scale 0.01: Redis is SIGKILLed and an empty one
starts on the same port at the window's end, the stand-in fails half its downloads for five
policy minutes. On `fixed` every invariant holds (the slow-marked run with the fault on shows
nothing-lost breaking with live witnesses).
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from loopfix.harness.invariants import check_all
from loopfix.harness.scenario import load_scenario, parse_scenario, with_settings
from loopfix.loadtests import runner
from loopfix.loadtests.verdicts import check_run
from loopfix.loadtest_commands import build_scenario
from loopfix.sim.run import simulate


def broken(verdicts) -> dict[str, list[str]]:
    return {v.name: sorted(v.anomalies) for v in verdicts if v.valid is not True}


def window(history, target: str) -> tuple[float, float]:
    (start,) = [e["t"] for e in history if e["kind"] == "outage.start" and e["target"] == target]
    (end,) = [e["t"] for e in history if e["kind"] == "outage.end" and e["target"] == target]
    return start, end


# --------------------------------------------------------------------------- model


def test_model_on_fixed_enqueues_again_every_run_the_restart_orphaned_and_loses_nothing():
    result = simulate(load_scenario("redis-restart"))
    assert broken(check_all(result.history, result.policy)) == {}
    start, end = window(result.history, "redis")
    orphans = [e for e in result.history if e["kind"] == "job.enqueue" and e.get("via") == "orphan"]
    assert orphans and all(e["t"] > end for e in orphans)  # the sweep runs once Redis answers again
    # a webhook while Redis is gone keeps its run row; the sweep enqueues it and it is downloaded
    during = {e["recording_sid"] for e in result.history
              if e["kind"] == "recording.created" and e["has_url"] and start <= e["t"] < end}
    downloaded = {e["recording_sid"] for e in result.history if e["kind"] == "download.end" and e["ok"]}
    assert during and during <= downloaded


def test_model_without_the_orphan_sweep_loses_the_recordings_a_restart_orphaned():
    s = with_settings(load_scenario("redis-restart"), assignments={"faults": '"orphan_runs_not_swept"'})
    result = simulate(s)
    verdicts = {v.name: v for v in check_all(result.history, result.policy)}
    lost = verdicts["nothing-lost"]
    assert lost.valid is False
    witnesses = [w for a in lost.anomalies["recording-not-downloaded"] for w in a.witnesses]
    assert witnesses and {w["kind"] for w in witnesses} == {"recording.created"}
    assert not any(e.get("via") == "orphan" for e in result.history if e["kind"] == "job.enqueue")


@pytest.mark.parametrize("faults, lost", [((), False), (("orphan_runs_not_swept",), True)])
def test_model_a_webhook_during_a_redis_pause_keeps_its_run_for_the_sweep(faults, lost):
    """Redis paused (not restarted) for 300 s: a recording callback in the window cannot enqueue;
    as in the app, its run row stays queued and the sweep enqueues it once Redis answers — without
    the sweep (`orphan_runs_not_swept`, the seeds) the run fails and nothing-lost names it."""
    data = tomllib.loads(Path("scenarios/redis-restart.toml").read_text())
    data.update(faults=list(faults), outages=[{"target": "redis", "how": "redis_pause", "at_s": 900, "duration_s": 300}])
    s = parse_scenario(data)
    result = simulate(s)
    start, end = window(result.history, "redis")
    during = {e["recording_sid"] for e in result.history
              if e["kind"] == "recording.created" and e["has_url"] and start <= e["t"] < end}
    downloaded = {e["recording_sid"] for e in result.history if e["kind"] == "download.end" and e["ok"]}
    assert during
    verdicts = {v.name: v for v in check_all(result.history, result.policy)}
    if lost:
        assert verdicts["nothing-lost"].valid is False
        witnesses = [w for a in verdicts["nothing-lost"].anomalies["recording-not-downloaded"] for w in a.witnesses]
        assert {w["recording_sid"] for w in witnesses} & during
    else:
        assert broken(verdicts.values()) == {}
        assert during <= downloaded
        orphans = [e for e in result.history if e["kind"] == "job.enqueue" and e.get("via") == "orphan"]
        assert orphans and all(e["t"] >= end for e in orphans)  # once Redis answers again


def test_model_a_poll_that_needs_redis_during_a_pause_gets_503_as_in_the_app():
    """Redis paused for 300 s with every call opened in a player: a poll whose answer needs
    Redis (the worker-liveness read, the playback gate) gets 503 redis_unavailable, as the app's
    error handler answers (tests/test_redis_faults.py); one that needs none is answered (200 for a
    ready file, 202 for a running job). No poll gets a bare 500."""
    data = tomllib.loads(Path("scenarios/redis-restart.toml").read_text())
    data.update(outages=[{"target": "redis", "how": "redis_pause", "at_s": 900, "duration_s": 300}])
    data["clients"] = {"play_fraction": 1.0}
    result = simulate(parse_scenario(data))
    start, end = window(result.history, "redis")
    during = [e for e in result.history if e["kind"] == "client.request" and start <= e["t"] < end]
    statuses = {e["status"] for e in during}
    assert 503 in statuses and statuses <= {200, 202, 404, 503}
    assert all(e["retry_after"] is not None for e in during if e["status"] == 503)


def test_model_degrade_window_fails_downloads_inside_it_only():
    s = parse_scenario({
        "name": "twilio-window", "duration_s": 1200, "drain_s": 1800, "arrivals": {"calls_per_hour": 600},
        "twilio": {"fault_rate": 0.0, "slow_fraction": 0.0, "latency_median_s": 2.0},
        "outages": [{"target": "twilio", "at_s": 400, "duration_s": 200, "fault_rate": 1.0}],
    })
    result = simulate(s)
    start, end = window(result.history, "twilio")
    failed = [e for e in result.history if e["kind"] == "download.end" and not e["ok"]]
    ok = [e for e in result.history if e["kind"] == "download.end" and e["ok"]]
    assert failed and all(start <= e["t"] <= end + 5.0 for e in failed)  # a fetch fails within 5 s
    assert not any(start + 5.0 < e["t"] <= end for e in ok if not e.get("skipped"))
    assert broken(check_all(result.history, result.policy)) == {}  # retried after the window, nothing lost


# --------------------------------------------------------------------------- live


def live(tmp_path: Path, variant: str, sets: tuple[str, ...] = (), drain_s: float = 9000):
    # A long drain allowance on fixed (90 s wall at most; a run that settles stops early): on a
    # loaded 2-core machine the backlog after the restart can take longer than the file's 24 s.
    # A run that loses recordings never settles: it gets the file's drain.
    s = build_scenario("redis-restart", variant, (f"drain_s={drain_s:g}", *sets), 0.01, None)
    result = runner.run_load(runner.LoadOptions(s, users=12, runs_root=tmp_path / "runs"))
    history, verdicts = check_run(result.run_dir)
    return result, {v.name: v for v in verdicts}, history


@pytest.mark.slow  # CI time: test_redis_faults restarts Redis under a storm on the live stack, and its break case
@pytest.mark.redis
@pytest.mark.stack
@pytest.mark.live
@pytest.mark.timeout(300)
def test_live_stack_on_fixed_loses_nothing_across_a_redis_restart_and_a_twilio_error_window(tmp_path):
    result, verdicts, history = live(tmp_path, "fixed")
    assert result.fault_errors == []
    assert {n: sorted(v.anomalies) for n, v in verdicts.items() if v.valid is not True} == {}
    assert result.settled and result.locust_exit_code == 0
    r_start, r_end = window(history, "redis")
    t_start, t_end = window(history, "twilio")
    orphans = [e for e in history if e["kind"] == "job.enqueue" and e.get("via") == "orphan"]
    assert orphans and all(e["t"] > r_start for e in orphans)  # the workers' sweep, after Redis came back
    answers = [e for e in history if e["kind"] == "client.request"]
    unavailable = [e for e in answers if e["status"] == 503]
    assert unavailable and all(e["t"] >= r_start for e in unavailable)  # 503 redis_unavailable: none before it went
    failed = [e for e in history if e["kind"] == "download.end" and not e["ok"]]
    assert any(t_start <= e["t"] <= t_end + 60 for e in failed)  # the stand-in failed downloads in its window
    span = f"{min(e['t'] for e in unavailable) - r_start:.0f}-{max(e['t'] for e in unavailable) - r_start:.0f} s" \
        if unavailable else "none"
    print(f"\nredis-restart fixed: {result.requests} requests, {len(unavailable)} answered 503 "
          f"({span} into the {r_end - r_start:.0f} s window), {len(orphans)} runs re-enqueued by the sweeper, "
          f"{len(failed)} failed downloads ({sum(t_start <= e['t'] <= t_end + 60 for e in failed)} in the Twilio "
          f"window), load {result.load_wall_s:.0f} s + drain {result.drain_wall_s:.0f} s wall, every invariant holds")


@pytest.mark.redis
@pytest.mark.stack
@pytest.mark.live
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_live_stack_without_the_orphan_sweep_loses_recordings_in_a_redis_restart(tmp_path):
    result, verdicts, history = live(tmp_path, "fixed", ("faults=orphan_runs_not_swept",), drain_s=2400)
    lost = verdicts["nothing-lost"]
    assert lost.valid is False
    witnesses = [w for a in lost.anomalies["recording-not-downloaded"] for w in a.witnesses]
    assert witnesses and {w["source"] for w in witnesses} == {"live"}
    assert not any(e.get("via") == "orphan" for e in history if e["kind"] == "job.enqueue")
    print(f"\nredis-restart with orphan_runs_not_swept: {result.requests} requests, nothing-lost broken: "
          f"{len(lost.anomalies['recording-not-downloaded'])} recordings never downloaded")
