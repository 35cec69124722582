"""A 200-point sweep on this machine's process pool against a 2-worker Dask LocalCluster, in one
run, interleaved (pool, dask, dask, pool by default) so a load change on a shared machine falls
on both; issue 18 asks for dask <= 1.15x the pool's wall time, with the same table. It lives
beside the command line (not in benchmarks/) because it drives run_sweep and the executors.

Each run is split where the time goes: `open_s` (the pool's or the cluster's start, until the
executor is handed out), `run_s` (submit to last row), `close_s` (shutdown), the sum of the
points' own `wall_s` (time inside sweep_row, on whichever worker), and CPU seconds of this
process (Dask's scheduler and client run here) and of its reaped children (the pool's or the
cluster's worker processes).

    python -m loopfix.dask_sweep_bench [--order pool,dask,dask,pool] [--jobs 2]

`dask-unchunked` in --order sends one point per task (sweep_commands.CHUNKS_PER_SWEEP lifted)
and `dask-spawn` spawns the cluster's workers (Dask's default), to weigh each change alone.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time

GRID = dict(base="worker-outage", workers=(1, 2, 3, 4, 6, 8, 10, 12, 16, 20),
            calls_per_hour=(120.0, 240.0, 480.0, 720.0, 960.0), latency_median_s=(4.0,),
            outage_s=(0.0, 600.0, 1800.0, 3600.0), variants=("fixed",), seeds=(1,), outage_at_s=600.0,
            observe_s=3600.0)  # README's 200-point grid (`loopfix sweep --workers 1,2,...`)


def grid_points() -> list[dict]:
    from loopfix.sim import sweep

    return [{**p, "check": False} for p in sweep.numbered(list(sweep.points(sweep.Grid(**GRID))))]


def _cpu() -> tuple[float, float]:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def one_run(kind: str, points: list[dict], jobs: int) -> tuple[dict, list[dict]]:
    """One sweep of `points` on `kind` ("pool" or "dask"): its figures and its rows."""
    from loopfix.sweep_commands import run_sweep
    from loopfix.sweep_executors import placement

    from loopfix import sweep_commands, sweep_executors

    on_dask = kind.startswith("dask")
    chunks, config = sweep_commands.CHUNKS_PER_SWEEP, sweep_executors.LOCAL_CLUSTER_CONFIG
    if kind == "dask-unchunked":
        sweep_commands.CHUNKS_PER_SWEEP = 10**9
    if kind == "dask-spawn":
        sweep_executors.LOCAL_CLUSTER_CONFIG = {**config, "distributed.worker.multiprocessing-method": "spawn"}
    cpu0, t0 = _cpu(), time.perf_counter()
    try:
        with placement("dask" if on_dask else "process", None, jobs) as where:
            t_open = time.perf_counter()
            rows = run_sweep(points, jobs, executor=where.executor) if on_dask else run_sweep(points, jobs)
            t_run = time.perf_counter()
    finally:
        sweep_commands.CHUNKS_PER_SWEEP, sweep_executors.LOCAL_CLUSTER_CONFIG = chunks, config
    t_close, cpu1 = time.perf_counter(), _cpu()
    return {"kind": kind, "total_s": round(t_close - t0, 2), "open_s": round(t_open - t0, 2),
            "run_s": round(t_run - t_open, 2), "close_s": round(t_close - t_run, 2),
            "points_wall_sum_s": round(sum(r["wall_s"] for r in rows), 2),
            "cpu_parent_s": round(cpu1[0] - cpu0[0], 2), "cpu_children_s": round(cpu1[1] - cpu0[1], 2)}, rows


def _table(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def run(order=("pool", "dask", "dask", "pool"), jobs: int = 2) -> dict:
    import os

    points = grid_points()
    runs, tables = [], []
    for kind in order:
        load = os.getloadavg()[0]
        figures, rows = one_run(kind, points, jobs)
        runs.append({**figures, "load_before": round(load, 1)})
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)  # each run as it ends
        tables.append(_table(rows))
    def mean(kind: str, figure) -> float | None:
        values = [figure(r) for r in runs if r["kind"] == kind]
        return sum(values) / len(values) if values else None

    ratios = {}
    pool_wall, pool_cpu = mean("pool", lambda r: r["total_s"]), mean("pool", lambda r: r["cpu_parent_s"] + r["cpu_children_s"])
    for kind in dict.fromkeys(k for k in order if k != "pool"):
        if pool_wall:
            ratios[kind] = {"wall_over_pool": round(mean(kind, lambda r: r["total_s"]) / pool_wall, 3),
                            "cpu_over_pool": round(mean(kind, lambda r: r["cpu_parent_s"] + r["cpu_children_s"])
                                                   / pool_cpu, 3)}
    return {"points": len(points), "jobs": jobs, "runs": runs, "same_table": all(t == tables[0] for t in tables),
            "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--order", default="pool,dask,dask,pool")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    print(json.dumps(run(tuple(a.order.split(",")), a.jobs), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
