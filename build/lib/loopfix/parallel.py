"""Work spread over processes that stops at once on Ctrl-C, keeping what was finished.

`concurrent.futures`' own `with ProcessPoolExecutor()` waits on exit for every submitted
item, so Ctrl-C during a sweep used to stop it only after the whole grid had run (10 s and
more for `loopfix sweep`, 28 s for `loopfix report`). Here the workers ignore SIGINT (a
terminal sends it to the whole process group: the parent alone decides), and on an interrupt
the parent cancels what has not started, terminates the workers and raises `Interrupted`
carrying the results finished so far, for the command to keep and name.
"""
from __future__ import annotations

import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Sequence

JOIN_S = 1.0  # how long a terminated worker gets to go before it is killed


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during `run_all`: `done` maps each finished item's index to its result."""

    def __init__(self, done: dict[int, Any]) -> None:
        super().__init__(f"{len(done)} finished")
        self.done = done


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_all(fn: Callable[[Any], Any], items: Sequence[Any], jobs: int, order: Sequence[int] | None = None,
            on_done: Callable[[int], None] | None = None) -> list[Any]:
    """[fn(item) for item in items], `jobs` processes at a time (in this process when 1), started
    in `order` (indices; default as given); results in the items' order. Ctrl-C raises
    `Interrupted` with the finished results, the workers stopped."""
    order = list(range(len(items))) if order is None else list(order)
    done: dict[int, Any] = {}
    if jobs <= 1 or len(items) <= 1:
        try:
            for i in order:
                done[i] = fn(items[i])
                if on_done:
                    on_done(1)
        except KeyboardInterrupt:
            raise Interrupted(done) from None
        return [done[i] for i in range(len(items))]
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_ignore_sigint)
    try:
        futures = {pool.submit(fn, items[i]): i for i in order}
        for f in as_completed(futures):
            done[futures[f]] = f.result()
            if on_done:
                on_done(1)
    except KeyboardInterrupt:
        _stop(pool)
        raise Interrupted(done) from None
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown()
    return [done[i] for i in range(len(items))]


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started, terminate the workers, wait for them briefly, and then for
    the pool's manager thread: left running, it closes its wake-up pipe while the interpreter's
    exit hook writes to it (a traceback, "Bad file descriptor", after the last line)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public handle on the workers
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(JOIN_S)
        if p.is_alive():
            p.kill()
    if manager is not None:
        manager.join(JOIN_S)
