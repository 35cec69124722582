"""Requests per second of the poll endpoint under gunicorn, on the 202 path (a queued download,
a worker alive) and the 200 path (64 kB of audio from disk), each divided by the req/s of a bare
Flask JSON endpoint (`benchmarks.bare_app`) served by the same gunicorn configuration in the
same run.

The load tool is wrk (Debian package `wrk`, one thread, keep-alive connections, one per
gunicorn thread). Its CPU time (from `wait4`) and the servers' (from /proc) are reported beside
each figure, so a reader can see that wrk is not the bottleneck: it uses a small share of one
core while the server side uses the rest of the machine.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from benchmarks import poll_targets
from benchmarks.figures import Figure
from loadtests.stack import Stack, free_port, http_ok, wait_until
from reference_app.config import Config
from reference_app.services import Services

WORKERS, THREADS = 2, 8  # `loopfix serve`'s defaults
TICKS = os.sysconf("SC_CLK_TCK")


def gunicorn_argv(app: str, port: int, workers: int = WORKERS, threads: int = THREADS) -> list[str]:
    """The one gunicorn command line both apps run under: `loopfix serve`'s flags."""
    return [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
            "--threads", str(threads), "--worker-class", "gthread", "--graceful-timeout", "5",
            "--access-logfile", "/dev/null", app]


def serve(stack: Stack, name: str, app: str, health_path: str) -> tuple[str, int]:
    """Start `app` under gunicorn in `stack` (stopped with it); returns (base URL, master pid)."""
    port = free_port()
    proc = stack._spawn(name, gunicorn_argv(app, port), stack.env(name))
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(url + health_path), 30, name, proc.popen, proc.log)
    return url, proc.pid


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of `pid` and its live children (gunicorn's workers)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:  # fields[1]: ppid
            total += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return total


@dataclass(frozen=True)
class Load:
    """One wrk run: req/s, requests, non-2xx answers, socket errors, and CPU seconds of wrk and the server."""

    rps: float
    requests: int
    non_2xx: int
    socket_errors: int
    seconds: float
    wrk_cpu_s: float
    server_cpu_s: float

    @property
    def wrk_cores(self) -> float:
        return self.wrk_cpu_s / self.seconds

    @property
    def server_cores(self) -> float:
        return self.server_cpu_s / self.seconds


def wrk(url: str, seconds: float, server_pid: int, headers: dict[str, str] | None = None,
        connections: int = WORKERS * THREADS) -> Load:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s"]
    for k, v in (headers or {}).items():
        argv += ["-H", f"{k}: {v}"]
    server_before, start = process_tree_cpu_s(server_pid), time.perf_counter()
    p = subprocess.Popen(argv + [url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)  # wrk's own CPU time
    p.returncode = os.waitstatus_to_exitcode(status)
    wall, server_cpu = time.perf_counter() - start, process_tree_cpu_s(server_pid) - server_before
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if p.returncode != 0 or rps is None:
        raise RuntimeError(f"wrk failed (exit {p.returncode}): {out.strip()[-300:]}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return Load(float(rps.group(1)), int(re.search(r"(\d+) requests in", out).group(1)),
                int(non_2xx.group(1)) if non_2xx else 0, sum(map(int, errors.groups())) if errors else 0,
                wall, usage.ru_utime + usage.ru_stime, server_cpu)


def _status(url: str, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _note(load: Load, base: Load) -> str:
    return (f"wrk -t1 -c{WORKERS * THREADS}: wrk {load.wrk_cores:.0%} of one core, server "
            f"{load.server_cores:.2f} cores (bare: wrk {base.wrk_cores:.0%}, server {base.server_cores:.2f}); "
            f"{load.requests:,} requests, {load.non_2xx} unexpected statuses, {load.socket_errors} socket errors")


def figures(stack: Stack, seconds: float = 5.0, repeat: int = 2, progress=lambda label: None) -> list[Figure]:
    """Poll req/s on the 202 and 200 paths ÷ bare Flask req/s; best of `repeat` interleaved runs each."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk not on PATH: apt-get install -y wrk")
    svc = Services(stack.config)
    business_id, token = poll_targets.add_business(svc)
    waiting = poll_targets.add_call(svc, business_id, "queued")
    ready = poll_targets.add_call(svc, business_id, "ready")
    bare_url, bare_pid = serve(stack, "bare", "benchmarks.bare_app:app", "/json")
    app_url, app_pid = serve(stack, "app", "reference_app.wsgi:app", "/healthz")
    auth = {"Authorization": f"Bearer {token}"}
    targets = {
        "bare": (bare_url + "/json", bare_pid, {}, 200),
        "202": (f"{app_url}/api/recordings/file/{waiting}", app_pid, auth, 202),
        "200": (f"{app_url}/api/recordings/file/{ready}", app_pid, auth, 200),
    }
    best: dict[str, Load] = {}
    for rep in range(repeat):
        for key, (url, pid, headers, expected) in targets.items():
            progress(f"app: {key} ({rep + 1}/{repeat})")
            svc.coord.worker_beat()  # the liveness key outlives one run (heartbeat timeout)
            poll_targets.refresh(svc, waiting)
            got = _status(url, headers)
            if got != expected:
                raise RuntimeError(f"{url} answered {got}, expected {expected}")
            load = wrk(url, seconds, pid, headers)
            if key not in best or load.rps > best[key].rps:
                best[key] = load
    base = best["bare"]
    common = dict(baseline=base.rps, baseline_name="bare Flask JSON endpoint, same gunicorn", baseline_unit="req/s")
    return [
        Figure("app", "poll 202 (queued, worker alive)", best["202"].rps, "req/s", goal="ratio >= 0.5",
               note=_note(best["202"], base), **common),
        Figure("app", "poll 200 (64 kB audio)", best["200"].rps, "req/s", note=_note(best["200"], base), **common),
    ]
