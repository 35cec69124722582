"""The capacity sweep: its M/M/c special case agrees with Erlang C, its answers come from the
grid it ran, and its recovery figure separates a system that recovers from one that does not."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from loopfix.cli import cli
from loopfix.report_commands import REPORT_SWEEPS
from loopfix.sweep_commands import run_sweep
from reports import capacity
from sim import sweep


def test_mmc_special_case_mean_wait_within_ten_percent_of_erlang_c():
    rows = run_sweep(sweep.mmc_grid([4], [0.7], hours=24, seeds=(1, 2, 3, 4)), jobs=2)
    (agreement,) = capacity.mmc_agreement(rows)
    assert agreement["jobs"] > 50_000
    assert abs(agreement["relative_error"]) <= 0.10, agreement


@pytest.mark.slow
def test_every_mmc_point_of_the_report_grid_within_ten_percent_of_erlang_c():
    rows = run_sweep(sweep.mmc_grid(**REPORT_SWEEPS["full"][1]))
    worst = max(capacity.mmc_agreement(rows), key=lambda a: abs(a["relative_error"]))
    assert abs(worst["relative_error"]) <= 0.10, worst


def test_sweep_command_answers_from_the_grid_it_wrote(tmp_path):
    out = tmp_path / "sweep.csv"
    result = CliRunner().invoke(cli, [
        "sweep", "--base", "steady", "--workers", "1,4", "--calls-per-hour", "600", "--outage", "0", "--out", str(out),
        "--p95-target", "60", "--at-load", "600"])
    assert result.exit_code == 0, result.output
    rows = capacity.read_rows(out)
    assert [r["workers"] for r in rows] == [1, 4]
    p95 = {r["workers"]: r["ttp_p95_s"] for r in rows}
    assert p95[1] > 60 >= p95[4]  # one worker cannot keep up with 600 calls/h; four can
    assert "600 calls/h (latency 4 s, outage 0 s): 4 workers" in result.output
    again = CliRunner().invoke(cli, ["sweep", "--from", str(out), "--p95-target", "1", "--at-load", "600"])
    assert again.exit_code == 1 and "no swept worker count (1, 4) is enough" in again.output


def test_seed_variant_does_not_recover_where_fixed_does(tmp_path):
    """The metastability figure: same outage and load, fixed drains its backlog, seed (its
    jobs re-run at once and give up) never gets back to normal while the load goes on; with
    --check every row also says which invariants its history breaks."""
    out = tmp_path / "sweep.jsonl"
    result = CliRunner().invoke(cli, [
        "sweep", "--workers", "4", "--calls-per-hour", "480", "--outage", "900", "--variants", "seed,fixed",
        "--out", str(out), "--recover-within", "1800", "--check"])
    rows = {r["variant"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["seed"]["invariants_hold"] is False and rows["seed"]["broken"]
    assert rows["fixed"]["recovery_s"] is not None and rows["fixed"]["recovery_s"] <= 1800
    assert rows["seed"]["recovery_s"] is None
    assert "[seed, 4 workers, 480 calls/h]: longest outage none of the swept outages" in result.output
    assert result.exit_code == 1


@pytest.mark.parametrize("args, message", [
    (["--variants", "nope"], "unknown variant 'nope'"),
    (["--base", "no-such-scenario"], "no scenario 'no-such-scenario'"),
    (["--p95-target", "5"], "--p95-target and --at-load go together"),
    (["--out", "x.txt"], "--out must end in .jsonl or .csv"),
])
def test_sweep_mistakes_are_one_line_errors_with_exit_code_2(args, message, tmp_path):
    result = CliRunner().invoke(cli, ["sweep", "--out", str(tmp_path / "s.jsonl"), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
