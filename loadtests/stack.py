"""Start and stop the whole stack for one run: Redis (given, or a private redis-server, or with
none on PATH fakeredis's TCP server as the embedded fallback: loadtests/fake_redis.py), the app
under gunicorn, N RQ workers with loopfix's ticker, and the Twilio stand-in, each a real
process with its log in the run directory. Every process is started in its own session and
stopped by pid (its process group), also when a start fails half-way.

RQ's work horse calls `os.setpgrp()`, so a signal to a worker's process group misses the
horse. `Proc.kill()` therefore kills the process's descendants (read from /proc) as well, and
every process the stack starts carries a marker in its environment (`LOOPFIX_STACK`) that its
children inherit: `Stack.stop()` ends by killing whatever still carries it, so no horse
outlives its stack, even one orphaned by a worker that died on its own.

Fault injection (the scenario's outage windows): `kill_worker` (SIGKILL, horse included),
`stop_worker` (SIGTERM: RQ's warm shutdown), `restart_worker`, `pause_redis` /
`resume_redis` (SIGSTOP / SIGCONT) and `restart_redis` (same port, empty: nothing on disk).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import loopfix
from loopfix.reference_app.config import Config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready\n{tail}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:
        return resp.status == 200


STACK_MARKER = "LOOPFIX_STACK"


def children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc; empty when it is gone)."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, children first."""
    out, todo = [], children(pid)
    while todo:
        child = todo.pop(0)
        out.append(child)
        todo += children(child)
    return out


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries STACK_MARKER=marker (inherited by every child)."""
    needle = f"{STACK_MARKER}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    for send in (os.killpg, os.kill):  # its own group (a horse leads one), then the process
        try:
            send(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    rq_name: str = ""  # a worker's name in RQ's registry

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Signal the process group (the process and the children that stayed in its group)."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self, timeout: float = 5.0) -> list[int]:
        """SIGKILL the process, its group and every descendant (RQ's work horse leads a group
        of its own); reap it. Returns the descendants' pids that were killed."""
        below = descendants(self.pid) if self.alive else []
        for pid in below:
            _kill(pid)
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout)
        return below

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (RQ: warm shutdown, gunicorn: graceful), then kill after `timeout`."""
        if self.alive:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill(timeout)


@dataclass
class Stack:
    """One run's processes. `config` is the app/worker configuration (its redis_url is filled
    in by `start_redis` when none is given); `run_dir` holds logs, data and history."""

    run_dir: Path
    config: Config
    procs: dict[str, Proc] = field(default_factory=dict)
    app_url: str = ""
    stub_url: str = ""
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    redis_port: int = 0
    redis_kind: str = ""  # "redis-server" | "fakeredis" once start_redis ran

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        log = self.run_dir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**env, STACK_MARKER: self.marker}
        fh = open(log, "ab")
        popen = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                 cwd=str(self.run_dir))
        fh.close()
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    def env(self, proc_name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPFIX_")}
        env.update(self.config.to_env())
        env["LOOPFIX_PROC"] = proc_name
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start_redis(self, kind: str | None = None) -> str:
        """A private Redis on a free port (the same port on a restart), nothing on disk; returns
        its URL. `kind`: "redis-server", or "fakeredis" (fakeredis's TCP server in a process of
        its own); by default redis-server when it is on PATH, else fakeredis."""
        binary = shutil.which("redis-server")
        kind = kind or self.redis_kind or ("redis-server" if binary else "fakeredis")
        self.redis_port = self.redis_port or free_port()
        port = self.redis_port
        if kind == "redis-server":
            if binary is None:
                raise RuntimeError("redis-server not on PATH; set REDIS_URL to a running Redis")
            args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        elif kind == "fakeredis":
            args = [sys.executable, "-m", "loopfix.loadtests.fake_redis", "--port", str(port)]
        else:
            raise ValueError(f"Redis kind must be redis-server or fakeredis, got {kind!r}")
        self.redis_kind = kind
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(loopfix.__file__).resolve().parents[1]),
                                                                          os.environ.get("PYTHONPATH")]))}
        proc = self._spawn("redis", args, env)
        url = f"redis://127.0.0.1:{port}/0"

        def ping() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")  # RESP, not inline: fakeredis reads only RESP
                return s.recv(16).startswith(b"+PONG")

        wait_until(ping, 10, kind, proc.popen, proc.log)
        self.config = replace(self.config, redis_url=url)
        return url

    # ----------------------------------------------------------------- fault injection

    def workers(self) -> list[str]:
        return [name for name in self.procs if name.startswith("worker")]

    def kill_worker(self, name: str) -> list[int]:
        """SIGKILL a worker and its work horse, as a dying machine would; returns the horse pids."""
        return self.procs[name].kill()

    def stop_worker(self, name: str, timeout: float = 10.0) -> None:
        """SIGTERM: RQ's warm shutdown lets the running job finish, then the worker exits."""
        self.procs[name].stop(timeout)

    def restart_worker(self, name: str, wait: bool = True) -> Proc:
        """Start `name` again after a kill or stop (a new RQ worker name, the same history name)."""
        if self.procs[name].alive:
            self.procs[name].stop()
        del self.procs[name]
        return self.start_worker(name, wait=wait)

    def pause_redis(self) -> None:
        self.procs["redis"].signal(signal.SIGSTOP)

    def resume_redis(self) -> None:
        self.procs["redis"].signal(signal.SIGCONT)

    def kill_redis(self) -> None:
        """SIGKILL the private Redis: every key and queued job is gone (nothing on disk)."""
        if "redis" not in self.procs:
            raise RuntimeError("no private Redis to kill (the stack was given REDIS_URL)")
        self.procs.pop("redis").kill()

    def restart_redis(self) -> str:
        """Kill the private Redis and start an empty one on the same port."""
        self.kill_redis()
        return self.start_redis()

    def start_stub(self, host: str = "127.0.0.1", port: int | None = None, **settings) -> str:
        """The Twilio stand-in on `host:port` (default a free port); `settings` are its flags
        (history_dir=... makes it record every fetch, as target mode does)."""
        port = port or free_port()
        args = [sys.executable, "-m", "loopfix.cli", "twilio-stub", "--host", host, "--port", str(port),
                "--time-scale", repr(self.config.policy.time_scale)]
        for key, value in settings.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        proc = self._spawn("twilio", args, self.env("twilio"))
        self.stub_url = f"http://{host}:{port}"
        wait_until(lambda: http_ok(self.stub_url + "/_config"), 20, "twilio stand-in", proc.popen, proc.log)
        hosts = tuple(h for h in self.config.media_hosts if h) + (f"127.0.0.1:{port}",)
        self.config = replace(self.config, media_hosts=hosts)
        return self.stub_url

    def start_app(self, workers: int = 2, threads: int = 8, worker_class: str = "gevent") -> str:
        """`loopfix serve` on a free port (`worker_class` gevent or gthread, `threads` for gthread)."""
        port = free_port()
        proc = self._spawn("app", [sys.executable, "-m", "loopfix.cli", "serve", "--port", str(port),
                                   "--workers", str(workers), "--threads", str(threads),
                                   "--worker-class", worker_class], self.env("app"))
        self.app_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(self.app_url + "/healthz"), 30, "app", proc.popen, proc.log)
        return self.app_url

    def start_worker(self, name: str | None = None, simple: bool = False, wait: bool = True,
                     extra_env: dict[str, str] | None = None) -> Proc:
        """Start an RQ worker; `wait=False` returns at once (then `wait_workers`); `extra_env`
        on top of the config's (e.g. LOOPFIX_CRASH_POINTS for one worker)."""
        name = name or f"worker{sum(1 for n in self.procs if n.startswith('worker')) + 1}"
        rq_name = f"{name}-{time.time_ns()}"
        args = [sys.executable, "-m", "loopfix.cli", "worker", "--name", rq_name]
        if simple:
            args.append("--simple")
        proc = self._spawn(name, args, {**self.env(name), **(extra_env or {})})
        proc.rq_name = rq_name
        if wait:
            self.wait_workers([name])
        return proc

    def wait_workers(self, names: list[str], timeout: float = 30.0) -> None:
        """Wait until every named worker is registered with RQ (started up and listening)."""
        for name in names:
            proc = self.procs[name]
            wait_until(lambda: _worker_registered(self.config.redis_url, proc.rq_name), timeout, name, proc.popen,
                       proc.log)

    def stub_config(self, **changes) -> dict:
        req = urllib.request.Request(self.stub_url + "/_config", data=json.dumps(changes).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.load(resp)

    def ledger(self) -> dict[str, dict[str, int]]:
        with urllib.request.urlopen(self.stub_url + "/_ledger", timeout=5) as resp:
            return json.load(resp)["recordings"]

    def stop(self) -> None:
        """Stop every process, newest first (workers before the app before Redis), then kill
        anything still carrying this stack's marker (an orphaned work horse)."""
        if "redis" in self.procs:
            self.resume_redis()  # a paused Redis would stall every warm shutdown
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        self.procs.clear()
        for _ in range(50):
            left = marked_pids(self.marker)
            if not left:
                return
            for pid in left:
                _kill(pid)
            time.sleep(0.02)

    def stop_now(self, grace_s: float = 0.5) -> None:
        """Ctrl-C: SIGTERM to every process at once, SIGKILL to whatever is left after
        `grace_s` (no warm shutdown: the user asked to stop; what they wrote stays), then
        `stop`'s sweep of the marked stragglers."""
        if "redis" in self.procs:
            self.resume_redis()
        procs = [proc for proc in self.procs.values() if proc.alive]
        for proc in procs:
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(proc.alive for proc in procs) and time.monotonic() < deadline:
            time.sleep(0.02)
        for proc in reversed(procs):
            proc.kill(1.0)
        self.stop()

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _worker_registered(redis_url: str, name: str) -> bool:
    import redis
    from rq import Worker

    return any(w.name == name for w in Worker.all(connection=redis.Redis.from_url(redis_url)))


if __name__ == "__main__":  # pragma: no cover - manual use: python -m loopfix.loadtests.stack
    cfg = Config.from_env()
    with Stack(Path("runs") / time.strftime("%Y%m%d-%H%M%S"), cfg) as stack:
        stack.start_stub()
        print("app", stack.start_app(), "stub", stack.stub_url)
        stack.start_worker()
        signal.pause()
