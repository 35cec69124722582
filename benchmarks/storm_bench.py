"""Storm capacity of the co-located stack — the app under gunicorn, RQ workers, Redis, the Twilio
stand-in and the Locust load generator, all on this machine — with every invariant holding.

`loopfix loadtest SCENARIO --profile steady` (in its own process) runs the storm at a number
of Locust users and checks the merged live history. The rate is counted from that history:
`client.request` events (one per answered request) sent while the load ran, divided by its
wall seconds — the drain that follows is not load. Users double from `start_users` until the
invariants break, the rate stops growing (less than `min_gain`), or `max_users`; the capacity
is the highest rate of a run whose invariants all held.

While each storm runs, the CPU time of every process below the loadtest process is sampled
from /proc, grouped by role (LOOPFIX_PROC of its environment: app, worker…, twilio, locust;
redis-server by name), together with the whole machine's (/proc/stat), so the report says
where the cores went: to the server side, to the load generator, or to other tenants.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from loopfix.benchmarks import app_bench
from loopfix.benchmarks.figures import Figure
from loopfix.loadtests.stack import Stack, descendants

SCENARIO = "poll-storm"
SAMPLE_S = 0.25
SERVER_ROLES = ("app", "workers", "redis", "twilio")


def _role(pid: int) -> str:
    try:
        if Path(f"/proc/{pid}/comm").read_text().startswith("redis-server"):
            return "redis"
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    proc = next((e[len(b"LOOPFIX_PROC="):].decode() for e in env if e.startswith(b"LOOPFIX_PROC=")), "")
    return "workers" if proc.startswith("worker") else proc or "runner"


def _cpu_s(pid: int, reaped_children: bool) -> float:
    """utime + stime (+ cutime + cstime: children it has waited for, e.g. RQ's work horses)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / app_bench.TICKS


class CpuSampler:
    """Cumulative CPU seconds per role of the processes below `root`, every SAMPLE_S, in a thread.

    A role's total sums its live processes (their reaped children included, not the root's:
    the stack's processes are its children and counted themselves); `between(a, b)` is the CPU
    each role used between wall times a and b, from the samples nearest to them.
    """

    def __init__(self, root: int):
        self.root = root
        # (wall, machine busy before the processes are read, role -> cpu, machine busy after)
        self.samples: list[tuple[float, float, dict[str, float], float]] = []
        self._roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _sample(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for pid in descendants(self.root):
            role = self._roles.get(pid) or self._roles.setdefault(pid, _role(pid))
            totals[role] = totals.get(role, 0.0) + _cpu_s(pid, reaped_children=True)
        return totals

    def _run(self) -> None:
        while not self._stop.is_set():
            before = app_bench.machine_busy_s()
            roles = self._sample()
            self.samples.append((time.time(), before, roles, app_bench.machine_busy_s()))
            self._stop.wait(SAMPLE_S)

    def between(self, start: float, end: float) -> tuple[dict[str, float], float]:
        """(CPU seconds per role, machine busy CPU seconds) from wall `start` to `end`. The
        machine's span runs from before the first sample's reads to after the last's, so it covers
        every CPU second the processes were charged in between (to within the kernel's tick)."""
        if not self.samples:
            return {}, 0.0
        first = min(self.samples, key=lambda s: abs(s[0] - start))
        last = min(self.samples, key=lambda s: abs(s[0] - end))
        roles = {r: max(0.0, last[2].get(r, 0.0) - first[2].get(r, 0.0)) for r in last[2]}
        return roles, last[3] - first[1]


@dataclass(frozen=True)
class StormRun:
    """One storm: its users, the load-phase request rate from the history, its verdict and CPU split."""

    users: int
    load_s: float
    requests: int  # answered while the load ran (client.request events)
    statuses: dict[str, int]
    failures: int  # Locust's failures over the whole run (load and drain)
    valid: bool | None
    broken: list[str]
    cores: dict[str, float] = field(default_factory=dict)  # role -> cores used during the load
    machine_cores: float = 0.0
    run_dir: str = ""

    @property
    def rate(self) -> float:
        return self.requests / self.load_s if self.load_s else 0.0

    @property
    def server_cores(self) -> float:
        return sum(v for r, v in self.cores.items() if r in SERVER_ROLES)

    @property
    def other_cores(self) -> float:
        """The machine's busy cores that were not this storm's processes: other tenants."""
        return max(0.0, self.machine_cores - sum(self.cores.values()))

    def summary(self) -> str:
        split = ", ".join(f"{r} {v:.2f}" for r, v in sorted(self.cores.items(), key=lambda kv: -kv[1]) if v >= 0.005)
        verdict = "all invariants hold" if self.valid is True else "BROKEN: " + ", ".join(self.broken or ["undecided"])
        return (f"{self.users} users: {self.rate:,.0f} req/s over {self.load_s:.0f} s ({self.requests:,} requests, "
                f"{self.failures} failures), {verdict}; cores: {split}; other tenants {self.other_cores:.2f}")


def load_phase_requests(run_dir: Path, seconds: float) -> tuple[int, dict[str, int]]:
    """client.request events answered between the load's start and `seconds` later (wall)."""
    info = json.loads((run_dir / "run.json").read_text())
    start = float((run_dir / "load_start").read_text())
    epoch, scale = float(info["epoch"]), float(info["time_scale"])
    lo, hi = (start - epoch) / scale, (start + seconds - epoch) / scale
    n, statuses = 0, {}
    for path in run_dir.glob("locust-*.jsonl"):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if '"client.request"' not in line:
                    continue
                e = json.loads(line)
                if lo <= e["t"] <= hi:
                    n += 1
                    statuses[str(e["status"])] = statuses.get(str(e["status"]), 0) + 1
    return n, dict(sorted(statuses.items()))


def storm(users: int, seconds: float, processes: int, scenario: str = SCENARIO, keep_dir: Path | None = None) -> StormRun:
    """`loopfix loadtest SCENARIO --profile steady` at `users` for `seconds` of load, sampled."""
    runs_dir = Path(tempfile.mkdtemp(prefix="loopfix-storm-", dir=keep_dir))
    argv = [sys.executable, "-m", "loopfix.cli", "loadtest", scenario, "--json", "--profile", "steady",
            "--duration", repr(seconds), "--users", str(users), "--processes", str(processes),
            "--runs-dir", str(runs_dir)]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with CpuSampler(child.pid) as cpu:
        try:
            out, err = child.communicate(timeout=600 + 10 * seconds)
        except subprocess.TimeoutExpired:
            child.terminate()  # the loadtest stops its own stack on SIGTERM
            child.communicate(timeout=120)
            raise RuntimeError(f"loopfix loadtest {scenario} did not finish") from None
    if child.returncode not in (0, 1) or not out.strip():
        raise RuntimeError(f"loopfix loadtest exited {child.returncode}: {err.strip()[-300:]}")
    result = json.loads(out)
    run_dir = Path(result["run"]["run_dir"])
    start = float((run_dir / "load_start").read_text())
    requests, statuses = load_phase_requests(run_dir, seconds)
    used, machine = cpu.between(start, start + seconds)
    return StormRun(users, seconds, requests, statuses, int(result["run"]["failures"]), result["valid"],
                    [v["name"] for v in result["verdicts"] if v.get("valid") is not True],
                    {r: round(v / seconds, 3) for r, v in used.items()}, round(machine / seconds, 3), str(run_dir))


def capacity(seconds: float, processes: int, start_users: int = 100, max_users: int = 1600, min_gain: float = 0.05,
             scenario: str = SCENARIO, progress=lambda label: None, keep_dir: Path | None = None) -> list[StormRun]:
    """Storms at doubling users until the invariants break, the rate stops growing, or max_users."""
    runs: list[StormRun] = []
    users = start_users
    while users <= max_users:
        progress(f"storm: {scenario}, {users} users, {processes} Locust processes")
        run = storm(users, seconds, processes, scenario, keep_dir)
        runs.append(run)
        held = [r for r in runs[:-1] if r.valid is True]
        if run.valid is not True or (held and run.rate < max(r.rate for r in held) * (1 + min_gain)):
            break
        users *= 2
    return runs


def figures(stack: Stack, seconds: float = 15.0, users: int = 100, processes: int = 2,
            progress=lambda label: None) -> list[Figure]:
    progress("storm: bare Flask endpoint under wrk")
    url, pid = app_bench.serve(stack, "bare", "loopfix.benchmarks.bare_app:app", "/json")
    bare = app_bench.wrk(url + "/json", min(seconds, 5.0), pid)
    stack.procs.pop("bare").stop()  # free the cores for the storm
    runs = capacity(seconds, processes, start_users=users, progress=progress)
    held = [r for r in runs if r.valid is True]
    best = max(held, key=lambda r: r.rate) if held else max(runs, key=lambda r: r.rate)
    return [Figure(
        "storm", f"{SCENARIO} capacity, co-located stack, invariants holding", best.rate if held else 0.0, "req/s",
        baseline=bare.rps, baseline_name="bare Flask JSON endpoint under wrk, same machine", baseline_unit="req/s",
        goal="value >= 1000",
        note=(f"loopfix loadtest {SCENARIO} --profile steady --processes {processes} --duration {seconds:g} "
              f"--users N, N doubling from {users}; best: " + best.summary()
              + "; every run: " + " | ".join(r.summary() for r in runs)),
        holds=bool(held),
        details={"runs": [{**r.__dict__, "rate": r.rate, "server_cores": r.server_cores,
                           "other_cores": r.other_cores} for r in runs]})]


def main() -> None:
    """`python -m loopfix.benchmarks.storm_bench [USERS ...]`: one storm per user count, summaries as JSON lines."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("users", type=int, nargs="*", default=[50, 100, 200])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--scenario", default=SCENARIO)
    ap.add_argument("--keep", type=Path, default=None, help="keep the run directories under this directory")
    args = ap.parse_args()
    for n in args.users:
        run = storm(n, args.seconds, args.processes, args.scenario, args.keep)
        print(run.summary(), flush=True)
        print(json.dumps({**run.__dict__, "rate": round(run.rate, 1)}), flush=True)


if __name__ == "__main__":
    main()
