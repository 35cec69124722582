"""`loopfix bench` and the poll's Redis cost: the 202 poll makes at most one round trip (a
count from Redis commandstats + MONITOR on a real server, not a timing), the one-call-per-
primitive faults visibly cost more, a known live worker is trusted no longer than its liveness
key lives, the storm's rate and CPU split are counted as documented, and the CLI prints
well-formed figures. No speed is asserted here: speeds are measured by `loopfix bench` and
kept in BENCHMARKS.md."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from loopfix.benchmarks import poll_targets, redis_bench
from loopfix.benchmarks.storm_bench import CpuSampler, load_phase_requests
from loopfix.loadtests.stack import descendants
from loopfix.reference_app.coordination import WORKERS_ALIVE_KEY

POLLS_202 = [sc for sc in redis_bench.SCENARIOS if sc.goal]


def test_every_202_poll_without_a_new_job_makes_at_most_one_redis_round_trip(redis_url, tmp_path):
    counts = redis_bench.measure(redis_url, tmp_path, "fixed", requests=5, scenarios=POLLS_202)
    for label, c in counts.items():
        assert set(c.statuses) == {202}, label
        assert c.max_round_trips <= 1, (label, c.round_trips, c.commands)


def test_no_worker_poll_with_one_call_per_primitive_takes_more_round_trips(redis_url, tmp_path):
    """The faults that keep the seed's separate calls (racy mark, INCR then EXPIRE) break the
    one-round-trip property: the count above can fail."""
    no_worker = [sc for sc in POLLS_202 if not sc.worker_alive]
    counts = redis_bench.measure(redis_url, tmp_path, "fixed", redis_bench.UNFOLDED, requests=5, scenarios=no_worker)
    (c,) = counts.values()
    assert set(c.statuses) == {202}
    assert c.max_round_trips > 1, c.round_trips
    assert "evalsha" not in c.commands  # no script: one call per primitive


def _gate_scripts_run(conn: redis.Redis) -> int:
    return int(conn.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def test_a_known_live_worker_is_trusted_no_longer_than_its_liveness_key_lives(app_factory, redis_url):
    """The poll skips the liveness read while it knows a worker is alive, but never past the
    liveness key's own TTL (here 60 policy s = 0.3 s wall, shorter than the 1 s trust cap): once
    the key has expired, the next poll asks Redis, sees no worker and counts a fail-fast attempt."""
    client, svc = app_factory(time_scale=0.005, history=False)
    conn = redis.Redis.from_url(redis_url)
    business_id, token = poll_targets.add_business(svc)
    call = poll_targets.add_call(svc, business_id, "queued")
    headers = {"Authorization": f"Bearer {token}"}
    svc.coord.worker_beat()
    first = client.get(f"/api/recordings/file/{call}", headers=headers)
    scripts = _gate_scripts_run(conn)
    again = client.get(f"/api/recordings/file/{call}", headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert "attempt" not in again.get_json() and _gate_scripts_run(conn) == scripts  # trusted: no round trip
    deadline = time.monotonic() + 30
    while conn.exists(WORKERS_ALIVE_KEY) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not conn.exists(WORKERS_ALIVE_KEY)
    poll_targets.refresh(svc, call)  # a fresh queued run: waiting, not stuck
    gone = client.get(f"/api/recordings/file/{call}", headers=headers)
    assert gone.status_code == 202 and gone.get_json().get("attempt") == 1, gone.get_json()
    assert _gate_scripts_run(conn) == scripts + 1


@pytest.mark.redis
def test_bench_redis_json_prints_every_figure_with_baseline_ratio_and_goal():
    out = subprocess.run([sys.executable, "-m", "loopfix.cli", "bench", "--only", "redis", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    figures = json.loads(out.stdout)
    assert [f["name"] for f in figures] == [f"round trips / poll, {sc.label}" for sc in redis_bench.SCENARIOS]
    for f in figures:
        assert f["area"] == "redis" and f["baseline"] is not None and f["baseline_name"]
        assert f["met"] in (True, None) and (f["goal"] == "") == (f["met"] is None)


def test_bench_with_an_unknown_area_exits_2_with_a_one_line_error():
    out = subprocess.run([sys.executable, "-m", "loopfix.cli", "bench", "--only", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_storm_rate_counts_only_requests_answered_while_the_load_ran(tmp_path):
    """Requests of the drain (and before the load) are not load; other events are not requests."""
    (tmp_path / "run.json").write_text(json.dumps({"epoch": 1000.0, "time_scale": 0.01}))
    (tmp_path / "load_start").write_text("1001.0")  # policy 100 s; 2 wall s of load end at policy 300 s
    events = [("client.request", 50.0, 202), ("client.request", 150.0, 202), ("client.start", 160.0, None),
              ("client.request", 250.0, 200), ("client.request", 350.0, 202)]
    (tmp_path / "locust-1.jsonl").write_text("".join(
        json.dumps({"kind": kind, "t": t, "status": status}) + "\n" for kind, t, status in events))
    assert load_phase_requests(tmp_path, 2.0) == (2, {"200": 1, "202": 1})


def test_storm_cpu_sampler_charges_each_process_to_its_role(tmp_path):
    """Two children burn 0.5 s and 0.25 s of CPU under LOOPFIX_PROC=app and =locust: each
    role gets its own child's CPU, and the machine's busy time covers both."""
    go = tmp_path / "go"
    burner = ("import os, time\n"
              f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
              "t0 = time.process_time()\nwhile time.process_time() - t0 < {cpu_s}: pass\n"
              "print('burnt', flush=True)\ntime.sleep(60)")
    starter = ("import os, subprocess, sys\n"
               "kids = [subprocess.Popen([sys.executable, '-c', code], env={**os.environ, 'LOOPFIX_PROC': role},"
               " stdout=subprocess.PIPE, text=True) for role, code in [('app', sys.argv[1]), ('locust', sys.argv[2])]]\n"
               "for kid in kids: kid.stdout.readline()\n"
               "print('burnt', flush=True)\n[kid.wait() for kid in kids]\n")
    root = subprocess.Popen([sys.executable, "-c", starter, burner.format(cpu_s=0.5), burner.format(cpu_s=0.25)],
                            stdout=subprocess.PIPE, text=True)
    try:
        with CpuSampler(root.pid) as cpu:
            time.sleep(0.5)  # the children are up and waiting; at least one sample taken
            start = cpu.samples[-1][0]
            go.touch()
            assert root.stdout.readline().strip() == "burnt"
            time.sleep(0.6)  # two more samples while the burners are still alive
            end = time.time()
        used, machine = cpu.between(start, end)
    finally:
        for pid in descendants(root.pid):
            os.kill(pid, signal.SIGTERM)
        root.wait(10)
    assert used.get("app", 0.0) >= 0.45, used
    assert 0.2 <= used.get("locust", 0.0) <= 0.4, used
    # each counter is kept in kernel ticks: the processes' two and the machine's cores' can each
    # be a tick short of the time actually spent
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert machine >= used["app"] + used["locust"] - (2 + os.cpu_count()) * tick
