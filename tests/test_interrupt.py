"""Ctrl-C on a long command: exit code 130 (never 1, the code of a broken invariant), one
line "interrupted" naming the partial results kept, and soon — within 2 s more than the
command took to start up and print its first progress line — before its natural end.

Each test starts `loopfix` in a session of its own and sends SIGINT to the whole process
group, as a terminal does on Ctrl-C (the sweep's worker processes get it too)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loopfix.harness.history import read_run_info
from loopfix.loadtests.stack import marked_pids
from loopfix.reports import capacity

GRACE_S = 2.0  # the bound, on top of the command's own start-up


def _default_sigint() -> None:  # a shell's background job inherits SIGINT ignored: undo that
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(args: list[str], when: str, cwd: Path) -> tuple[int, str, float, float]:
    """Run `loopfix ARGS`, wait for a stderr line starting with `when`, Ctrl-C it; return (exit
    code, the rest of stderr, start-up seconds until its first progress line, seconds to exit).
    The bound on the exit is the start-up + GRACE_S: on a busy machine both are slower."""
    started = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "loopfix.cli", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_default_sigint)
    try:
        line = p.stderr.readline()
        startup_s = time.monotonic() - started
        while line and not line.startswith(when):
            line = p.stderr.readline()
        assert line, f"no {when!r} line before the command ended"
        os.killpg(p.pid, signal.SIGINT)
        interrupted = time.monotonic()
        try:
            p.wait(timeout=startup_s + GRACE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {startup_s + GRACE_S:.1f} s after Ctrl-C (start-up took {startup_s:.1f} s)")
        return p.returncode, p.stderr.read(), startup_s, time.monotonic() - interrupted
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def after_progress(err: str, progress: str) -> list[str]:
    """stderr's lines after the Ctrl-C, less the progress lines (starting with `progress`) that a
    point finishing while the signal travels still prints."""
    return [line for line in err.strip().splitlines() if not line.startswith(progress)]


def test_ctrl_c_stops_a_sweep_at_once_and_keeps_the_rows_finished(tmp_path):
    seeds = ",".join(str(s) for s in range(1, 21))  # 80 points of about a second each on 2 processes
    code, err, _, _ = interrupt(["sweep", "--mmc", "--workers", "1,2", "--utilisation", "0.5,0.7", "--hours", "20",
                                 "--seeds", seeds, "--jobs", "2", "--out", "sweep.jsonl"], "sweep: 2 of 80", tmp_path)
    assert code == 130
    (line,) = after_progress(err, "sweep: ")  # one line, no traceback
    kept = capacity.read_rows(tmp_path / "sweep.partial.jsonl")
    assert 2 <= len(kept) < 80  # stopped before its natural end
    assert line.startswith(f"interrupted: {len(kept)} of 80 points finished, their rows written to sweep.partial.jsonl")
    assert not (tmp_path / "sweep.jsonl").exists()


def test_ctrl_c_stops_the_reports_sweeps_and_names_the_runs_kept(tmp_path):
    code, err, _, _ = interrupt(["report", "--quick", "--jobs", "2", "--out", "out", "--runs", "sim"],
                                "report sweeps: 1 of", tmp_path)
    (line,) = after_progress(err, "report sweeps: ")
    assert code == 130 and line.startswith("interrupted: ")
    assert "written to sim/sweep.partial.jsonl; the model runs stay in sim; no page written" in line
    assert (tmp_path / "sim" / "steady-fixed" / "history.jsonl").is_file()
    assert not (tmp_path / "out" / "index.html").exists()


@pytest.mark.parametrize("args, first_line", [
    (["sim", "steady", "--set", "duration_s=3600000"], "sim: steady"),
    (["demo"], "demo: steady [seed]"),
])
def test_ctrl_c_on_a_model_run_exits_130_with_one_line(args, first_line, tmp_path):
    code, err, _, _ = interrupt(args, first_line, tmp_path)
    assert code == 130
    assert err.strip() == "interrupted"


@pytest.mark.stack
@pytest.mark.live
def test_ctrl_c_stops_a_load_test_and_every_process_it_started_and_names_the_run(tmp_path):
    code, err, _, _ = interrupt(["loadtest", "steady", "--duration", "120", "--runs-dir", "runs"],
                                "loadtest: steady [fixed] load", tmp_path)
    assert code == 130
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert err.strip() == f"interrupted: the partial run stays in {Path('runs') / run_dir.name}"
    assert any(run_dir.glob("*.jsonl"))  # what the processes wrote stays
    assert marked_pids(read_run_info(run_dir)["stack_marker"]) == []  # redis, app, workers, locust: all gone


def test_ctrl_c_while_generated_code_is_defined_still_exits_130(tmp_path):
    """A run defines its recorders and dispatchers from generated source as it starts, where a
    Ctrl-C often lands; CPython marks a KeyboardInterrupt raised inside exec() of a string as
    unhandled, and a `python -m` program (as `loopfix` runs) then dies by SIGINT at exit,
    whatever the code caught (-2, not 130). `define` must not: here the generated source itself
    raises the interrupt, the program catches it and exits 130."""
    def exit_code(definition: str) -> int:
        (tmp_path / "ctrl_c.py").write_text(
            "import sys\nfrom loopfix.reference_app.policy.events import define\n"
            f"try:\n    {definition}\nexcept KeyboardInterrupt:\n    sys.exit(130)\n")
        return subprocess.run([sys.executable, "-m", "ctrl_c"], cwd=tmp_path).returncode

    assert exit_code("define('raise KeyboardInterrupt', {}, 'test')") == 130
    assert exit_code("exec('raise KeyboardInterrupt', {})") == -signal.SIGINT  # what `define` avoids
