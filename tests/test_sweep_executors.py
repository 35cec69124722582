"""A sweep on Dask (issue 18): the same seeds give the same rows on the process pool, on a
LocalCluster and on a cluster started as separate processes (`dask scheduler`, `dask worker`);
progress moves as points complete there; a point that fails on the cluster is named with its
error while the others are kept; an unreachable scheduler and a missing Dask are one-line
errors."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from loopfix.cli import cli
from loopfix.sweep_commands import SweepFailed, run_sweep
from loopfix.reports import capacity
from loopfix.sim import sweep

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parent.parent
# 8 cheap points: workers x load x outage on the steady scenario
TINY = ["--base", "steady", "--workers", "1,4", "--calls-per-hour", "120,600", "--outage", "0,300", "--observe", "600"]


def _without_wall_time(rows):
    """A row's wall_s is how long the machine took, not what the model did: the rest must match."""
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def started_cluster():
    """`dask scheduler` on a port of its choosing and two single-threaded `dask worker`
    processes (no nanny: each pid is the worker itself), stopped by pid afterwards. Run as
    `python -m dask ...`: the `dask` command of this interpreter."""
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--no-show"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    address: list[str] = []
    found = threading.Event()

    def read_log() -> None:  # keeps draining the log so the scheduler never blocks on the pipe
        for line in scheduler.stderr:
            if "Scheduler at:" in line and not address:
                address.append(line.split("Scheduler at:")[1].strip())
                found.set()
        found.set()  # the scheduler exited

    threading.Thread(target=read_log, daemon=True).start()
    workers: list[subprocess.Popen] = []
    try:
        assert found.wait(60) and address, "dask scheduler did not say where it listens"
        workers = [subprocess.Popen([sys.executable, "-m", "dask", "worker", address[0], "--nthreads", "1",
                                     "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{i}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
                   for i in (1, 2)]
        with distributed.Client(address[0], timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address[0]
    finally:
        for proc in [*workers, scheduler]:
            _stop(proc)


def test_same_seeds_give_the_same_rows_on_the_pool_a_local_cluster_and_a_started_cluster(tmp_path, started_cluster):
    tables = {}
    for name, args in {"pool": ["--jobs", "2"], "local": ["--executor", "dask", "--jobs", "2"],
                       "started": ["--scheduler", started_cluster]}.items():
        out = tmp_path / f"{name}.jsonl"
        result = CliRunner().invoke(cli, ["sweep", *TINY, *args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        tables[name] = _without_wall_time(capacity.read_rows(out))
    assert len(tables["pool"]) == 8
    assert tables["local"] == tables["pool"]
    assert tables["started"] == tables["pool"]


def test_progress_moves_as_each_point_completes_on_the_cluster(started_cluster):
    points = list(sweep.points(sweep.Grid(base="steady", workers=(1, 4), calls_per_hour=(120.0,), outage_s=(0.0,))))
    done: list[int] = []
    with distributed.Client(started_cluster, timeout=10) as client:
        rows = run_sweep(points, on_done=done.append, executor=client.get_executor(pure=False))
    assert done == [1, 1] and [r["workers"] for r in rows] == [1, 4]


def test_a_point_that_fails_on_the_cluster_is_named_with_its_error_and_the_others_are_kept(started_cluster):
    good = list(sweep.points(sweep.Grid(base="steady", workers=(1, 4), calls_per_hour=(120.0,), outage_s=(0.0,))))
    bad = {**good[0], "base": "no-such-scenario", "workers": 3}
    with distributed.Client(started_cluster, timeout=10) as client:
        with pytest.raises(SweepFailed) as failed:
            run_sweep([good[0], bad, good[1]], executor=client.get_executor(pure=False))
    assert [r["workers"] for r in failed.value.rows] == [1, 4]
    (failure,) = failed.value.failures
    assert failure.describe().startswith("point workers=3, calls_per_hour=120,")
    assert "ValueError: " in failure.describe() and "no-such-scenario" in failure.describe()


def test_an_unreachable_scheduler_is_a_one_line_error_naming_its_address(tmp_path):
    with socket.socket() as s:  # a port nothing listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        result = CliRunner().invoke(cli, ["sweep", *TINY, "--scheduler", address, "--out", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: cannot reach the Dask scheduler at {address} within 5 s (no answer)"


def test_without_dask_the_dask_executor_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    result = CliRunner().invoke(cli, ["sweep", *TINY, "--executor", "dask", "--out", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 2
    assert result.output.strip() == "error: a sweep on Dask needs the distributed extra: pip install 'loopfix[distributed]'"


def test_many_short_points_travel_in_chunks_and_a_failing_one_is_still_named_alone():
    """Points go to an executor in chunks (fewer tasks for a cluster's scheduler): the rows are
    the same as one by one in this process, a point that fails inside a chunk is named with its
    error while its chunk's other points are kept, and progress counts every point."""
    from concurrent.futures import ThreadPoolExecutor

    from loopfix.sweep_commands import _expected_cost, chunked

    good = sweep.mmc_grid((1, 2, 3, 4, 5, 6), (0.3, 0.4, 0.5, 0.6, 0.7), hours=0.2, seeds=(1, 2))
    bad = {**good[0], "mmc": False, "base": "no-such-scenario", "workers": 9}
    points = good[:30] + [bad] + good[30:]
    order = sorted(range(len(points)), key=lambda i: -_expected_cost(points[i]))
    chunks = chunked(order, points)
    assert sorted(i for c in chunks for i in c) == list(range(len(points)))
    assert len(chunks) < len(points) and any(30 in c and len(c) > 1 for c in chunks)
    done: list[int] = []
    with ThreadPoolExecutor(2) as pool, pytest.raises(SweepFailed) as failed:
        run_sweep(points, on_done=done.append, executor=pool)
    (failure,) = failed.value.failures
    assert failure.describe().startswith("point workers=9,") and "no-such-scenario" in failure.describe()
    assert _without_wall_time(failed.value.rows) == _without_wall_time(run_sweep(good, jobs=1))
    assert sum(done) == len(points) and len(done) == len(chunks)
