"""Benchmark (not a test): `loopfix sim` end to end — model, metrics and checker — in CPU µs per
simulated call against Ciw's CPU µs per customer on M/M/c (c = 4, ρ = 0.8) measured in the same
run (goal: ≤ 2×), and its peak RSS per simulated call above the interpreter's baseline (goal:
≤ 1 KB).

Each loopfix figure is one child process (/usr/bin/time gives its CPU time and peak RSS):
- `loopfix sim` on bench_sim's day scenario, the `--set` flags of bench_sim.day_scenario
  (10,000 calls/h, 24 workers, a third of calls played), `--json`, optionally `--out DIR`;
- the model alone (sim.simulate_model into a sink that drops every record): what the model
  costs and holds by itself, so that what the metrics and the checker add shows;
- the interpreter's baseline: python importing loopfix's CLI, the model and the checker.
Ciw runs here, best of `--repeat` seeds, CPU time of `Simulation.simulate_until_max_time` and
`get_all_records` over the number of customers served.

Run:  python benchmarks/bench_stream.py [--hours 24] [--repeat 3] [--out] [--before CHECKOUT]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

CALLS_PER_HOUR = 10_000
DAY_SETS = {"duration_s": None, "drain_s": "1800", "arrivals.calls_per_hour": str(CALLS_PER_HOUR),
            "workers.count": "24", "businesses": "40", "clients.play_fraction": "0.3",
            "recordings.archive_calls": "0", "clients.archive_plays_per_hour": "0"}
BASELINE = "import loopfix.cli, loopfix.sim.model, loopfix.harness.invariants, loopfix.sim.run"
MODEL_ALONE = """
import sys
from loopfix.benchmarks.bench_sim import day_scenario
from loopfix.sim.model import simulate_model
class Drop:
    def append(self, record): pass
s = day_scenario(float(sys.argv[1]))
simulate_model(s, s.make_policy(), history=Drop())
"""


@dataclass(frozen=True)
class Child:
    cpu_s: float
    maxrss_kb: int
    stdout: str


def run_child(args: list[str], pythonpath: str | None = None) -> Child:
    """Run `args` under /usr/bin/time: its own CPU time (user + system) and peak RSS. (A child's
    rusage as wait4 gives it starts from its parent's peak at fork: /usr/bin/time is small.)"""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None
        proc = subprocess.run(["/usr/bin/time", "-o", t.name, "-f", "%U %S %M", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env, cwd=pythonpath)  # -m puts cwd first
        if proc.returncode not in (0, 1):  # 1: an invariant broken — still a measured run
            raise RuntimeError(f"{args[:4]} exited {proc.returncode}")
        user, system, maxrss = t.read().split()[-3:]
    return Child(float(user) + float(system), int(maxrss), proc.stdout)


def sim_args(hours: float, out_dir: str | None = None) -> list[str]:
    sets = {**DAY_SETS, "duration_s": str(hours * 3600)}
    args = [sys.executable, "-m", "loopfix.cli", "sim", "steady", "--json"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args + (["--out", out_dir] if out_dir else [])


def ciw_us_per_customer(seed: int, customers: int = 100_000, c: int = 4, rho: float = 0.8) -> float:
    """Ciw's CPU µs per served customer on M/M/c (service rate 1, arrival rate rho * c)."""
    import ciw

    lam = rho * c
    network = ciw.create_network(arrival_distributions=[ciw.dists.Exponential(lam)],
                                 service_distributions=[ciw.dists.Exponential(1.0)], number_of_servers=[c])
    ciw.seed(seed)
    start = time.process_time()
    q = ciw.Simulation(network)
    q.simulate_until_max_time(customers / lam)
    served = len(q.get_all_records())
    return (time.process_time() - start) / served * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--repeat", type=int, default=3, help="Ciw seeds (best of)")
    ap.add_argument("--out", action="store_true", help="also time `loopfix sim --out DIR` (history file written)")
    ap.add_argument("--before", metavar="CHECKOUT", help="also run `loopfix sim` from this source checkout (PYTHONPATH), "
                                                         "e.g. an earlier commit's `git archive`, in the same run")
    a = ap.parse_args()
    calls = a.hours * CALLS_PER_HOUR
    ciw_us = min(ciw_us_per_customer(seed) for seed in range(1, a.repeat + 1))
    base = run_child([sys.executable, "-c", BASELINE])
    model = run_child([sys.executable, "-c", MODEL_ALONE, str(a.hours)])
    rows = [("model alone (records dropped)", model)]
    sim = run_child(sim_args(a.hours))
    events = json.loads(sim.stdout)["metrics"]["events"]
    rows.append(("loopfix sim (end to end)", sim))
    if a.before:
        before = run_child(sim_args(a.hours), a.before)
        if json.loads(before.stdout)["verdicts"] != json.loads(sim.stdout)["verdicts"]:
            print("note: the checkout's verdicts differ from this one's")
        rows.append((f"loopfix sim from {os.path.basename(a.before.rstrip('/'))}", before))
    if a.out:
        with tempfile.TemporaryDirectory() as d:
            rows.append(("loopfix sim --out (history written)", run_child(sim_args(a.hours, d))))
    print(f"day scenario, {a.hours:g} h at {CALLS_PER_HOUR} calls/h = {calls:,.0f} calls, {events:,} history events")
    print(f"Ciw M/M/c (c=4, rho=0.8, 100k customers, best of {a.repeat}): {ciw_us:.1f} CPU us/customer")
    print(f"interpreter baseline: {base.cpu_s:.2f} CPU s, {base.maxrss_kb / 1024:.0f} MB peak RSS")
    print(f"{'':38s} {'CPU s':>7s} {'us/call':>8s} {'vs Ciw':>7s} {'peak MB':>8s} {'KB/call':>8s}")
    for label, r in rows:
        us = r.cpu_s / calls * 1e6
        kb = (r.maxrss_kb - base.maxrss_kb) / calls
        print(f"{label:38s} {r.cpu_s:7.2f} {us:8.1f} {us / ciw_us:6.2f}x {r.maxrss_kb / 1024:8.0f} {kb:8.2f}")
    print("goals: loopfix sim <= 2x Ciw per call; <= 1 KB peak RSS per call above the baseline")


if __name__ == "__main__":
    main()
