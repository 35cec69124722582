"""The target file (loadtests/target/config.py) and `loopfix target init`/`check` on bad files:
each mistake is exactly one line naming its setting, several mistakes are several lines, and
the CLI exits 2 with those lines and no traceback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from loopfix.loadtests.target.config import INIT_TEXT, TargetFileError, load_target
from loopfix.cli import cli

AC = "AC" + "0123456789abcdef" * 2
BUSINESS = {"id": 1, "name": "b", "api_token": "tok", "account_sid": AC, "auth_token": "secret",
            "calls": [{"call_sid": "CA" + "1" * 32, "recording_sid": "RE" + "2" * 32}], "lead_ids": [1, 2]}
GOOD = '''url = "http://127.0.0.1:8000"
time_scale = 0.01
fixtures = "data/fixtures.json"
[media]
host = "127.0.0.1"
port = 9100
[policy]
max_retries = 6
backoff_base_s = 30
[paths]
play = "/play/{call_sid}"
[hooks]
workers_stop = "true"
workers_start = "true"
'''


def write(folder: Path, text: str, fixtures: object = None, name: str = "target.toml") -> Path:
    if fixtures is not None:
        (folder / "data").mkdir(exist_ok=True)
        body = fixtures if isinstance(fixtures, str) else json.dumps(fixtures)
        (folder / "data" / "fixtures.json").write_text(body)
    path = folder / name
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(TargetFileError) as caught:
        load_target(path)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def test_a_valid_file_loads_with_fixtures_resolved_against_its_folder(tmp_path, monkeypatch):
    path = write(tmp_path, GOOD, {"businesses": [BUSINESS]})
    monkeypatch.chdir("/")  # the fixtures path must not depend on the working directory
    config = load_target(path)
    assert config.fixtures == {"businesses": [BUSINESS]}
    assert config.fixtures_path == (tmp_path / "data" / "fixtures.json").resolve()
    assert config.source == path.resolve()
    assert (config.url, config.time_scale, config.media_url) == ("http://127.0.0.1:8000", 0.01,
                                                                 "http://127.0.0.1:9100")
    assert config.paths["play"] == "/play/{call_sid}" and config.paths["leads"] == "/api/leads"
    assert config.hooks == {"workers_stop": "true", "workers_start": "true"}
    policy = config.make_policy()
    assert (policy.max_recording_retries, policy.backoff_base_s, policy.time_scale) == (6, 30.0, 0.01)


@pytest.mark.parametrize("change, expected", [
    (('url = "http://127.0.0.1:8000"', 'url = "ftp://example.com"'), "url: "),
    (("time_scale = 0.01", "time_scale = 0"), "time_scale: "),
    (("[hooks]", "[hooks]\nfrob = \"true\""), "[hooks] frob: "),
    (("[paths]", "[paths]\nplayer = \"/p\""), "[paths] player: "),
    (("[policy]", "[policy]\nmax_retrys = 3"), "[policy] max_retrys: "),
    (("max_retries = 6", 'max_retries = "six"'), "[policy] max_retries: "),
    (("time_scale = 0.01", 'time_scale = 0.01\nadapter = "no_such_pkg.mod:Client"'), "adapter: "),
    (("time_scale = 0.01", "time_scale = 0.01\nurll = 1"), "urll: unknown setting"),
], ids=["bad-url", "time-scale-0", "unknown-hook", "unknown-path", "unknown-policy-name", "bad-policy-value",
        "unimportable-adapter", "unknown-top-level-key"])
def test_each_mistake_is_exactly_its_own_line(tmp_path, change, expected):
    old, new = change
    assert old in GOOD
    found = problems(write(tmp_path, GOOD.replace(old, new, 1), {"businesses": [BUSINESS]}))
    assert len(found) == 1 and found[0].startswith(expected), found


def test_unknown_policy_name_suggests_the_near_one(tmp_path):
    found = problems(write(tmp_path, GOOD.replace("max_retries = 6", "max_retrys = 6"), {"businesses": [BUSINESS]}))
    assert found == ["[policy] max_retrys: not a policy constant; did you mean max_retries? "
                     "(`loopfix policy` lists them)"]


@pytest.mark.parametrize("fixtures, expected", [
    (None, "does not exist"),
    ("{not json", "is not JSON"),
    ({"businesses": []}, "at least one business"),
    ({"businesses": [{k: v for k, v in BUSINESS.items() if k != "api_token"}]}, "business 1: api_token missing"),
    ({"businesses": [{**BUSINESS, "account_sid": "AC123"}]}, "business 1: account_sid must be AC + 32 hex"),
    ({"businesses": [{**BUSINESS, "calls": [{"call_sid": "CA1"}]}]}, "calls[0].call_sid must be CA + 32 hex"),
    ({"businesses": [{**BUSINESS, "lead_ids": ["x"]}]}, "lead_ids must be a list of integers"),
], ids=["missing-file", "not-json", "no-businesses", "no-api-token", "bad-account-sid", "bad-call-sid",
        "bad-lead-ids"])
def test_each_fixtures_mistake_is_one_fixtures_line(tmp_path, fixtures, expected):
    found = problems(write(tmp_path, GOOD, fixtures))
    assert len(found) == 1 and found[0].startswith("fixtures: ") and expected in found[0], found


def test_several_mistakes_give_several_lines(tmp_path):
    text = GOOD.replace("time_scale = 0.01", "time_scale = -1").replace("port = 9100", "port = 70000") \
        .replace("[hooks]", "[hooks]\nreboot = \"true\"")
    found = problems(write(tmp_path, text, {"businesses": [{**BUSINESS, "auth_token": ""}]}))
    assert [line.split(":")[0] for line in found] == ["time_scale", "fixtures", "[media] port", "[hooks] reboot"]


def test_a_file_that_is_not_toml_is_one_line(tmp_path):
    found = problems(write(tmp_path, "url = \n", {"businesses": [BUSINESS]}))
    assert len(found) == 1 and "not TOML" in found[0]


def test_workers_stop_without_workers_start_is_refused(tmp_path):
    found = problems(write(tmp_path, GOOD.replace('workers_start = "true"\n', ""), {"businesses": [BUSINESS]}))
    assert found == ["[hooks] workers_stop: needs workers_start too (loopfix starts again the workers it stops)"]


def test_an_adapter_beside_the_target_file_imports(tmp_path):
    (tmp_path / "beside_adapter.py").write_text(
        "from loopfix.loadtests.target.adapter import OpenApiTarget\nclass Mine(OpenApiTarget):\n    pass\n"
        "class Half:\n    def play(self): ...\n")
    config = load_target(write(tmp_path, 'adapter = "beside_adapter:Mine"\n' + GOOD, {"businesses": [BUSINESS]}))
    assert config.adapter == "beside_adapter:Mine"
    found = problems(write(tmp_path, 'adapter = "beside_adapter:Half"\n' + GOOD))
    assert len(found) == 1 and found[0].startswith("adapter: beside_adapter:Half lacks create_call"), found


def test_init_writes_a_file_that_loads_once_its_fixtures_exist(tmp_path):
    runner = CliRunner()
    path = tmp_path / "t.toml"
    result = runner.invoke(cli, ["target", "init", str(path)])
    assert result.exit_code == 0, result.output
    assert path.read_text() == INIT_TEXT and "target check" in result.output
    found = problems(path)
    assert len(found) == 1 and found[0].startswith("fixtures: ") and "does not exist" in found[0]
    (tmp_path / "fixtures.json").write_text(json.dumps({"businesses": [BUSINESS]}))
    config = load_target(path)
    assert config.time_scale == 0.01 and config.hooks == {} and config.adapter is None


def test_init_refuses_to_overwrite_without_force(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text("mine")
    runner = CliRunner()
    refused = runner.invoke(cli, ["target", "init", str(path)])
    assert refused.exit_code == 2 and path.read_text() == "mine"
    assert refused.output.strip() == f"error: {path} exists; pass --force to overwrite it"
    forced = runner.invoke(cli, ["target", "init", str(path), "--force"])
    assert forced.exit_code == 0 and path.read_text() == INIT_TEXT


def test_check_on_a_bad_file_exits_2_with_one_line_per_problem_and_no_traceback(tmp_path):
    text = GOOD.replace("time_scale = 0.01", "time_scale = 0").replace("[policy]", "[policy]\nnope = 1")
    path = write(tmp_path, text, {"businesses": [{**BUSINESS, "account_sid": "x"}]})
    done = subprocess.run([sys.executable, "-m", "loopfix.cli", "target", "check", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["time_scale", "fixtures", "[policy] nope"], lines
    assert all(line.startswith("error: ") for line in lines) and "Traceback" not in done.stderr


def test_check_on_a_missing_file_exits_2_saying_how_to_write_one(tmp_path):
    result = CliRunner().invoke(cli, ["target", "check", str(tmp_path / "none.toml")])
    assert result.exit_code == 2
    assert "no such file" in result.output and "loopfix target init" in result.output
