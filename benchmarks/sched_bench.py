"""How late a delayed RQ job starts: RQ's own scheduler (`enqueue_in` + a worker started with
`with_scheduler=True`) against loopfix's promoter (parking.schedule_in + promote_due every
worker.tick_seconds, as the worker's Ticker runs it), on a private redis-server.

Each mode starts one RQ worker process (forking work horses, as `loopfix worker` runs), then
enqueues `n` jobs `delay` wall seconds ahead, at random sub-second phases (a real retry falls
due at any instant). The job stamps `time.time()` when its work horse runs it; lateness is that
stamp minus the due time (negative: started early). A third mode enqueues with no delay: the
worker's own pick-up cost, which neither scheduler can remove.

    python -m loopfix.benchmarks.sched_bench [--n 50] [--delay 0.3] [--time-scale 0.01]

The lateness is compared with the backoff checker's tolerance at that time scale
(harness/invariants.check_backoff: rel_tol * delay + abs_tol_s policy seconds, the first retry
being the tightest).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import redis
from rq import Queue, Worker, get_current_job

from loopfix.reference_app.config import Config
from loopfix.reference_app.parking import promote_due, schedule_in
from loopfix.reference_app.policy import backoff_delay, make_policy

STAMPS = "loopfix-sched-bench:starts"
QUEUE = "loopfix-sched-bench"
MODES = ("immediate", "loopfix-ticker", "rq-scheduler")
JOB = "loopfix.benchmarks.sched_bench.stamp"  # by name: run as __main__, `stamp` is not importable as such


def stamp() -> None:
    """The job: record when a work horse started it."""
    job = get_current_job()
    job.connection.rpush(STAMPS, json.dumps({"id": job.id, "t": time.time()}))


def serve(url: str, mode: str, tick_s: float) -> None:
    """One worker process: RQ's scheduler inside it, or the ticker's promote loop beside it."""
    conn = redis.Redis.from_url(url)
    queue = Queue(QUEUE, connection=conn)
    if mode == "loopfix-ticker":
        def tick() -> None:
            while True:
                promote_due([queue])
                time.sleep(tick_s)
        threading.Thread(target=tick, daemon=True).start()
    Worker([queue], connection=conn).work(with_scheduler=mode == "rq-scheduler", logging_level="WARNING")


def measure(url: str, mode: str, n: int, delay_s: float, tick_s: float, seed: int = 1) -> list[float]:
    """Lateness (wall seconds) of `n` jobs due `delay_s` after their enqueue, in `mode`."""
    conn = redis.Redis.from_url(url)
    conn.flushdb()
    queue = Queue(QUEUE, connection=conn)
    proc = subprocess.Popen([sys.executable, "-m", "loopfix.benchmarks.sched_bench", "--serve", url,
                             "--mode", mode, "--tick", str(tick_s)])
    try:
        time.sleep(1.5)  # the worker (and its scheduler process) up
        rng = random.Random(seed)
        due: dict[str, float] = {}
        for _ in range(n):
            time.sleep(rng.uniform(0.0, 0.25))
            if mode == "rq-scheduler":
                job = queue.enqueue_in(timedelta(seconds=delay_s), JOB)
                due[job.id] = time.time() + delay_s  # after the call: the lateness is not overstated
            elif mode == "loopfix-ticker":
                job = queue.create_job(JOB)
                due[job.id] = time.time() + delay_s
                schedule_in(queue, job, delay_s)
            else:
                job = queue.create_job(JOB)
                due[job.id] = time.time()
                queue.enqueue_job(job)
        deadline = time.time() + delay_s + 10
        while conn.llen(STAMPS) < n and time.time() < deadline:
            time.sleep(0.05)
        starts = {d["id"]: d["t"] for d in map(json.loads, conn.lrange(STAMPS, 0, -1))}
        return [starts[j] - due[j] if j in starts else float("inf") for j in due]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()  # its scheduler child exits on its own when the lock's parent is gone
            proc.wait()


def summary(late: list[float]) -> dict:
    done = sorted(x for x in late if x != float("inf"))
    q = statistics.quantiles(done, n=20) if len(done) > 1 else done * 19
    return {"jobs": len(late), "started": len(done), "min_s": round(done[0], 4), "median_s": round(statistics.median(done), 4),
            "p95_s": round(q[18], 4), "max_s": round(done[-1], 4),
            "early": sum(1 for x in done if x < 0)}


def run(n: int = 50, delay_s: float = 0.3, time_scale: float = 0.01, modes=MODES) -> dict:
    from loopfix.loadtests.stack import Stack
    from loopfix.reference_app.worker import tick_seconds_for

    p = make_policy(time_scale=time_scale)
    tick_s = tick_seconds_for(p)
    first = backoff_delay(1, p)
    tol_policy_s = 0.02 * first + 1.0  # check_backoff's defaults (rel_tol 0.02, abs_tol_s 1.0)
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp), Config())
        url = stack.start_redis("redis-server")
        try:
            out = {mode: summary(measure(url, mode, n, delay_s, tick_s)) for mode in modes}
        finally:
            stack.stop()
    return {"n": n, "delay_s": delay_s, "time_scale": time_scale, "ticker_tick_s": tick_s,
            "first_retry_policy_s": first, "tolerance_policy_s": tol_policy_s,
            "tolerance_wall_s": p.wall(tol_policy_s), "modes": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--delay", type=float, default=0.3)
    ap.add_argument("--time-scale", type=float, default=0.01)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="immediate", help=argparse.SUPPRESS)
    ap.add_argument("--tick", type=float, default=0.005, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        serve(a.serve, a.mode, a.tick)
        return 0
    print(json.dumps(run(a.n, a.delay, a.time_scale), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
