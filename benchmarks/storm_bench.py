"""Storm capacity of the co-located stack (app, RQ workers, Redis, Twilio stand-in and the load
generator on one machine) with every invariant holding: `loopfix loadtest` (Locust, in its own
processes) runs a retry storm and checks the merged live history; its requests per second are
set beside the bare Flask endpoint's under wrk, measured in the same run on the same machine.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks import app_bench
from benchmarks.figures import Figure
from loadtests.stack import Stack


def loadtest(runs_dir: Path, seconds: float, users: int, processes: int, scenario: str = "retry-storm") -> dict:
    """`loopfix loadtest SCENARIO --json` as a child process; its JSON answer."""
    argv = [sys.executable, "-m", "loopfix.cli", "loadtest", scenario, "--json", "--duration", repr(seconds),
            "--users", str(users), "--processes", str(processes), "--runs-dir", str(runs_dir)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600 + 10 * seconds)
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise RuntimeError(f"loopfix loadtest exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout)


def figures(stack: Stack, seconds: float = 20.0, users: int = 200, processes: int = 2,
            progress=lambda label: None) -> list[Figure]:
    progress("storm: bare Flask endpoint under wrk")
    url, pid = app_bench.serve(stack, "bare", "benchmarks.bare_app:app", "/json")
    bare = app_bench.wrk(url + "/json", min(seconds, 5.0), pid)
    stack.procs.pop("bare").stop()  # free the cores for the storm
    progress(f"storm: loopfix loadtest retry-storm, {users} users, {processes} Locust processes")
    out = loadtest(stack.run_dir / "runs", seconds, users, processes)
    run = out["run"]
    broken = [v["name"] for v in out["verdicts"] if v.get("valid") is not True]
    return [Figure(
        "storm", "retry storm, co-located stack, invariants holding", float(run["requests_per_s"]), "req/s",
        baseline=bare.rps, baseline_name="bare Flask JSON endpoint under wrk, same machine", baseline_unit="req/s",
        goal="value >= 1000",
        note=(f"loopfix loadtest retry-storm --users {users} --processes {processes} --duration {seconds:g}: "
              f"{run['requests']:,} requests, {run['failures']} failures, over load + drain "
              f"{run['load_wall_s'] + run['drain_wall_s']:.1f} s; invariants "
              + ("all hold" if out["valid"] is True else "BROKEN: " + ", ".join(broken))),
        holds=out["valid"] is True, details={"run": run, "valid": out["valid"], "broken": broken})]
