"""How the reference app is served: the gunicorn command line (`loopfix serve`, the load-test
stack and the app benchmark all run this one), and the worker class it uses by default.

The default is gevent: each connection is a greenlet, so clients that connect and send nothing
or half a request (slow networks, slowloris) hold a few kB each, not one of a few threads; a
request that has not arrived whole within the keep-alive timeout (`--keep-alive`, gunicorn's
2 s) is dropped. `gthread` (2 × 8 threads) remains selectable: there 16 such clients stop the
app. Under gevent, redis-py, requests, RQ and psycopg 3 (≥ 3.1.14 cooperates with gevent by
itself) wait cooperatively once gunicorn has monkey-patched the worker; SQLite's calls do not
yield (its busy wait holds the worker's other greenlets for as long as another process holds
the write lock: milliseconds here; PostgreSQL for a busy deployment).

The gevent class is gevent_worker.GeventWorker (gunicorn's, sending files with os.sendfile);
this module imports neither gevent nor gunicorn, so the CLI can build the command line cheaply.
"""
from __future__ import annotations

import sys

WORKER_CLASSES = ("gevent", "gthread")
GUNICORN_WORKER_CLASS = {"gevent": "loopfix.reference_app.gevent_worker.GeventWorker", "gthread": "gthread"}


def gunicorn_argv(app: str, bind: str, workers: int = 2, threads: int = 8, worker_class: str = "gevent",
                  worker_connections: int = 1000, access_log: bool = False) -> list[str]:
    """`python -m gunicorn ...` serving `app` (a dotted `module:name`) on `bind` (host:port).
    `threads` counts for gthread, `worker_connections` for gevent; no access log unless asked
    (gunicorn formats every line even when it goes to /dev/null)."""
    if worker_class not in WORKER_CLASSES:
        raise ValueError(f"worker class must be one of {', '.join(WORKER_CLASSES)}, not {worker_class!r}")
    argv = [sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", str(workers),
            "--worker-class", GUNICORN_WORKER_CLASS[worker_class], "--graceful-timeout", "5"]
    if worker_class == "gthread":
        argv += ["--threads", str(threads)]
    else:
        argv += ["--worker-connections", str(worker_connections)]
    if access_log:
        argv += ["--access-logfile", "-"]
    return argv + [app]
