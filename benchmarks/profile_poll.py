"""Profile the poll endpoint under load (py-spy on gunicorn's workers while wrk polls), so the
app's hot path is optimised from evidence: `python -m loopfix.benchmarks.profile_poll [--state queued]`.

Prints the functions with the most inclusive and self samples from the collapsed stacks
and keeps the raw profile (flame-graph input) at --out.

`--in-process` measures without a server or load tool (a quieter figure on a shared machine):
Flask's WSGI callable called with a gunicorn-like environ and file wrapper, CPU µs per request
of the bare endpoint and of the poll in the states given (best of 7 × 1,000, interleaved), with
fakeredis; add `--cprofile` for cProfile's cumulative listing of the first state.
"""
from __future__ import annotations

import argparse
import collections
import io
import sys
import time
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from loopfix.benchmarks import app_bench, poll_targets
from loopfix.loadtests.stack import Stack
from loopfix.reference_app.config import Config
from loopfix.reference_app.services import Services


def summarise(collapsed: Path, top: int = 25) -> str:
    """Inclusive and self sample shares per function from py-spy's collapsed (raw) output."""
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 2)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")[1:]]  # drop the process frame
        if not frames:
            continue
        total += int(n)
        for f in set(frames):
            inclusive[f] += int(n)
        own[frames[-1]] += int(n)
    lines = [f"{total} samples", "inclusive:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    lines += ["self:"] + [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


EXPECTED_STATUS = {"bare": 200, "ready": 200, "queued": 202, "running": 202, "none": 202}


def wsgi_get(app, path: str, headers: dict[str, str]) -> str:
    """GET `path` from the WSGI callable `app` as gunicorn would call it (body read and closed);
    returns the status line."""
    from wsgiref.util import FileWrapper

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
               "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
               "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
               "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
               "wsgi.version": (1, 0), "wsgi.file_wrapper": FileWrapper, "HTTP_HOST": "127.0.0.1:8000",
               "REMOTE_ADDR": "127.0.0.1", **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}}
    status = []
    body = app(environ, lambda line, _headers, _exc=None: status.append(line))
    for _ in body:
        pass
    getattr(body, "close", lambda: None)()
    return status[0]


def in_process(states: list[str], requests: int = 1000, repeat: int = 7, cprofile: bool = False) -> dict[str, float]:
    """CPU µs per request (best of `repeat` × `requests`, interleaved) of the bare endpoint and of
    the poll in each of `states`, in this process (module docstring)."""
    from loopfix.benchmarks.bare_app import app as bare
    from loopfix.reference_app import create_app
    from loopfix.reference_app.policy import make_policy

    work = Path(tempfile.mkdtemp(prefix="loopfix-inprocess-"))
    try:
        app = create_app(Config(redis_url="fakeredis://profile-poll", data_dir=work, run_epoch=time.time(),
                                policy=make_policy("fixed", "", 1.0, {})))
        svc = app.extensions["loopfix"]
        business_id, token = poll_targets.add_business(svc)
        auth = {"Authorization": f"Bearer {token}"}
        targets = {"bare": (bare, "/json", {})}
        targets.update({state: (app, f"/api/recordings/file/{poll_targets.add_call(svc, business_id, state)}", auth)
                        for state in states})
        svc.coord.worker_beat()

        def run(key: str, n: int) -> float:
            target, path, headers = targets[key]
            start = time.process_time()
            for _ in range(n):
                wsgi_get(target, path, headers)
            return (time.process_time() - start) / n * 1e6

        for key in targets:  # warm, and check each answers as its state should
            status = wsgi_get(*targets[key])
            if int(status[:3]) != EXPECTED_STATUS[key]:
                raise RuntimeError(f"{key}: answered {status}, expected {EXPECTED_STATUS[key]}")
        if cprofile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(run, states[0], requests * 3)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        best = {key: run(key, requests) for key in targets}
        for _ in range(repeat - 1):
            for key in targets:
                best[key] = min(best[key], run(key, requests))
        return best
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", default="queued", choices=poll_targets.STATES)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("poll-profile.txt"))
    ap.add_argument("--in-process", nargs="*", metavar="STATE", choices=poll_targets.STATES,
                    help="CPU µs per request in-process (module docstring), of the poll in these states")
    ap.add_argument("--cprofile", action="store_true", help="with --in-process: cProfile the first state")
    args = ap.parse_args()
    if args.in_process is not None:
        states = args.in_process or ["ready", "queued"]
        best = in_process(states, cprofile=args.cprofile)
        print("CPU µs per request, best of 7 x 1,000: " + ", ".join(f"{k} {v:.1f}" for k, v in best.items())
              + "; ratio bare/" + ", bare/".join(f"{k} {best['bare'] / best[k]:.2f}" for k in states))
        return
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy not on PATH: pip install py-spy")
    work = Path(tempfile.mkdtemp(prefix="loopfix-profile-"))
    stack = Stack(work, Config(data_dir=work / "data"))
    try:
        stack.start_redis()
        svc = Services(stack.config)
        business_id, token = poll_targets.add_business(svc)
        call = poll_targets.add_call(svc, business_id, args.state)
        svc.coord.worker_beat()
        url, pid = app_bench.serve(stack, "app", "loopfix.reference_app.wsgi:app", "/healthz")
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--subprocesses", "--gil", "--format", "raw",
                                "--rate", "200", "--duration", str(args.seconds), "--output", str(args.out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load = threading.Thread(target=app_bench.wrk, args=(f"{url}/api/recordings/file/{call}", args.seconds, pid,
                                                             {"Authorization": f"Bearer {token}"}))
        load.start()
        load.join()
        spy.wait()
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(summarise(args.out))


if __name__ == "__main__":
    main()
