"""Benchmark (not a test): the model's speed.

1. events/s of the model, as a ratio to a bare SimPy timeout loop measured in the same run
   (goal >= 0.5): both count what they produce per wall second — the model its history
   events, the loop its timeouts;
2. wall time for one simulated day at 10,000 calls/hour with browser players (goal <= 20 s
   on one core). The model is single-threaded; the CPU time is printed beside the wall time
   because on a shared machine the two differ.

Run:  python benchmarks/bench_sim.py [--day-hours 24] [--repeat 3]
"""
from __future__ import annotations

import argparse
import time

import simpy

from harness.scenario import load_scenario, with_settings
from sim.model import simulate_model


def bare_timeout_loop(n: int = 1_000_000) -> float:
    """Timeouts per wall second of the simplest SimPy process."""
    env = simpy.Environment()

    def loop():
        for _ in range(n):
            yield env.timeout(1.0)

    env.process(loop())
    start = time.perf_counter()
    env.run()
    return n / (time.perf_counter() - start)


def day_scenario(hours: float):
    """10,000 calls/hour for `hours`, a third of recordings opened in the player, enough
    workers to keep up (about 60 % busy)."""
    return with_settings(load_scenario("steady"), assignments={
        "duration_s": str(hours * 3600), "drain_s": "1800", "arrivals.calls_per_hour": "10000",
        "workers.count": "24", "businesses": "40", "clients.play_fraction": "0.3",
        "recordings.archive_calls": "0", "clients.archive_plays_per_hour": "0",
    })


def model_rate(hours: float) -> tuple[float, int, float, float]:
    """(history events per wall second, events, wall seconds, SimPy events per wall second)
    for one run of the model (metrics excluded)."""
    s = day_scenario(hours)
    start, cpu = time.perf_counter(), time.process_time()
    model = simulate_model(s, s.make_policy())
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    simpy_events = next(model.env._eid)  # SimPy numbers every event it schedules
    print(f"  ({hours:g} h: {wall:.1f} s wall, {cpu:.1f} s CPU)")
    return len(model.history) / wall, len(model.history), wall, simpy_events / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--day-hours", type=float, default=24.0, help="simulated hours of the 'day' run")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of the short ratio runs (best kept)")
    args = ap.parse_args()
    bare = max(bare_timeout_loop() for _ in range(args.repeat))
    runs = [model_rate(1.0) for _ in range(args.repeat)]
    rate = max(r[0] for r in runs)
    simpy_rate = max(r[3] for r in runs)
    print(f"bare SimPy timeout loop: {bare:,.0f} timeouts/s")
    print(f"model (1 h at 10,000 calls/h): {rate:,.0f} history events/s, {simpy_rate:,.0f} SimPy events/s")
    print(f"ratio: {rate / bare:.2f} history events (goal >= 0.5); {simpy_rate / bare:.2f} SimPy events")
    _, events, wall, _ = model_rate(args.day_hours)
    print(f"one simulated day ({args.day_hours:g} h at 10,000 calls/h, players): {wall:.1f} s wall, "
          f"{events:,} events (goal <= 20 s)")


if __name__ == "__main__":
    main()
