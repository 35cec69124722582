"""The embedded Redis fallback: with no REDIS_URL and no redis-server on PATH, a load run starts
fakeredis's TCP server (loadtests/fake_redis.py) in a process of its own, and real RQ workers,
the app and Locust run a short scenario against it to a verdict."""
from __future__ import annotations

import os
import shutil
import sys

import pytest

from loopfix.harness import history as history_mod
from loopfix.loadtests import runner
from loopfix.loadtests.verdicts import check_run
from loopfix.loadtest_commands import build_scenario

pytestmark = [pytest.mark.stack, pytest.mark.live]


@pytest.mark.timeout(300)
def test_with_no_redis_server_on_path_a_short_run_uses_fakeredis_and_reaches_a_verdict(tmp_path, monkeypatch):
    bare = tmp_path / "bin"  # PATH with python alone: no redis-server to find
    bare.mkdir()
    os.symlink(sys.executable, bare / "python")
    monkeypatch.setenv("PATH", str(bare))
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert shutil.which("redis-server") is None
    # no Twilio faults: no retry whose promotion time a crawling, shared machine could stretch
    s = build_scenario("steady", "fixed", ("drain_s=6000", "twilio.fault_rate=0"), 0.01, 4)
    result = runner.run_load(runner.LoadOptions(s, users=8, runs_root=tmp_path / "runs"))
    info = history_mod.read_run_info(result.run_dir)
    assert info["redis"] == "fakeredis"
    history, verdicts = check_run(result.run_dir)
    assert {v.name: sorted(v.anomalies) for v in verdicts if v.valid is not True} == {}
    assert result.settled and result.requests > 0
    kinds = {e["kind"] for e in history}
    assert {"job.enqueue", "job.start", "download.end", "client.request"} <= kinds  # workers ran jobs off it
