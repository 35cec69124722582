"""The `loopfix` group as a new user meets it: --version, the exit codes in --help, the fault
list of `loopfix policy`, and bad input (a file that is not a history or a sweep, a torn
history, a sweep file made by `loopfix sweep`) answered in one line with exit code 2."""
from __future__ import annotations

import json
from importlib import metadata

import pytest
from click.testing import CliRunner

from loopfix.cli import cli
from loopfix.reference_app.policy import FAULTS


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_version_is_the_installed_distributions():
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"loopfix {metadata.version('loopfix')}"


def test_help_documents_every_exit_code():
    result = run("--help")
    assert result.exit_code == 0
    for line in ("0    holds", "1    broken", "2    usage or bad input", "130  interrupted"):
        assert line in result.output


def test_every_command_is_listed_beside_the_module_that_registers_it():
    import importlib

    import click

    from loopfix.cli import COMMANDS

    registered = {}
    for module in sorted(set(COMMANDS.values())):
        group = click.Group()
        importlib.import_module(f"loopfix.{module}").register(group)
        registered.update({name: module for name in group.commands})
    assert registered == COMMANDS


def test_plain_policy_lists_every_known_fault_with_its_description():
    result = run("policy", "--variant", "seed")
    assert result.exit_code == 0
    assert f"known faults ({len(FAULTS)};" in result.output
    for name, what in FAULTS.items():
        assert f"{name}" in result.output and what in result.output
    marked = {line.split()[1] for line in result.output.splitlines() if line.startswith("* ")}
    assert "lock_release_unowned" in marked and "infinite_immediate_retry" not in marked


@pytest.mark.parametrize("command", ["verify", "report"])
def test_a_csv_that_is_not_a_history_is_one_line_and_exit_2(command, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,phone\nann,+15550000001\nbob,+15550000002\n")
    result = run(command, str(bad))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert "bad.csv" in result.output


def test_report_on_a_jsonl_that_is_not_sweep_results_names_what_is_missing(tmp_path):
    bad = tmp_path / "other.jsonl"
    bad.write_text('{"name": "ann", "phone": "+15550000001"}\n')
    result = run("report", str(bad))
    assert result.exit_code == 2
    assert "not sweep results" in result.output and "workers" in result.output


def test_report_on_a_history_file_asks_for_its_run_directory(tmp_path):
    out = tmp_path / "run"
    assert run("sim", "steady", "--set", "duration_s=600", "--out", str(out)).exit_code == 0
    result = run("report", str(out / "history.jsonl"))
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert f"a history, not sweep results; pass the run directory it is in ({out})" in result.output


def test_verify_says_which_line_of_a_torn_history_it_left_out(tmp_path):
    out = tmp_path / "run"
    assert run("sim", "steady", "--set", "duration_s=600", "--out", str(out)).exit_code == 0
    history = out / "history.jsonl"
    lines = len(history.read_text().splitlines())
    with open(history, "a") as fh:
        fh.write('{"t": 599.5, "kind": "job.st')
    result = run("verify", str(out), "--json")
    assert result.exit_code == 0
    assert f"{history} line {lines + 1}: torn last line" in result.stderr
    assert json.loads(result.stdout)["events"] == lines


def test_report_draws_the_default_output_of_sweep(tmp_path):
    sweep = tmp_path / "sweep.jsonl"
    assert run("sweep", "--workers", "2,4", "--calls-per-hour", "240", "--out", str(sweep)).exit_code == 0
    result = run("report", str(sweep), "--quick", "--out", str(tmp_path / "report"), "--runs", str(tmp_path / "sim"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "metastability.png").is_file()
    assert "and 4 sweep rows" in (tmp_path / "report" / "report.md").read_text()


DEAD_REDIS = "redis://127.0.0.1:1/0"  # port 1: nothing listens there


@pytest.mark.parametrize("args", [
    ["worker", "--redis-url", DEAD_REDIS],
    ["loadtest", "steady", "--redis-url", DEAD_REDIS, "--runs-dir", "runs"],
    ["stack", "up", "--redis-url", DEAD_REDIS, "--runs-dir", "runs"],
])
def test_an_unreachable_redis_is_named_in_one_line_before_anything_starts(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: cannot reach Redis at {DEAD_REDIS}: Error 111 connecting to " \
                                    f"127.0.0.1:1. Connection refused."
    assert not (tmp_path / "runs").exists()  # no stack was started, no run directory made


def test_redis_url_password_is_not_printed(tmp_path):
    result = run("worker", "--redis-url", "redis://:s3cret@127.0.0.1:1/0")
    assert result.exit_code == 2 and "s3cret" not in result.output and ":***@127.0.0.1:1" in result.output


def test_seed_creates_the_folder_of_a_sqlite_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("seed", "--database-url", "sqlite:///missing-dir/x.db", "--json")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "missing-dir" / "x.db").is_file() and len(json.loads(result.output)["businesses"]) == 1


def test_seed_to_a_database_it_cannot_use_is_one_line_without_the_password():
    result = run("seed", "--database-url", "postgresql://lf:s3cret@127.0.0.1:1/x")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.startswith("error: cannot use the database at postgresql://lf:***@127.0.0.1:1/x: ")
    assert len(result.output.strip().splitlines()) == 1 and "s3cret" not in result.output
