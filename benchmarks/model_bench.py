"""The model's speed, each against a baseline measured in the same run: CPU µs per simulated
customer of textbook SimPy, loopfix's M/M/c sweep point and its full model ÷ Ciw's on the same
M/M/c (benchmarks/customer_bench.py, issue 18; it replaced issue 4's events/s ratio, which
rewarded bookkeeping events); one simulated day at 10,000 calls/hour with players ÷ a bare SimPy
loop's time for as many SimPy events; a 200-point sweep on every core ÷ the same points' serial
time (the sum of their own wall times).

The measuring functions are `benchmarks/customer_bench.py`'s and `benchmarks/bench_sim.py`'s;
this module only calls them and shapes figures. The sweep runner is passed in by the CLI
(`loopfix sweep`'s).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

from loopfix.benchmarks import customer_bench
from loopfix.benchmarks.bench_sim import bare_timeout_loop, run_model
from loopfix.benchmarks.figures import Figure

# 10 worker counts x 2 arrival rates x 5 Twilio latencies x 2 outage lengths = 200 points.
SWEEP_GRID = dict(workers=tuple(range(1, 11)), calls_per_hour=(240.0, 600.0),
                  latency_median_s=(2.0, 4.0, 8.0, 16.0, 32.0), outage_s=(0.0, 1200.0))


def figures(point_row: customer_bench.PointRow, day_hours: float = 24.0, repeat: int = 3,
            progress=lambda label: None, customers: int = 100_000) -> list[Figure]:
    """The model area's figures; `point_row`: how `loopfix sweep` makes a point's row (the CLI's)."""
    full_hours = customer_bench.full_hours_for(customers)
    tools = customer_bench.measure(point_row, customers, repeat, full_hours=full_hours, progress=progress)
    out = per_customer_figures(tools, full_hours, repeat)
    progress(f"model: {day_hours:g} h at 10,000 calls/h")
    bare = max(bare_timeout_loop() for _ in range(repeat))
    day = run_model(day_hours)
    out.append(
        Figure("model", f"one simulated day ({day_hours:g} h at 10,000 calls/h, players)", day.wall_s, "s",
               baseline=day.simpy_events / bare, baseline_name="bare SimPy loop, as many SimPy events",
               baseline_unit="s", goal="value <= 20",
               note=f"{day.history_events:,} history events, {day.simpy_events:,} SimPy events; "
                    f"{day.cpu_s:.1f} s CPU (single-threaded; the wall time includes waiting for a shared core)"))
    return out


def per_customer_figures(tools: dict[str, customer_bench.Tool], full_hours: float, repeat: int) -> list[Figure]:
    """One figure per contender: CPU µs per customer beside Ciw's (same run), the goal for
    loopfix's two, and the note: split, customers, mean wait against Erlang C."""
    ciw = tools["ciw"].us_per_customer
    out = []
    for name, t in tools.items():
        wait = "" if t.wait_ratio is None else (
            f"; mean queue wait ÷ Erlang C {t.wait_ratio:.3f} "
            f"({'within' if customer_bench.erlang_ok(t) else 'NOT within'} 10 %)")
        split = ", ".join(f"{p} {t.part_us(p):.1f} µs" for p in t.parts[0] if p != "all")
        goal = f"ratio <= {customer_bench.GOALS[name]}" if name in customer_bench.GOALS else ""
        out.append(Figure(
            "model", f"CPU per customer: {customer_bench.label(name, full_hours)}", t.us_per_customer, "µs",
            baseline=None if name == "ciw" else ciw, baseline_name="Ciw, same M/M/c, same run", goal=goal,
            holds=customer_bench.erlang_ok(t) is not False,
            note=f"{t.customers:,} customers over seeds 1-3, best of {repeat} interleaved rounds"
                 + (f"; {split}" if split else "") + wait))
    return out


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
