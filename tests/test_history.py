"""History files: canonical JSON Lines, merging a run directory by time, schema validation."""
from __future__ import annotations

import json

import pytest

from loopfix.harness import history as H
from loopfix.reference_app.events import dumps, event


def ev(kind, t, proc="web", **fields):
    return event(kind, t, "live", proc, **fields)


def test_written_history_reads_back_equal_and_byte_identical(tmp_path):
    h = [ev("outage.start", 1.0, target="workers", how="stop"), ev("outage.end", 2.5, target="workers", how="stop")]
    a = H.write_history(tmp_path / "a.jsonl", h)
    b = H.write_history(tmp_path / "b.jsonl", H.read_history(a))
    assert H.read_history(a) == h
    assert a.read_bytes() == b.read_bytes()
    assert a.read_text().splitlines()[0] == dumps(h[0])


def test_directory_of_process_files_merges_by_time_keeping_ties_in_file_order(tmp_path):
    web = [ev("outage.start", 1.0, target="w", how="stop"), ev("outage.start", 3.0, target="x", how="stop")]
    worker = [ev("outage.end", 2.0, "worker", target="w", how="stop"), ev("outage.end", 3.0, "worker", target="y", how="stop")]
    H.write_history(tmp_path / "a-web-1.jsonl", web)
    H.write_history(tmp_path / "b-worker-2.jsonl", worker)
    merged = H.read_history(tmp_path)
    assert [(e["t"], e["target"]) for e in merged] == [(1.0, "w"), (2.0, "w"), (3.0, "x"), (3.0, "y")]


def test_torn_last_line_of_a_crashed_process_is_dropped(tmp_path):
    f = tmp_path / "w.jsonl"
    f.write_text(dumps(ev("outage.start", 1.0, target="w", how="crash")) + "\n" + '{"t": 2.0, "ki')
    assert len(H.read_history(f)) == 1


def test_a_torn_last_line_is_reported_with_its_file_and_line_number(tmp_path):
    f = tmp_path / "w.jsonl"
    f.write_text("".join(dumps(ev("outage.start", float(t), target="w", how="crash")) + "\n" for t in (1, 2))
                 + '{"t": 3.0, "ki')
    assert H.read_jsonl_torn(f)[1] == 3
    history, torn = H.read_history_torn(tmp_path)
    assert len(history) == 2 and torn == [(f, 3)]


def test_a_whole_history_is_not_reported_torn(tmp_path):
    f = tmp_path / "w.jsonl"
    f.write_text(dumps(ev("outage.start", 1.0, target="w", how="crash")) + "\n")
    assert H.read_history_torn(f) == ([ev("outage.start", 1.0, target="w", how="crash")], [])


def test_a_file_whose_only_line_is_not_json_is_not_a_history(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("a,b,c")
    with pytest.raises(ValueError, match=r"bad.csv line 1: not JSON"):
        H.read_history(f)


def test_a_bad_line_in_the_middle_names_file_and_line(tmp_path):
    f = tmp_path / "w.jsonl"
    f.write_text("{nope\n" + dumps(ev("outage.start", 1.0, target="w", how="crash")) + "\n")
    with pytest.raises(ValueError, match=r"w.jsonl line 1: not JSON"):
        H.read_history(f)


def test_empty_directory_is_an_error_that_says_so(tmp_path):
    with pytest.raises(ValueError, match=r"no \*.jsonl history files"):
        H.read_history(tmp_path)


def test_validation_names_unknown_kinds_missing_fields_and_bad_sources():
    bad = [
        {"t": 1, "kind": "job.explode", "source": "sim", "proc": "w"},
        {"t": 1, "kind": "job.start", "source": "sim", "proc": "w", "job_id": "1"},
        {**ev("outage.end", 1, target="w", how="stop", workers=0), "source": "prod"},
        {"kind": "outage.end"},
    ]
    problems = H.validate(bad)
    assert "unknown kind 'job.explode'" in problems[0]
    assert "missing field(s) call_sid, attempt, worker" in problems[1]
    assert "source must be one of sim, live, target" in problems[2]
    assert "missing t, source, proc" in problems[3]
    assert H.validate([ev("outage.end", 1, target="w", how="stop", workers=0)]) == []


def test_run_info_rebuilds_the_policy_the_run_used(tmp_path):
    H.write_run_info(tmp_path, {"variant": "seed", "faults": ["no_heartbeat"], "policy": {"stuck_timeout_s": 900}})
    p = H.policy_from_run_info(H.read_run_info(tmp_path))
    assert p.variant == "seed" and p.has("no_heartbeat") and p.stuck_timeout_s == 900
    assert H.read_run_info(tmp_path / "nothing") is None
    (tmp_path / "run.json").write_text("[1]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        H.read_run_info(tmp_path)
    assert json  # imported for symmetry with the writer
