"""The capacity sweep: its M/M/c special case agrees with Erlang C, its answers come from the
grid it ran and count every session (an overloaded point is not drained, never a pass nor a
loss), its recovery figure separates a system that recovers from one that does not, and a grid
cut into shards joins back into the rows of one run."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from loopfix.cli import cli
from loopfix.report_commands import REPORT_SWEEPS
from loopfix.sweep_commands import SweepFailed, run_sweep
from loopfix.reports import capacity
from loopfix.sim import sweep


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
    assert "4 workers hold p95 time-to-playable <= 60 s" in result.output
    again = CliRunner().invoke(cli, ["sweep", "--from", str(out), "--p95-target", "1", "--at-load", "600"])
    assert again.exit_code == 1 and "no swept worker count (1, 4) is enough" in again.output


def _overloaded(tmp_path, *extra):
    """The point of issue 17: 1 worker at 1,200 calls/h, where most sessions give up."""
    out = tmp_path / "overloaded.jsonl"
    result = CliRunner().invoke(cli, ["sweep", "--workers", "1", "--calls-per-hour", "1200", "--outage", "0",
                                      "--out", str(out), *extra])
    (row,) = capacity.read_rows(out)
    return result, row


def test_a_point_where_most_sessions_gave_up_does_not_meet_the_p95_target(tmp_path):
    result, row = _overloaded(tmp_path, "--p95-target", "200", "--at-load", "1200")
    assert row["ttp_p95_s"] <= 200 and row["sessions_gave_up"] > row["sessions"] / 2  # p95 of those that played
    assert result.exit_code == 1
    assert "no swept worker count (1) is enough — 1 workers: not drained (overloaded)" in result.output
    assert "1 workers (p95" not in result.output


def test_a_point_whose_backlog_has_not_drained_is_not_drained_not_lost(tmp_path):
    result, row = _overloaded(tmp_path, "--check")
    assert row["drained"] is False and row["backlog_end"] > 0 and row["recovery_s"] is None
    assert "nothing-lost" not in row["broken"].split(",") and "nothing-lost" in row["undecided"].split(",")
    assert row["invariants_hold"] == "unknown"
    assert "not drained (overloaded) when observation ended: 1 workers at 1200 calls/h" in result.output


def _row(workers, calls, played=990, gave_up=5, errors=0, p95=30.0, drained=True, recovery_s=0.0, outage=0.0):
    return {"variant": "fixed", "mmc": False, "workers": workers, "calls_per_hour": calls, "latency_median_s": 4.0,
            "outage_s": outage, "sessions": played + gave_up + errors + 5, "sessions_played": played,
            "sessions_gave_up": gave_up, "sessions_not_found": 5, "sessions_worker_offline": errors,
            "ttp_p95_s": p95, "drained": drained, "recovery_s": recovery_s}


def test_a_point_meets_the_level_only_with_few_gave_up_few_errors_and_a_drained_backlog():
    assert capacity.judge(_row(2, 600), 60).meets is True
    assert capacity.judge(_row(2, 600, gave_up=20), 60).reasons == ("2.0 % gave up",)
    assert capacity.judge(_row(2, 600, errors=15), 60).reasons == ("1.5 % errors",)  # a 500: worker offline
    assert capacity.judge(_row(2, 600, gave_up=20), 60, max_failed=0.05).meets is True
    assert capacity.judge(_row(2, 600, drained=False, recovery_s=None), 60).reasons == ("not drained (overloaded)",)
    assert capacity.judge(_row(2, 600, p95=61.0), 60).reasons == ("p95 61.0 s",)
    assert capacity.judge(_row(2, 600, outage=600.0, recovery_s=None), 60).reasons == (
        "did not recover from the outage while the load went on",)


def test_recommendation_names_the_workers_the_load_they_hold_and_the_load_none_recovers_from():
    rows = [_row(1, 240), _row(2, 240), _row(4, 240),
            _row(1, 600, gave_up=300), _row(2, 600), _row(4, 600),
            *(_row(w, 1200, gave_up=600, drained=False, recovery_s=None) for w in (1, 2, 4))]
    assert capacity.recommendation_lines(rows, 60) == [
        "2 workers hold p95 time-to-playable <= 60 s with < 1 % gave up and < 1 % errors up to 600 calls/h; "
        "at 1200 calls/h no worker count recovers (swept 1-4 workers)"]
    rows[-1] = _row(4, 1200, gave_up=600)  # four workers drain, but too many sessions gave up
    assert capacity.recommendation_lines(rows, 60)[0].endswith("at 1200 calls/h no worker count meets it (swept 1-4 workers)")
    assert capacity.recommendation_lines(rows[:3], 60) == [
        "1 workers hold p95 time-to-playable <= 60 s with < 1 % gave up and < 1 % errors up to 240 calls/h, "
        "the highest load swept"]


def test_sweep_prints_the_recommendation_line_of_the_grid_it_ran(tmp_path):
    out = tmp_path / "sweep.jsonl"
    result = CliRunner().invoke(cli, ["sweep", "--workers", "2,4", "--calls-per-hour", "240,1200", "--outage", "0",
                                      "--out", str(out), "--p95-target", "200"])
    assert result.exit_code == 0, result.output
    (line,) = capacity.recommendation_lines(capacity.read_rows(out), 200)
    assert line in result.output.splitlines()
    assert line.startswith("4 workers hold p95 time-to-playable <= 200 s") and "up to 240 calls/h; at 1200 calls/h" in line


TINY = ["--base", "steady", "--workers", "1,4", "--calls-per-hour", "120,600", "--outage", "0,300", "--observe", "600"]


def _without_wall_time(rows):
    """A row's wall_s is how long the machine took, not what the model did: the rest must match."""
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_shards_merge_into_the_rows_of_one_run_in_grid_order(tmp_path):
    whole = tmp_path / "whole.jsonl"
    assert CliRunner().invoke(cli, ["sweep", *TINY, "--out", str(whole)]).exit_code == 0
    shards = [tmp_path / f"shard{k}.csv" for k in (1, 2, 3)]
    for k, f in enumerate(shards, 1):
        assert CliRunner().invoke(cli, ["sweep", *TINY, "--shard", f"{k}/3", "--out", str(f)]).exit_code == 0
    assert len(capacity.read_rows(shards[0])) == 3  # 8 points: 3 + 3 + 2
    merged = tmp_path / "merged.jsonl"
    result = CliRunner().invoke(cli, ["sweep", "merge", *map(str, reversed(shards)), "--out", str(merged)])
    assert result.exit_code == 0, result.output
    assert _without_wall_time(capacity.read_rows(merged)) == _without_wall_time(capacity.read_rows(whole))
    missing = CliRunner().invoke(cli, ["sweep", "merge", str(shards[0]), str(shards[2]), "--out", str(merged)])
    assert missing.exit_code == 2 and "3 of 8 points are in none of the files" in missing.output
    twice = CliRunner().invoke(cli, ["sweep", "merge", str(shards[0]), str(shards[0]), "--out", str(merged)])
    assert twice.exit_code == 2 and "is in both" in twice.output


def test_a_failed_point_is_named_and_the_others_are_kept():
    good = list(sweep.points(sweep.Grid(base="steady", workers=(1, 4), calls_per_hour=(120.0,), outage_s=(0.0,))))
    bad = {**good[0], "base": "no-such-scenario", "workers": 3}
    with pytest.raises(SweepFailed) as failed:
        run_sweep([good[0], bad, good[1]], jobs=2)
    assert [r["workers"] for r in failed.value.rows] == [1, 4]
    (failure,) = failed.value.failures
    assert failure.describe().startswith("point workers=3, calls_per_hour=120, latency_median_s=4, outage_s=0, "
                                         "variant=fixed, seed=1 failed: ValueError: ")
    assert "no-such-scenario" in failure.describe()


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
    (["--at-load", "5"], "--at-load needs --p95-target"),
    (["--shard", "4/3"], "--shard must be K/N with 1 <= K <= N (e.g. 2/4), got '4/3'"),
    (["--shard", "two"], "--shard must be K/N"),
    (["--out", "x.txt"], "--out must end in .jsonl or .csv"),
])
def test_sweep_mistakes_are_one_line_errors_with_exit_code_2(args, message, tmp_path):
    result = CliRunner().invoke(cli, ["sweep", "--out", str(tmp_path / "s.jsonl"), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
