"""loadtests/locustfile.py run by `locust` itself, as a user runs it by hand: its options come
through Locust's own parser (`--loopfix-run-dir`, `--loopfix-profile`), a missing run directory
is one line and exit code 2, Locust's -u/-r/-t are respected by the load shape, and the answers
the protocol expects (404 without a recording URL, 409 on resuming a job that runs) are not
Locust failures.

The service is a stand-in in this process that answers every route the users call with those
expected answers, so the test needs no stack. Locust runs in a subprocess: it monkey-patches
the process with gevent, which pytest's must not be.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loopfix.harness import history as history_mod
from loopfix.loadtests.fixtures import write_fixtures
from loopfix.loadtest_commands import build_scenario

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
RUN_TIME_S = 4  # Locust's -t; the scenario's own duration is 1,000 wall seconds
FINISH_WITHIN_S = 90.0  # wall seconds Locust gets to stop after -t (start, stop timeout, verdict)


class ExpectedAnswers(BaseHTTPRequestHandler):
    """Every route the load's users call, answered the way the protocol allows: plays and
    enqueues 404 (no recording URL), a paused delete job whose resume is 409 (already running),
    webhooks 204."""

    def _send(self, status: int, body: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/api/recordings/file/"):
            return self._send(404, {"error": "no_recording_url"})
        if self.path.startswith("/api/leads"):
            return self._send(200, {"leads": [{"id": 1}, {"id": 2}], "next_after": None})
        if self.path.startswith("/api/jobs/"):
            return self._send(200, {"job_id": 1, "status": "paused"})
        return self._send(404, {"error": "not_found"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.endswith("/recording/enqueue"):
            return self._send(404, {"error": "no_recording_url"})
        if self.path == "/api/leads/bulk-delete":
            return self._send(202, {"job_id": 1, "existing": False, "status": "queued"})
        if self.path.endswith("/resume"):
            return self._send(409, {"job_id": 1, "resumed": False, "status": "running", "error": "job_running"})
        if self.path.startswith("/webhooks/twilio/"):
            return self._send(204)
        return self._send(404, {"error": "not_found"})

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ExpectedAnswers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_dir_for(tmp_path: Path, url: str) -> Path:
    """A load run directory as `loopfix stack up` writes it: refreshers and a deleter only."""
    s = build_scenario("retry-storm", "fixed", (
        "duration_s=100000", "clients.refresh_fraction=1", "clients.double_click_fraction=0",
        "clients.storm_fraction=0", "clients.refresh_after_s=5", "arrivals.calls_per_hour=3600",
        "bulk_delete.leads_per_business=2", "bulk_delete.requests_per_hour=36000", "bulk_delete.resume_after_s=5",
    ), 0.01, None)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_fixtures(run_dir, {"stub_url": "http://127.0.0.1:9", "businesses": [
        {"id": 1, "api_token": "t", "account_sid": "AC" + "1" * 32, "auth_token": "a" * 32,
         "archive": [{"call_sid": "CA" + f"{i:032x}", "has_url": False} for i in range(5)]}]})
    history_mod.write_run_info(run_dir, {
        "source": "live", "scenario": s.name, "scenario_data": s.to_dict(), "variant": s.variant, "faults": [],
        "policy": dict(s.policy), "time_scale": s.time_scale, "seed": s.seed, "users": 12, "processes": 1,
        "profile": "storm", "epoch": time.time(), "app_url": url})
    return run_dir


def locust(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPFIX_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def stats(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Locust's CSV stats: name → (requests, failures)."""
    with open(run_dir / "locust_stats.csv", newline="", encoding="utf-8") as fh:
        return {row["Name"]: (int(row["Request Count"]), int(row["Failure Count"])) for row in csv.DictReader(fh)}


def test_by_hand_with_locusts_own_options_expected_answers_are_not_failures_and_t_ends_the_shape(tmp_path, service):
    run_dir = run_dir_for(tmp_path, service)
    started = time.monotonic()
    done = locust("--headless", "--host", service, "--loopfix-run-dir", str(run_dir), "--loopfix-profile", "steady",
                  "-u", "3", "-r", "3", "-t", f"{RUN_TIME_S}s", "--csv", str(run_dir / "locust"), "--only-summary",
                  "--stop-timeout", "5", cwd=tmp_path, timeout=FINISH_WITHIN_S)
    took = time.monotonic() - started
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode in (0, 1), done.stderr[-2000:]  # the verdict of a history against a stand-in
    assert "profile steady: 3 users at the peak (-u); spawn rate 3/s (-r); stops after 4 s (-t)" in done.stderr
    assert took < FINISH_WITHIN_S
    by_name = stats(run_dir)
    for name in ("/api/calls/[call]/recording/enqueue", "/api/recordings/file/[call]", "/api/jobs/[id]/resume"):
        requests, failures = by_name[name]
        assert requests > 0 and failures == 0, (name, by_name)
    assert by_name["Aggregated"][1] == 0, by_name
    assert list(run_dir.glob("locust-*.jsonl"))  # the users wrote the run's client events


def test_without_a_run_directory_locust_stops_with_one_line_and_exit_code_2(tmp_path):
    for args, says in (((), "--loopfix-run-dir"), (("--loopfix-run-dir", str(tmp_path)), str(tmp_path))):
        done = locust("--headless", *args, cwd=tmp_path, timeout=60)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2 and len(lines) == 1 and says in lines[0], done.stderr[-2000:]
