"""Benchmark (not a test): the model's speed.

1. events/s of the model, as a ratio to a bare SimPy timeout loop measured in the same run
   (goal >= 0.5): both count what they produce per wall second — the model its history
   events, the loop its timeouts;
2. wall time for one simulated day at 10,000 calls/hour with browser players (goal <= 20 s
   on one core). The model is single-threaded; the CPU time is printed beside the wall time
   because on a shared machine the two differ.

Beside the ratio, the same ratio for benchmarks/skeleton.py: the day's happy path with the
model's draws and records and none of its decisions — an upper bound for any model.

With --floor, also what the model cannot go below: a loop doing as many SimPy timeouts as the
1 h run has SimPy events and appending as many 8-key event dicts as it records, no model logic,
as a ratio to the same bare loop — the ceiling of the events/s ratio for a model with that many
SimPy events.

Run:  python benchmarks/bench_sim.py [--day-hours 24] [--repeat 3] [--floor]
Import: `bare_timeout_loop()`, `run_model(hours)` (the day figures), `speed_ratio(repeat)`,
`floor_rate(timeouts, records)`.
"""
from __future__ import annotations

import argparse
import gc
import time
from dataclasses import dataclass

import simpy

from loopfix.harness.scenario import load_scenario, with_settings
from loopfix.benchmarks.skeleton import skeleton_run
from loopfix.sim.model import simulate_model


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


def floor_rate(timeouts: int, records: int) -> float:
    """Records per wall second of a SimPy process that yields `timeouts` timeouts and, spread
    evenly between them, appends `records` event dicts of 8 keys (a job.start's) to a list:
    the model's unavoidable SimPy and record work with none of its logic. The garbage collector
    is paused, as simulate_model pauses it."""
    env = simpy.Environment()
    history: list[dict] = []
    append, per = history.append, records / timeouts

    def loop():
        owed = 0.0
        for _ in range(timeouts):
            yield env.timeout(1.0)
            owed += per
            while owed >= 1.0:
                owed -= 1.0
                fields = dict(job_id="12", call_sid="CA000012", attempt=1, worker="worker-1")
                fields["t"], fields["kind"], fields["source"], fields["proc"] = env.now, "job.start", "sim", "worker-1"
                append(fields)

    env.process(loop())
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        env.run()
        return len(history) / (time.perf_counter() - start)
    finally:
        if was_enabled:
            gc.enable()


def day_scenario(hours: float):
    """10,000 calls/hour for `hours`, a third of recordings opened in the player, enough
    workers to keep up (about 60 % busy)."""
    return with_settings(load_scenario("steady"), assignments={
        "duration_s": str(hours * 3600), "drain_s": "1800", "arrivals.calls_per_hour": "10000",
        "workers.count": "24", "businesses": "40", "clients.play_fraction": "0.3",
        "recordings.archive_calls": "0", "clients.archive_plays_per_hour": "0",
    })


@dataclass(frozen=True)
class ModelRun:
    """One run of the model on `day_scenario(hours)` (metrics and checker excluded)."""

    hours: float
    history_events: int
    simpy_events: int  # every event SimPy scheduled (timeouts, process steps, triggers)
    wall_s: float
    cpu_s: float  # process CPU time: on a shared machine wall time also counts waiting

    @property
    def events_per_s(self) -> float:
        return self.history_events / self.wall_s


def run_model(hours: float = 24.0) -> ModelRun:
    """Simulate `hours` of the day scenario; `run_model(24)` is the issue's "one simulated day"
    figure (goal: wall_s <= 20 on one core)."""
    s = day_scenario(hours)
    start, cpu = time.perf_counter(), time.process_time()
    model = simulate_model(s, s.make_policy())
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return ModelRun(hours, len(model.history), next(model.env._eid), wall, cpu)


def speed_ratio(repeat: int = 3, hours: float = 1.0) -> dict[str, float]:
    """The model's history events per wall second over a bare SimPy timeout loop's timeouts
    per wall second, both measured here, best of `repeat` each (goal: ratio >= 0.5); and the
    same for benchmarks/skeleton.py on the same scenario."""
    bare = max(bare_timeout_loop() for _ in range(repeat))
    runs = [run_model(hours) for _ in range(repeat)]
    rate = max(r.events_per_s for r in runs)
    simpy_rate = max(r.simpy_events / r.wall_s for r in runs)
    skeleton = max(events / wall for events, wall in (skeleton_run(day_scenario(hours)) for _ in range(repeat)))
    return {"bare_timeouts_per_s": bare, "model_events_per_s": rate, "ratio": rate / bare,
            "model_simpy_events_per_s": simpy_rate, "simpy_ratio": simpy_rate / bare,
            "skeleton_events_per_s": skeleton, "skeleton_ratio": skeleton / bare}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--day-hours", type=float, default=24.0, help="simulated hours of the 'day' run")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of the short ratio runs (best kept)")
    ap.add_argument("--floor", action="store_true", help="also the ratio of SimPy timeouts + record dicts alone")
    args = ap.parse_args()
    r = speed_ratio(args.repeat)
    print(f"bare SimPy timeout loop: {r['bare_timeouts_per_s']:,.0f} timeouts/s")
    print(f"model (1 h at 10,000 calls/h): {r['model_events_per_s']:,.0f} history events/s, "
          f"{r['model_simpy_events_per_s']:,.0f} SimPy events/s")
    print(f"ratio: {r['ratio']:.2f} history events (goal >= 0.5); {r['simpy_ratio']:.2f} SimPy events")
    print(f"skeleton (benchmarks/skeleton.py: the happy path's draws and records, no decisions): "
          f"{r['skeleton_events_per_s']:,.0f} history events/s, ratio {r['skeleton_ratio']:.2f} (a bound for any model)")
    if args.floor:
        one = run_model(1.0)
        floor = max(floor_rate(one.simpy_events, one.history_events) for _ in range(args.repeat))
        print(f"floor ({one.simpy_events:,} SimPy events as timeouts + {one.history_events:,} record dicts, no model logic): "
              f"{floor:,.0f} records/s, ratio {floor / r['bare_timeouts_per_s']:.2f} (the events/s ratio's ceiling)")
    day = run_model(args.day_hours)
    print(f"one simulated day ({args.day_hours:g} h at 10,000 calls/h, players): {day.wall_s:.1f} s wall, "
          f"{day.cpu_s:.1f} s CPU, {day.history_events:,} events (goal <= 20 s)")


if __name__ == "__main__":
    main()
