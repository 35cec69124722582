"""`--junit-xml FILE` on sim, verify and loadtest: one testcase per invariant (classname the
scenario or run), a broken one a <failure> with the first anomaly as its message and the
witnesses in its text, "unknown" an <error>, "not observable" a <skipped>."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from click.testing import CliRunner

from loopfix.harness import history as history_mod
from loopfix.harness import invariants as inv
from loopfix.harness.scenario import load_scenario, with_settings
from loopfix.loadtests import runner
from loopfix.cli import cli
from loopfix.junit import junit_xml

WITNESS = {"t": 12.0, "kind": "download.end", "source": "sim", "proc": "w1", "recording_sid": "RE1", "job_id": "7"}


def parse(xml: bytes | str) -> ET.Element:
    return ET.fromstring(xml)


def cases(root: ET.Element) -> dict[str, ET.Element]:
    return {c.get("name"): c for c in root.iter("testcase")}


def test_each_verdict_is_a_testcase_and_only_holds_passes():
    verdicts = [
        inv.Verdict("loops-terminate", True),
        inv.Verdict("no-duplicate-download", False, {"duplicate-download": (inv.Anomaly(
            "duplicate-download", {"recording_sid": "RE1", "count": 2, "job_ids": ["7", "8"]}, (WITNESS,)),)}),
        inv.Verdict("fail-fast", inv.UNKNOWN, {"undecided": (inv.Anomaly("undecided", {"reason": "no calls"}),)}),
        inv.Verdict("lock-exclusive", inv.NOT_OBSERVABLE, {}, {"why": "the lock is inside the service"}),
    ]
    root = parse(junit_xml("steady[fixed]", verdicts))
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("4", "1", "1", "1")
    by_name = cases(root)
    assert {c.get("classname") for c in by_name.values()} == {"steady[fixed]"}
    assert list(by_name["loops-terminate"]) == []
    failure = by_name["no-duplicate-download"].find("failure")
    assert failure.get("message") == "recording RE1 downloaded 2 times, by jobs ['7', '8']"
    assert "t=12.000 download.end" in failure.text
    assert by_name["fail-fast"].find("error").get("message") == "no calls"
    assert by_name["lock-exclusive"].find("skipped").get("message") == "not observable: the lock is inside the service"


def test_sim_writes_one_testcase_per_invariant_with_the_breaks_as_failures(tmp_path):
    xml = tmp_path / "ci" / "sim.xml"
    result = CliRunner().invoke(cli, ["sim", "retry-storm", "--variant", "seed", "--junit-xml", str(xml)])
    assert result.exit_code == 1
    root = parse(xml.read_bytes())
    assert len(root.findall(".//testcase")) == len(inv.INVARIANTS)
    failed = {c.get("name") for c in root.iter("testcase") if c.find("failure") is not None}
    assert "one-job-per-storm" in failed and "loops-terminate" not in failed
    assert int(root.get("failures")) == len(failed)
    assert {c.get("classname") for c in root.iter("testcase")} == {"retry-storm[seed]"}


def test_verify_names_the_run_as_classname_and_passes_a_run_that_holds(tmp_path):
    run = tmp_path / "run-1"
    assert CliRunner().invoke(cli, ["sim", "steady", "--set", "duration_s=600", "--out", str(run)]).exit_code == 0
    xml = tmp_path / "verify.xml"
    assert CliRunner().invoke(cli, ["verify", str(run), "--junit-xml", str(xml)]).exit_code == 0
    root = parse(xml.read_bytes())
    assert root.get("tests") == str(len(inv.INVARIANTS)) and root.get("failures") == "0"
    assert {c.get("classname") for c in root.iter("testcase")} == {"run-1"}


def test_loadtest_writes_the_verdicts_of_its_run(tmp_path, monkeypatch):
    def fake_load(opts, on_progress):  # the model's history in place of the stack's
        run_dir = opts.runs_root / "20260101-000000-steady-fixed-1"
        scenario = with_settings(load_scenario("steady"), assignments={"duration_s": "600"})
        from loopfix.sim import simulate

        result = simulate(scenario)
        history_mod.write_history(run_dir / "history.jsonl", result.history)
        history_mod.write_run_info(run_dir, result.run_info())
        return runner.LoadResult(run_dir, 0, 1.0, 1.0, True)

    monkeypatch.setattr(runner, "run_load", fake_load)
    xml = tmp_path / "load.xml"
    result = CliRunner().invoke(cli, ["loadtest", "steady", "--runs-dir", str(tmp_path), "--junit-xml", str(xml)])
    assert result.exit_code in (0, 1), result.output
    root = parse(xml.read_bytes())
    assert len(root.findall(".//testcase")) == len(inv.INVARIANTS)
    assert {c.get("classname") for c in root.iter("testcase")} == {"20260101-000000-steady-fixed-1"}


def test_an_unwritable_junit_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(cli, ["sim", "steady", "--set", "duration_s=600",
                                      "--junit-xml", str(tmp_path / "file" / "x.xml")])
    assert result.exit_code == 2 and "cannot write" in result.output and "Traceback" not in result.output
