"""Output fit for logs: piped into a file, `loopfix demo`, `sim` and `verify` print whole tables
and unwrapped lines (no "be…" at 80 columns); `--format plain` is aligned words with the
invariants' full names; `--format json` is the same as `--json`."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from loopfix.harness import invariants as inv
from loopfix.output import plain_table


def loopfix(*args: str) -> subprocess.CompletedProcess:
    """`loopfix ARGS` with stdout a pipe, as in a CI log (COLUMNS unset: rich would assume 80)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TERM")}
    return subprocess.run([sys.executable, "-m", "loopfix.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_demo_piped_into_a_log_prints_the_whole_table_and_every_invariant_name():
    result = loopfix("demo", "--scenario", "steady")
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    for variant in ("before", "seed", "fixed"):
        assert f" {variant} " in result.stdout
    legend = next(line for line in result.stdout.splitlines() if "loops = loops-terminate" in line)
    assert all(f"= {name}" in legend for name in inv.INVARIANTS)


def test_demo_plain_format_is_one_line_per_cell_with_full_invariant_names():
    result = loopfix("demo", "--scenario", "steady", "--format", "plain")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("scenario"))
    assert lines[header].split() == ["scenario", "variant", *inv.INVARIANTS]
    assert lines[header + 1].split()[:3] == ["steady", "before", "BROKEN"]
    assert not any(ch in result.stdout for ch in "…┃│✓✗\x1b")


def test_sim_and_verify_plain_print_one_verdict_per_line_without_marks(tmp_path):
    out = tmp_path / "run"
    sim = loopfix("sim", "steady", "--set", "duration_s=600", "--out", str(out), "--format", "plain")
    assert sim.returncode == 0, sim.stderr
    verify = loopfix("verify", str(out), "--format", "plain")
    assert sim.stdout.startswith("steady variant=fixed seed=") and verify.stdout.startswith(f"{out}: ")
    for result in (sim, verify):
        assert [f"{name}: holds" for name in inv.INVARIANTS] == [
            line for line in result.stdout.splitlines() if line.split(":")[0] in inv.INVARIANTS]
        assert "✓" not in result.stdout


def test_format_json_is_the_same_as_the_json_flag(tmp_path):
    out = tmp_path / "run"
    assert loopfix("sim", "steady", "--set", "duration_s=600", "--out", str(out)).returncode == 0
    a, b = loopfix("verify", str(out), "--format", "json"), loopfix("verify", str(out), "--json")
    assert json.loads(a.stdout) == json.loads(b.stdout) and json.loads(a.stdout)["valid"] is True


def test_plain_table_aligns_columns_and_trims_line_ends():
    assert plain_table(("a", "bb"), [("ccc", "d"), ("e", "")]) == "a    bb\nccc  d\ne"
