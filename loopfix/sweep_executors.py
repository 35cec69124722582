"""Where a sweep's points run: this machine's process pool, a Dask LocalCluster, or a running
Dask cluster (issue 18).

`run_sweep` (loopfix/sweep_commands.py) takes any `concurrent.futures.Executor`; this module
only opens and closes the one `loopfix sweep --executor/--scheduler` asks for. Dask is an
optional extra (`pip install 'loopfix[distributed]'`): it is imported only here and only when
asked for, and its absence is a one-line error, not an ImportError.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

CONNECT_TIMEOUT_S = 5.0  # an unreachable scheduler is named within this long
INSTALL_HINT = "pip install 'loopfix[distributed]'"
# A LocalCluster for a sweep: the workers' statistical profiler samples every thread's stack 100
# times a second (CPU the CPU-bound points do not get), and the event-loop watchdog (20 ms) and
# the system monitor (500 ms) tick in the scheduler, which shares the machine's cores with the
# workers: measured, the scheduler's process used a third of the CPU it uses with the defaults.
#
# On Linux its workers are forked from this process rather than spawned (Dask's default): a
# spawned worker starts a fresh interpreter and imports Dask and loopfix again, and its shutdown
# waits on it. Measured on this 2-core machine (load 8-10, a LocalCluster of 2 workers, start /
# close): spawn 3.7-7.0 s / 1.5-2.1 s, forkserver 3.2-4.0 s / 0.1 s, fork 0.7-1.1 s / 0.1-0.2 s.
# Forking is Linux's own default for multiprocessing; elsewhere (macOS: fork is unsafe with its
# system libraries) Dask's default stays.
LOCAL_CLUSTER_CONFIG = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s",
                        "distributed.admin.system-monitor.interval": "2s",
                        **({"distributed.worker.multiprocessing-method": "fork"} if sys.platform == "linux" else {})}


@dataclass(frozen=True)
class Placement:
    """The executor to hand to run_sweep (None: run_sweep's own process pool) and what to call
    it in the summary line."""

    executor: Executor | None
    where: str


def _distributed():  # type: ignore[no-untyped-def]
    try:
        import distributed
    except ImportError:
        raise ValueError(f"a sweep on Dask needs the distributed extra: {INSTALL_HINT}") from None
    return distributed


@contextmanager
def placement(executor: str | None, scheduler: str | None, jobs: int | None) -> Iterator[Placement]:
    """Open where the points run, close it afterwards (the cluster's processes too when it
    started them). `executor`: "process" (default) or "dask" (a LocalCluster of `jobs`
    single-threaded worker processes, default one per core); `scheduler`: the address of a
    running Dask scheduler (tcp://HOST:PORT). ValueError for a bad combination, a missing
    Dask, an unreachable scheduler."""
    if scheduler and executor == "process":
        raise ValueError("--scheduler runs the points on a Dask cluster: leave out --executor process")
    if not scheduler and executor in (None, "process"):
        yield Placement(None, f"{max(1, jobs or os.cpu_count() or 1)} processes")
        return
    distributed = _distributed()
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:  # refused, timed out, or not an address
            reason = "no answer" if isinstance(exc, (OSError, TimeoutError)) else str(exc)
            raise ValueError(f"cannot reach the Dask scheduler at {scheduler} within {CONNECT_TIMEOUT_S:g} s "
                             f"({reason})") from None
        try:
            workers = len(client.scheduler_info().get("workers", {}))
            yield Placement(client.get_executor(pure=False), f"the Dask cluster at {scheduler} ({workers} workers)")
        finally:
            client.close()
        return
    import dask

    n = max(1, jobs or os.cpu_count() or 1)
    with dask.config.set(LOCAL_CLUSTER_CONFIG), warnings.catch_warnings():  # read as they start
        # its HTTP server moves off a busy port 8787 by itself: no need to tell the user
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
    try:
        client = distributed.Client(cluster, set_as_default=False)
        try:
            # pure=False: two equal points are two runs, never one cached result
            yield Placement(client.get_executor(pure=False), f"a Dask LocalCluster ({n} workers)")
        finally:
            client.close()
    finally:
        cluster.close()
