"""Target mode end to end: `loopfix loadtest conformance --target t.toml` against services
served by hand, judged only from outside.

reference_app served as a user serves it (a private Redis, `loopfix seed --json`, `loopfix
serve`, two `loopfix worker`s, hooks that SIGSTOP/SIGCONT the workers): on `fixed` every
observable invariant holds and exit 0, lock-exclusive and worker-never-blocks "not observable";
`loopfix verify` on the run directory gives the same verdicts; `seed` and `before` break what
the model says they break. Then tests/target_service.py — a separately written service — with
one planted bug at a time: each outside check fails on the bug it exists for.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from loadtests.stack import Stack, free_port
from reference_app.config import Config
from reference_app.policy import make_policy

LEADS = 300
RUN_TIMEOUT_S = 240  # wall seconds; a conformance run takes about 45


def hook(code: str) -> str:
    return json.dumps(f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}")


def write_target(run: Path, url: str, media_port: int, stop: str, start: str) -> Path:
    path = run / "t.toml"
    path.write_text(f'url = "{url}"\ntime_scale = 0.01\nfixtures = "fixtures.json"\n'
                    f'[media]\nhost = "127.0.0.1"\nport = {media_port}\n'
                    f'[hooks]\nworkers_stop = {stop}\nworkers_start = {start}\n')
    return path


def serve_reference(run: Path, variant: str) -> tuple[Stack, Path]:
    """reference_app of `variant` served by hand; returns its stack and target file."""
    data = (run / "data").resolve()
    data.mkdir(parents=True)
    database = f"sqlite:///{data / 'loopfix.db'}"
    media_port = free_port()
    stack = Stack(run, Config(data_dir=data, database_url=database, media_hosts=(f"127.0.0.1:{media_port}",),
                              policy=make_policy(variant, [], 0.01)))
    try:
        stack.start_redis()
        seeded = subprocess.run([sys.executable, "-m", "loopfix.cli", "seed", "--businesses", "2", "--calls", "0",
                                 "--leads", str(LEADS), "--json", "--database-url", database, "--data-dir", str(data)],
                                env=stack.env("seed"), capture_output=True, text=True, timeout=60, check=True)
        (run / "fixtures.json").write_text(seeded.stdout)
        stack.start_app(workers=2, threads=8)
        pids = [stack.start_worker(f"worker{i}").pid for i in (1, 2)]
        signal_all = "import os, signal; [os.kill(p, signal.{}) for p in %r]" % pids
        return stack, write_target(run, stack.app_url, media_port, hook(signal_all.format("SIGSTOP")),
                                   hook(signal_all.format("SIGCONT")))
    except BaseException:
        stack.stop()
        raise


def conformance(target_file: Path, runs: Path) -> SimpleNamespace:
    done = subprocess.run([sys.executable, "-m", "loopfix.cli", "loadtest", "conformance", "--target",
                           str(target_file), "--runs-dir", str(runs), "--json"],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    out = json.loads(done.stdout)
    return SimpleNamespace(code=done.returncode, out=out, verdicts={v["name"]: v for v in out["verdicts"]},
                           run_dir=Path(out["run"]["run_dir"]))


def broken(result: SimpleNamespace) -> set[str]:
    return {name for name, v in result.verdicts.items() if v["valid"] is False}


def witnesses(result: SimpleNamespace, name: str) -> list[dict]:
    return [w for group in result.verdicts[name]["anomalies"].values() for a in group for w in a["witnesses"]]


@pytest.mark.stack
def test_reference_app_fixed_holds_every_observable_invariant_and_verify_agrees(tmp_path):
    stack, target_file = serve_reference(tmp_path / "served", "fixed")
    try:
        result = conformance(target_file, tmp_path / "runs")
    finally:
        stack.stop()
    assert result.code == 0, {n: v["figure"].get("anomaly_counts") for n, v in result.verdicts.items()}
    for name in ("lock-exclusive", "worker-never-blocks"):
        assert result.verdicts[name]["valid"] == "not observable"
    held = {n for n, v in result.verdicts.items() if v["valid"] is True}
    assert held == set(result.verdicts) - {"lock-exclusive", "worker-never-blocks"}
    figure = {n: v["figure"] for n, v in result.verdicts.items()}
    assert figure["fail-fast"]["trips_seen"] + figure["fail-fast"]["calls_decided"] >= 1  # decided, not vacuous
    assert figure["idempotent-delete"]["jobs"] == 1 and figure["idempotent-delete"]["leads_gone"] == LEADS
    assert figure["backoff-schedule"]["recordings_with_full_schedule"] == 1
    assert result.out["run"]["load_wall_s"] + result.out["run"]["drain_wall_s"] < 120
    verified = subprocess.run([sys.executable, "-m", "loopfix.cli", "verify", str(result.run_dir), "--json"],
                              capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0
    assert json.loads(verified.stdout)["verdicts"] == result.out["verdicts"]


@pytest.mark.slow
@pytest.mark.stack
@pytest.mark.parametrize("variant, must_break", [
    # what `loopfix demo` says the model's seed and before break, seen from outside
    ("seed", {"no-duplicate-download", "one-job-per-storm"}),
    ("before", {"loops-terminate", "one-job-per-storm", "backoff-schedule"}),
])
def test_reference_app_seed_and_before_break_what_the_model_says(tmp_path, variant, must_break):
    stack, target_file = serve_reference(tmp_path / "served", variant)
    try:
        result = conformance(target_file, tmp_path / "runs")
    finally:
        stack.stop()
    assert result.code == 1
    assert must_break <= broken(result), {n: v["figure"].get("anomaly_counts") for n, v in result.verdicts.items()}
    for name in must_break:
        assert witnesses(result, name)
