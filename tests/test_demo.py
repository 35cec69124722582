"""`loopfix demo`, `sim` and `verify` from the outside: which variant breaks what (by running
the model, no services), the witnesses of each break, and the exit codes."""
from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from loopfix.harness import history as H
from loopfix import sim_commands
from loopfix.sim_commands import HEADLINE_SCENARIOS, run_demo


@pytest.fixture(scope="module")
def demo():
    return run_demo()


@pytest.fixture
def cli():
    @click.group()
    def group() -> None:
        """loopfix (test group)"""

    sim_commands.register(group)
    return group


def broken(demo, variant):
    """invariant -> the broken verdicts of `variant` over every headline scenario."""
    out: dict[str, list] = {}
    for c in demo["cells"]:
        if c["variant"] == variant:
            for v in c["verdicts"]:
                if v.valid is not True:
                    out.setdefault(v.name, []).append(v)
    return out


def test_demo_runs_every_headline_scenario_under_every_variant(demo):
    assert {(c["scenario"], c["variant"]) for c in demo["cells"]} == {
        (s, v) for s in HEADLINE_SCENARIOS for v in ("before", "seed", "fixed")}


def test_fixed_variant_holds_all_ten_invariants_everywhere(demo):
    assert broken(demo, "fixed") == {}


def test_before_variant_breaks_loops_storms_and_backoff(demo):
    assert {"loops-terminate", "one-job-per-storm", "backoff-schedule"} <= set(broken(demo, "before"))


def test_seed_variant_breaks_duplicate_downloads_and_storms(demo):
    assert {"no-duplicate-download", "one-job-per-storm"} <= set(broken(demo, "seed"))


def test_every_break_names_its_witness_events(demo):
    for variant in ("before", "seed"):
        for verdicts in broken(demo, variant).values():
            for v in verdicts:
                assert v.valid is False
                assert all(a.witnesses for group in v.anomalies.values() for a in group), v.name


def test_demo_says_which_seed_claims_hold(demo):
    claims = {c["claim"]: c for c in demo["claims"]}
    minutes = claims["~52 minutes before a recording fails for good"]
    assert minutes["variants"]["fixed"]["holds"] is False
    assert (minutes["configured_total_s"], minutes["six_retries_total_s"]) == (1860, 3060)
    storm = next(c for c in demo["claims"] if c["invariant"] == "one-job-per-storm")
    assert storm["variants"]["seed"]["holds"] is False and storm["variants"]["fixed"]["holds"] is True
    assert storm["variants"]["seed"]["example"]["witnesses"]


def test_sim_exits_0_when_every_invariant_holds_and_writes_a_verifiable_run(cli, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["sim", "steady", "--set", "duration_s=600", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "history.jsonl").is_file() and H.read_run_info(out)["variant"] == "fixed"
    again = CliRunner().invoke(cli, ["verify", str(out), "--json"])
    assert again.exit_code == 0 and json.loads(again.output)["valid"] is True


def test_sim_exits_1_when_an_invariant_breaks_and_json_lists_the_witnesses(cli):
    result = CliRunner().invoke(cli, ["sim", "retry-storm", "--variant", "seed", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    storm = next(v for v in report["verdicts"] if v["name"] == "one-job-per-storm")
    assert storm["valid"] is False and storm["anomalies"]["storm-duplicate-enqueue"][0]["witnesses"]
    assert "time_to_playable_s" in report["metrics"]


def test_verify_checks_against_the_policy_of_the_run(cli, tmp_path):
    out = tmp_path / "run"
    CliRunner().invoke(cli, ["sim", "missing-calllog", "--variant", "seed", "--set", "duration_s=900",
                             "--out", str(out)])
    result = CliRunner().invoke(cli, ["verify", str(out)])
    assert result.exit_code == 1 and "backoff-schedule: BROKEN" in result.output


@pytest.mark.parametrize("args, message", [
    (["sim", "nosuch"], "no scenario 'nosuch'"),
    (["sim", "steady", "--set", "workers.count=0"], "workers.count must be a whole number >= 1"),
    (["sim", "steady", "--set", "oops"], "expected NAME=VALUE"),
    (["verify", "/nonexistent/run"], "no such history file or directory"),
])
def test_bad_input_exits_2_with_one_line_and_no_traceback(cli, args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_verify_rejects_a_malformed_history(cli, tmp_path):
    (tmp_path / "w.jsonl").write_text('{"t": 1, "kind": "job.explode", "source": "live", "proc": "w"}\n')
    result = CliRunner().invoke(cli, ["verify", str(tmp_path)])
    assert result.exit_code == 2 and "unknown kind 'job.explode'" in result.output
