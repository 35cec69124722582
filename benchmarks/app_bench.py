"""Requests per second of the poll endpoint under gunicorn, on the 202 path (a queued download,
a worker alive) and the 200 path (64 kB of audio from disk), each divided by the req/s of a bare
Flask JSON endpoint (`loopfix.benchmarks.bare_app`) served by the same gunicorn configuration in the
same run. Both run under `loopfix serve`'s gunicorn command line (reference_app.serving; gevent
workers by default).

Then the app under slow and oversized clients (slow_clients): `/healthz` and a 202 poll with
256 half-open connections held, under gevent and under gthread, and the time to a 413 for a
50 MB body.

The load tool is wrk (Debian package `wrk`, one thread, keep-alive connections, one per
gunicorn thread). Its CPU time (from `wait4`) and the servers' (from /proc) are reported beside
each figure, so a reader can see that wrk is not the bottleneck: it uses a small share of one
core while the server side uses the rest of the machine.

On a shared machine req/s moves with the other tenants' load, so each path also gets a figure
that moves much less: requests per CPU second of the server side (gunicorn's processes, plus
redis-server for the app: the poll's Redis work is part of its cost), beside the bare app's.
"""
from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from loopfix.benchmarks import poll_targets, slow_clients
from loopfix.benchmarks.figures import Figure
from loopfix.loadtests.stack import Stack, free_port, http_ok, wait_until
from loopfix.reference_app.config import Config
from loopfix.reference_app.serving import gunicorn_argv
from loopfix.reference_app.services import Services

WORKERS, THREADS = 2, 8  # `loopfix serve`'s defaults (THREADS: gthread's; wrk keeps this many connections)
WORKER_CLASS = "gevent"  # `loopfix serve`'s default
TICKS = os.sysconf("SC_CLK_TCK")


def serve(stack: Stack, name: str, app: str, health_path: str, worker_class: str = WORKER_CLASS) -> tuple[str, int]:
    """Start `app` under gunicorn in `stack` (stopped with it), with `loopfix serve`'s command
    line (serving.gunicorn_argv); returns (base URL, master pid)."""
    port = free_port()
    argv = gunicorn_argv(app, f"127.0.0.1:{port}", WORKERS, THREADS, worker_class)
    proc = stack._spawn(name, argv, stack.env(name))
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(url + health_path), 30, name, proc.popen, proc.log)
    return url, proc.pid


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent not idle (all cores, /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICKS  # minus idle and iowait


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
    """One wrk run: req/s, requests, non-2xx answers, socket errors, and CPU seconds of wrk, the
    server and the whole machine."""

    rps: float
    requests: int
    non_2xx: int
    socket_errors: int
    seconds: float
    wrk_cpu_s: float
    server_cpu_s: float
    machine_cpu_s: float

    @property
    def wrk_cores(self) -> float:
        return self.wrk_cpu_s / self.seconds

    @property
    def server_cores(self) -> float:
        return self.server_cpu_s / self.seconds

    @property
    def other_cores(self) -> float:
        """Busy cores that were neither wrk nor the server: the machine's other tenants."""
        return max(0.0, (self.machine_cpu_s - self.wrk_cpu_s - self.server_cpu_s) / self.seconds)

    @property
    def per_cpu_s(self) -> float:
        """Requests per CPU second of the server side."""
        return self.requests / self.server_cpu_s if self.server_cpu_s else 0.0


def wrk(url: str, seconds: float, server_pid: int, headers: dict[str, str] | None = None,
        connections: int = WORKERS * THREADS, also_pids: tuple[int, ...] = ()) -> Load:
    """One wrk run against `url`; the server's CPU is `server_pid`'s tree plus `also_pids`'."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s"]
    for k, v in (headers or {}).items():
        argv += ["-H", f"{k}: {v}"]

    def server_cpu() -> float:
        return sum(process_tree_cpu_s(pid) for pid in (server_pid, *also_pids))

    server_before, machine_before, start = server_cpu(), machine_busy_s(), time.perf_counter()
    p = subprocess.Popen(argv + [url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)  # wrk's own CPU time
    p.returncode = os.waitstatus_to_exitcode(status)
    wall, server_cpu_s = time.perf_counter() - start, server_cpu() - server_before
    machine_cpu_s = machine_busy_s() - machine_before
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if p.returncode != 0 or rps is None:
        raise RuntimeError(f"wrk failed (exit {p.returncode}): {out.strip()[-300:]}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return Load(float(rps.group(1)), int(re.search(r"(\d+) requests in", out).group(1)),
                int(non_2xx.group(1)) if non_2xx else 0, sum(map(int, errors.groups())) if errors else 0,
                wall, usage.ru_utime + usage.ru_stime, server_cpu_s, machine_cpu_s)


def _status(url: str, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _note(load: Load, base: Load) -> str:
    return (f"wrk -t1 -c{WORKERS * THREADS}: wrk {load.wrk_cores:.0%} of one core, server "
            f"{load.server_cores:.2f} cores, other tenants {load.other_cores:.2f} (bare: wrk {base.wrk_cores:.0%}, "
            f"server {base.server_cores:.2f}, other tenants {base.other_cores:.2f}); "
            f"{load.requests:,} requests, {load.non_2xx} unexpected statuses, {load.socket_errors} socket errors")


MEASURED_CLASSES = (WORKER_CLASS, "gthread")  # serve's default, and the previous default beside it


def figures(stack: Stack, seconds: float = 5.0, repeat: int = 3, progress=lambda label: None) -> list[Figure]:
    """Poll req/s on the 202 and 200 paths ÷ bare Flask req/s, best of `repeat` interleaved runs
    each; and requests per server CPU second ÷ the bare app's, the median of the runs. Under
    `loopfix serve`'s worker class (gevent; the goals) and under gthread (its previous default):
    each pair of apps under one class, the ratio within the pair. Then the slow-client figures."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk not on PATH: apt-get install -y wrk")
    svc = Services(stack.config)
    business_id, token = poll_targets.add_business(svc)
    waiting = poll_targets.add_call(svc, business_id, "queued")
    ready = poll_targets.add_call(svc, business_id, "ready")
    auth = {"Authorization": f"Bearer {token}"}
    targets, app_urls = {}, {}
    for wc in MEASURED_CLASSES:
        bare_url, bare_pid = serve(stack, f"bare-{wc}", "loopfix.benchmarks.bare_app:app", "/json", worker_class=wc)
        app_url, app_pid = serve(stack, f"app-{wc}", "loopfix.reference_app.wsgi:app", "/healthz", worker_class=wc)
        app_urls[wc] = app_url
        targets[(wc, "bare")] = (bare_url + "/json", bare_pid, {}, 200)
        targets[(wc, "202")] = (f"{app_url}/api/recordings/file/{waiting}", app_pid, auth, 202)
        targets[(wc, "200")] = (f"{app_url}/api/recordings/file/{ready}", app_pid, auth, 200)
    redis_pid = (stack.procs["redis"].pid,) if "redis" in stack.procs else ()
    best: dict[tuple[str, str], Load] = {}
    per_cpu: dict[tuple[str, str], list[float]] = {key: [] for key in targets}
    for rep in range(repeat):
        for key, (url, pid, headers, expected) in targets.items():
            progress(f"app: {key[1]} under {key[0]} ({rep + 1}/{repeat})")
            svc.coord.worker_beat()  # the liveness key outlives one run (heartbeat timeout)
            poll_targets.refresh(svc, waiting)
            got = _status(url, headers)
            if got != expected:
                raise RuntimeError(f"{url} answered {got}, expected {expected}")
            load = wrk(url, seconds, pid, headers, also_pids=redis_pid if key[1] != "bare" else ())
            per_cpu[key].append(load.per_cpu_s)
            if key not in best or load.rps > best[key].rps:
                best[key] = load
    svc.coord.worker_beat()
    poll_targets.refresh(svc, waiting)
    slow = slow_clients.figures(app_urls, f"/api/recordings/file/{waiting}", auth, stack.config.max_body_bytes,
                                progress=progress)
    out = []
    for wc in MEASURED_CLASSES:
        base = best[(wc, "bare")]
        tag = "" if wc == WORKER_CLASS else f" [{wc}]"
        name = f"bare Flask JSON endpoint, same gunicorn ({wc})"
        common = dict(baseline=base.rps, baseline_name=name, baseline_unit="req/s")
        cpu = {key: statistics.median(per_cpu[(wc, key)]) for key in ("bare", "202", "200")}
        out += [
            Figure("app", f"poll 202 (queued, worker alive){tag}", best[(wc, "202")].rps, "req/s",
                   goal="ratio >= 0.5" if not tag else "", note=_note(best[(wc, "202")], base), **common),
            Figure("app", f"poll 200 (64 kB audio){tag}", best[(wc, "200")].rps, "req/s",
                   goal="ratio >= 0.6" if not tag else "", note=_note(best[(wc, "200")], base), **common),
            *(Figure("app", f"poll {key}: requests per server CPU second{tag}", cpu[key], "req/CPU-s",
                     baseline=cpu["bare"], baseline_name=name, baseline_unit="req/CPU-s",
                     note=f"median of {repeat} runs ({', '.join(f'{v:,.0f}' for v in per_cpu[(wc, key)])}); "
                          "server: gunicorn's processes + redis-server (bare: gunicorn's)")
              for key in ("202", "200")),
        ]
    return out + slow + [first_click_figure(stack.config.redis_url, Path(stack.config.data_dir))]



# --------------------------------------------------------------------------- the first click's round trips

# The first click's baseline: the gate as one call per primitive (as before the gate script).
FIRST_CLICK_UNFOLDED = "playback_check_then_mark,fail_fast_incr_then_expire"


def first_click_round_trips(redis_url: str, work_dir: Path, faults: str = "", clicks: int = 10) -> list[int]:
    """Redis round trips of each of `clicks` first clicks (a poll that creates the call's run,
    its dedup claim and its RQ job), `fixed` + `faults`, app in-process (Flask test client)
    against the Redis at `redis_url`. Counted by the app's own client: its connections are of a
    class that counts each request it writes to the socket (a command, a script call, or a
    whole pipeline: one round trip each), so the count is exact whatever is pipelined."""
    import redis

    from loopfix.reference_app import create_app
    from loopfix.reference_app.policy import make_policy

    class Counting(redis.Connection):
        sent = 0

        def send_packed_command(self, command, check_health=True):
            Counting.sent += 1
            return super().send_packed_command(command, check_health)

    cfg = Config(redis_url=redis_url, data_dir=work_dir / f"first-click-{len(faults)}", run_epoch=time.time(),
                 policy=make_policy("fixed", faults, 1.0, {}))
    app = create_app(cfg)
    svc = app.extensions["loopfix"]
    pool = svc.redis.connection_pool
    pool.disconnect()
    pool.connection_class = Counting
    business_id, token = poll_targets.add_business(svc)
    headers = {"Authorization": f"Bearer {token}"}
    client = app.test_client()
    svc.coord.worker_beat()
    client.get(f"/api/recordings/file/{poll_targets.add_call(svc, business_id, 'none')}", headers=headers)  # warm
    counts = []
    for _ in range(clicks):
        call_sid = poll_targets.add_call(svc, business_id, "none")
        before = Counting.sent
        status = client.get(f"/api/recordings/file/{call_sid}", headers=headers).status_code
        if status != 202:
            raise RuntimeError(f"a first click answered {status}, expected 202")
        counts.append(Counting.sent - before)
    return counts


def first_click_figure(redis_url: str, work_dir: Path, clicks: int = 10) -> Figure:
    """Round trips of the first click (max over `clicks`), beside the same click with the gate
    as one call per primitive."""
    fixed = first_click_round_trips(redis_url, work_dir, clicks=clicks)
    unfolded = first_click_round_trips(redis_url, work_dir, FIRST_CLICK_UNFOLDED, clicks=clicks)
    return Figure("app", "first click (creates the job): Redis round trips", max(fixed), "round trips",
                  baseline=max(unfolded), baseline_name=f"gate as one call per primitive (faults {FIRST_CLICK_UNFOLDED})",
                  goal="value <= 3",
                  note=f"max of {clicks} clicks, counted by the app's Redis connections (a pipeline or script "
                       f"call is one); per click {fixed} (baseline {unfolded})")
