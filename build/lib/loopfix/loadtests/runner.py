"""One load run from nothing to a checked history, in `runs/<run-id>/`:

1. start the stack (Redis: --redis-url, else a private redis-server when on PATH, else
   REDIS_URL, else fakeredis's TCP server; the Twilio stand-in at the scenario's latency and
   fault rate; the app under gunicorn; the scenario's RQ workers), every process appending its
   history here;
2. seed the database (fixtures.json) and write run.json — the variant, faults, [policy]
   overrides and time scale the checker rebuilds the policy from (`loopfix verify runs/<id>`);
3. run Locust headless (`--processes N` for its own multi-process mode) with the scenario's
   users and storm profile, while the fault plan opens and closes the outage windows;
4. after the scenario's duration, drain: wait until no recording run or delete job is active,
   no outage is open and no player session is open, for a player's longest wait — or until
   `drain_s` is over;
5. stop Locust (its quitting hook writes its own verdict), then the stack — always, also on
   Ctrl-C or an error, leaving no process behind.

Durations are the scenario's, in policy seconds, run at `time_scale` (wall = policy x scale).
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import func, select

from loopfix.harness import history as history_mod
from loopfix.harness.scenario import Scenario
from loopfix.loadtests.faults import FaultPlan
from loopfix.loadtests.fixtures import seed_fixtures, write_fixtures
from loopfix.loadtests.load_context import LOAD_START_FILE
from loopfix.loadtests.stack import Stack, wait_until
from loopfix.reference_app.config import Config
from loopfix.reference_app.events import HistoryWriter
from loopfix.reference_app.models import BackgroundJob, RecordingRun
from loopfix.reference_app.policy import ACTIVE_RUN_STATUSES, BULK_JOB_ACTIVE
from loopfix.reference_app.services import Services

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
STUB_SIZE_BYTES = 16_000  # a short recording: the load is requests, not bandwidth
SETTLE_CHECK_S = 0.1  # wall seconds between drain checks
STOP_TIMEOUT_S = 120  # wall seconds a stopping Locust user may take to finish its session


@dataclass(frozen=True)
class LoadOptions:
    scenario: Scenario
    users: int
    processes: int = 1
    profile: str = "storm"
    runs_root: Path = Path("runs")
    run_id: str = ""
    redis_url: str | None = None
    redis_kind: str | None = None  # force a private "redis-server" or "fakeredis" (default: see start_stack)
    app_workers: int = 2
    app_threads: int = 8


@dataclass
class LoadResult:
    run_dir: Path
    locust_exit_code: int | None
    load_wall_s: float
    drain_wall_s: float
    settled: bool
    requests: int = 0
    failures: int = 0
    fault_errors: list[str] = field(default_factory=list)

    @property
    def requests_per_s(self) -> float:
        total = self.load_wall_s + self.drain_wall_s
        return self.requests / total if total else 0.0


def new_run_id(scenario: Scenario) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{scenario.name}-{scenario.variant}-{os.getpid()}"


def start_stack(opts: LoadOptions, run_dir: Path, epoch: float) -> Stack:
    """Start Redis, the stand-in, the app and the workers of `opts.scenario`; seed the database;
    write fixtures.json and run.json. The caller stops the stack (also on failure)."""
    s = opts.scenario
    config = Config(data_dir=(run_dir / "data").resolve(), history_dir=run_dir.resolve(), run_epoch=epoch,
                    media_hosts=(), policy=s.make_policy())
    stack = Stack(run_dir, config)
    try:
        if opts.redis_url:
            stack.config = replace(stack.config, redis_url=opts.redis_url)
        elif opts.redis_kind:
            stack.start_redis(opts.redis_kind)
        elif shutil.which("redis-server"):
            stack.start_redis()
        elif os.environ.get("REDIS_URL"):
            stack.config = replace(stack.config, redis_url=os.environ["REDIS_URL"])
        else:
            stack.start_redis("fakeredis")  # the embedded fallback (loadtests/fake_redis.py)
        redis_outages = sorted({o.how for o in s.outages if o.target == "redis"})
        if redis_outages and not stack.redis_kind:
            raise RuntimeError(f"scenario {s.name!r} has Redis outages ({', '.join(redis_outages)}): they need the "
                               "stack's own Redis, not one given by --redis-url or REDIS_URL")
        stack.start_stub(size_bytes=STUB_SIZE_BYTES, latency_s=s.twilio.latency_median_s,
                         latency_sigma=s.twilio.latency_sigma, error_rate=s.twilio.fault_rate)
        stack.start_app(workers=opts.app_workers, threads=opts.app_threads)
        names = [stack.start_worker(f"worker{i + 1}", wait=False).name for i in range(s.workers.count)]
        stack.wait_workers(names)
        fixtures = seed_fixtures(Services(stack.config), s, stack.stub_url)
        write_fixtures(run_dir, fixtures)
        history_mod.write_run_info(run_dir, {
            "source": "live", "scenario": s.name, "scenario_data": s.to_dict(), "variant": s.variant,
            "faults": list(s.faults), "policy": dict(s.policy), "time_scale": s.time_scale, "seed": s.seed,
            "users": opts.users, "processes": opts.processes, "profile": opts.profile, "epoch": epoch,
            "app_url": stack.app_url, "stub_url": stack.stub_url, "redis_url": stack.config.redis_url,
            "redis": stack.redis_kind or "given",
            "pids": {name: proc.pid for name, proc in stack.procs.items()}, "stack_marker": stack.marker,
            # a shared machine's load moves live timings (calibration reports it beside them)
            "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        })
    except BaseException:
        stack.stop()
        raise
    return stack


def locust_command(opts: LoadOptions, app_url: str, run_dir: Path) -> list[str]:
    """Locust headless on `run_dir` (the locustfile's own options name the run and the profile)."""
    args = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", app_url,
            "--loopfix-run-dir", str(run_dir), "--loopfix-profile", opts.profile,
            "--csv", str(run_dir / "locust"), "--only-summary", "--loglevel", "WARNING",
            # a user the shape ramps down finishes its session first (a cut session looks unterminated)
            "--stop-timeout", str(STOP_TIMEOUT_S)]
    if opts.processes > 1:
        args += ["--processes", str(opts.processes)]
    return args


class Tail:
    """New complete lines of a run directory's JSON Lines files matching `pattern`, read
    incrementally (a line still being written waits for the next read)."""

    def __init__(self, run_dir: Path, pattern: str):
        self.run_dir, self.pattern, self.offsets = run_dir, pattern, {}

    def events(self) -> list[dict]:
        out = []
        for path in sorted(self.run_dir.glob(self.pattern)):
            with open(path, "rb") as fh:
                fh.seek(self.offsets.get(path, 0))
                data = fh.read()
            complete = data[: data.rfind(b"\n") + 1]
            self.offsets[path] = self.offsets.get(path, 0) + len(complete)
            out += [json.loads(line) for line in complete.splitlines()]
        return out


class OpenSessions:
    """Player sessions started but not ended, from the Locust processes' history files (read
    incrementally): the drain waits for them, so no session is cut off by the stop."""

    def __init__(self, run_dir: Path, pattern: str = "locust-*.jsonl"):
        self.tail = Tail(run_dir, pattern)
        self.open: set[tuple[str, int]] = set()

    def see(self, e: dict) -> None:
        if e["kind"] == "client.start":
            self.open.add((e["client"], e["session"]))
        elif e["kind"] == "client.end":
            self.open.discard((e["client"], e["session"]))

    def count(self) -> int:
        for e in self.tail.events():
            self.see(e)
        return len(self.open)


def active_work(svc: Services) -> int:
    """Recording runs and delete jobs that still have work to do."""
    with svc.sessions() as s:
        runs = s.scalar(select(func.count()).select_from(RecordingRun)
                        .where(RecordingRun.status.in_(ACTIVE_RUN_STATUSES)))
        jobs = s.scalar(select(func.count()).select_from(BackgroundJob)
                        .where(BackgroundJob.status.in_(BULK_JOB_ACTIVE)))
    return int(runs or 0) + int(jobs or 0)


def run_load(opts: LoadOptions, on_progress: Callable[[str, float], None] | None = None) -> LoadResult:
    """Run one load test end to end (see the module docstring); returns where and how it went."""
    s = opts.scenario
    p = s.make_policy()
    progress = on_progress or (lambda _label, _fraction: None)
    run_dir = (opts.runs_root / (opts.run_id or new_run_id(s))).resolve()
    run_dir.mkdir(parents=True, exist_ok=False)
    epoch = time.time()
    progress("starting the stack", 0.0)
    stack = start_stack(opts, run_dir, epoch)
    plan = None
    try:
        locust = stack._spawn("locust", locust_command(opts, stack.app_url, run_dir), stack.env("locust"))
        started = run_dir / LOAD_START_FILE
        wait_until(started.is_file, 60, "locust", locust.popen, locust.log)
        load_start = float(started.read_text(encoding="utf-8"))
        plan = FaultPlan(stack, s, load_start, HistoryWriter(run_dir, "env", p.time_scale, epoch))
        plan.start()
        svc = Services(stack.config)
        sessions = OpenSessions(run_dir)
        load_end, settled = load_and_drain(
            locust, s, load_start, progress,
            lambda: active_work(svc) > 0 or not plan.outages_over.is_set() or sessions.count() > 0)
        drained = time.time()
        plan.stop()
        code = stop_locust(locust)
        progress("done", 1.0)
        requests, failures = locust_totals(run_dir)
        return LoadResult(run_dir, code, load_end - load_start, drained - load_end, settled, requests, failures,
                          plan.errors)
    except KeyboardInterrupt:  # Ctrl-C: the user waits for the prompt, not for warm shutdowns
        if plan is not None:
            plan.stop()
        stack.stop_now()
        raise
    finally:
        if plan is not None:
            plan.stop()
        stack.stop()


def load_and_drain(locust, s: Scenario, load_start: float, progress: Callable[[str, float], None],
                   busy: Callable[[], bool]) -> tuple[float, bool]:
    """The load for the scenario's duration (Locust must stay up), then the drain: until `busy()`
    has been False for a player's longest wait plus one more poll, or `drain_s` is over.
    Returns (when the load ended, wall epoch; whether it settled). An exception in `busy` (a
    paused Redis, a busy database) counts as busy."""
    p = s.make_policy()
    load_end = load_start + p.wall(s.duration_s)
    drain_end = load_end + p.wall(s.drain_s)
    while time.time() < load_end:
        if not locust.alive:
            raise RuntimeError(f"locust exited early with code {locust.popen.returncode}; see {locust.log}")
        progress("load", (time.time() - load_start) / (drain_end - load_start))
        time.sleep(0.2)
    grace = p.wall(p.retry_after_max_s + p.player_cap_s)  # a player's longest wait, then one more poll
    quiet_since = None
    while time.time() < drain_end and locust.alive:
        progress("drain", (time.time() - load_start) / (drain_end - load_start))
        try:
            now_busy = busy()
        except Exception:  # noqa: BLE001 - not settled yet
            now_busy = True
        now = time.time()
        quiet_since = None if now_busy else (quiet_since or now)
        if quiet_since is not None and now - quiet_since >= grace:
            return load_end, True
        time.sleep(SETTLE_CHECK_S)
    return load_end, False


def stop_locust(locust, timeout: float = STOP_TIMEOUT_S + 30.0) -> int | None:
    """SIGTERM to Locust's master: it stops its users and workers, runs the quitting hook, exits.
    Its users get STOP_TIMEOUT_S to end their sessions (a `before` player polling a 202 forever
    never does), so the wait is longer than that: killed sooner, Locust leaves no exit code."""
    if locust.alive:
        os.kill(locust.pid, signal.SIGTERM)
    try:
        return locust.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        locust.kill()
        return None


def locust_totals(run_dir: Path) -> tuple[int, int]:
    """(requests, failures) from Locust's aggregated stats CSV; (0, 0) when it wrote none."""
    path = run_dir / "locust_stats.csv"
    if not path.is_file():
        return 0, 0
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get("Name") == "Aggregated":
                return int(row["Request Count"]), int(row["Failure Count"])
    return 0, 0


def result_summary(result: LoadResult) -> dict[str, Any]:
    return {"run_dir": str(result.run_dir), "locust_exit_code": result.locust_exit_code,
            "load_wall_s": round(result.load_wall_s, 2), "drain_wall_s": round(result.drain_wall_s, 2),
            "settled": result.settled, "requests": result.requests, "failures": result.failures,
            "requests_per_s": round(result.requests_per_s, 1), "fault_errors": result.fault_errors}
