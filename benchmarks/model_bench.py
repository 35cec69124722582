"""The model's speed, each against a baseline measured in the same run: history events per
second ÷ a bare SimPy timeout loop's timeouts per second; one simulated day at 10,000 calls/hour
with players ÷ the bare loop's time for as many SimPy events; a 200-point sweep on every core ÷
the same points' serial time (the sum of their own wall times).

The measuring functions are `benchmarks/bench_sim.py`'s (another area owns them); this module
only calls them and shapes figures. The sweep runner is passed in by the CLI (`loopfix sweep`'s).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

from loopfix.benchmarks.bench_sim import run_model, speed_ratio
from loopfix.benchmarks.figures import Figure

# 10 worker counts x 2 arrival rates x 5 Twilio latencies x 2 outage lengths = 200 points.
SWEEP_GRID = dict(workers=tuple(range(1, 11)), calls_per_hour=(240.0, 600.0),
                  latency_median_s=(2.0, 4.0, 8.0, 16.0, 32.0), outage_s=(0.0, 1200.0))


def figures(day_hours: float = 24.0, repeat: int = 2, progress=lambda label: None) -> list[Figure]:
    progress(f"model: bare SimPy loop and 1 h at 10,000 calls/h, best of {repeat}")
    r = speed_ratio(repeat)
    progress(f"model: {day_hours:g} h at 10,000 calls/h")
    day = run_model(day_hours)
    return [
        Figure("model", "history events/s (1 h at 10,000 calls/h)", r["model_events_per_s"], "events/s",
               baseline=r["bare_timeouts_per_s"], baseline_name="bare SimPy timeout loop", baseline_unit="timeouts/s",
               goal="ratio >= 0.5", note=f"SimPy events/s {r['model_simpy_events_per_s']:,.0f} "
                                         f"(ratio {r['simpy_ratio']:.2f}); best of {repeat}; "
                                         f"benchmarks/skeleton.py (no decisions, a bound for any model): "
                                         f"ratio {r['skeleton_ratio']:.2f}"),
        Figure("model", f"one simulated day ({day_hours:g} h at 10,000 calls/h, players)", day.wall_s, "s",
               baseline=day.simpy_events / r["bare_timeouts_per_s"], baseline_name="bare SimPy loop, as many SimPy events",
               baseline_unit="s", goal="value <= 20",
               note=f"{day.history_events:,} history events, {day.simpy_events:,} SimPy events; "
                    f"{day.cpu_s:.1f} s CPU (single-threaded; the wall time includes waiting for a shared core)"),
    ]


def sweep_figure(run_sweep: Callable[[Sequence[Mapping[str, Any]]], list[dict]], jobs: int,
                 progress=lambda label: None) -> Figure:
    """Wall time of a 200-point sweep with `jobs` processes, beside the serial sum of its points."""
    from loopfix.sim import sweep

    points = list(sweep.points(sweep.Grid(**SWEEP_GRID)))
    progress(f"model: {len(points)}-point sweep on {jobs} processes")
    start = time.perf_counter()
    rows = run_sweep(points)
    wall = time.perf_counter() - start
    serial = sum(r["wall_s"] for r in rows)
    return Figure("model", f"{len(points)}-point sweep ({jobs} processes)", wall, "s", baseline=serial,
                  baseline_name="its points' serial wall time (sum)", baseline_unit="s", goal="value <= 120",
                  note="grid: " + ", ".join(f"{k} {v}" for k, v in SWEEP_GRID.items()) + f"; base {sweep.Grid.base}")
