"""`loopfix worker` as RQ sees it, with a real forking RQ worker (`loopfix worker --burst` in a
process of its own) on the session's private redis-server: a run that fails for good is a
FAILED RQ job in the FailedJobRegistry with its reason as exc_info and no RQ retry spent, while
the run's own status and history say what they said before; the worker logs one line per job
(job id, call_sid, attempt, outcome, seconds) and not RQ's "Job OK"."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

import loopfix
from loopfix.loadtests.stack import descendants
from loopfix.reference_app.policy import BULK_DELETE_OP
from loopfix.reference_app.jobs import enqueue_run
from loopfix.reference_app.models import RecordingRun
from loopfix.reference_app.services import LEADS_QUEUE, RECORDINGS_QUEUE
from tests.conftest import add_business, auth, read_events, sid
from tests.leads_support import business_with_leads

pytestmark = [pytest.mark.redis]

LINE = re.compile(r"job (\S+) call_sid=(\S+) attempt=(\S+) outcome=(\S+) seconds=(\d+\.\d+)$")


def queued_run(svc, call_sid: str, url: str | None, status: str = "queued", business_id: int | None = None) -> str:
    """A RecordingRun for `call_sid` put on the recordings queue (Retry(max=3), as the app does); its RQ id."""
    with svc.sessions() as s:
        run = RecordingRun(business_id=business_id, call_sid=call_sid, recording_sid=sid("RE") if url else None,
                           recording_url=url, job_type="download_only", status=status, created_at=time.time())
        s.add(run)
        s.commit()
        return enqueue_run(svc, s, run)


def burst_worker(svc) -> list[str]:
    """Run `loopfix worker --burst` on svc's config until the queues are empty; its stderr lines."""
    env = {**os.environ, **svc.config.to_env(),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(loopfix.__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH")]))}
    log = svc.config.data_dir / "worker-burst.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "loopfix.cli", "worker", "--burst"], env={**env, "PYTHONFAULTHANDLER": "1"},
                                stdout=fh, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            horses = descendants(proc.pid)  # in groups of their own: the worker's end leaves them
            proc.send_signal(signal.SIGABRT)
            time.sleep(1)
            for pid in [proc.pid, *horses]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError("the burst worker did not exit:\n" + log.read_text()) from None
    text = log.read_text()
    assert rc == 0, text
    return text.splitlines()


def test_a_run_failed_for_good_is_a_failed_rq_job_and_every_job_logs_one_line(app_factory):
    client, svc = app_factory(time_scale=0.01)
    b = add_business(svc, calls=2, recording_url="https://evil.example/{sid}.mp3")  # off the allowlist
    refused = queued_run(svc, b["calls"][0]["call_sid"], "https://evil.example/x.mp3", business_id=b["id"])
    no_calllog = queued_run(svc, sid("CA"), None, business_id=b["id"])  # waits for its CallLog: a retry
    finished = queued_run(svc, b["calls"][1]["call_sid"], None, status="done", business_id=b["id"])
    leads = business_with_leads(svc, 3)
    assert svc.coord.acquire_lock(leads["id"], BULK_DELETE_OP, "someone-else")
    r = client.post("/api/leads/bulk-delete", json={"lead_ids": leads["lead_ids"]}, headers=auth(leads))
    assert r.status_code == 202, r.json
    delete_rq = svc.redis.lrange(f"rq:queue:{LEADS_QUEUE}", 0, -1)[0].decode()

    lines = burst_worker(svc)

    rq = svc.redis
    job_lines = [m.groups() for m in map(LINE.search, lines) if m]
    assert sorted(g[0] for g in job_lines) == sorted([refused, no_calllog, finished, delete_rq]), lines
    by_job = {g[0]: g for g in job_lines}
    assert by_job[refused][1:4] == (b["calls"][0]["call_sid"], "1", "failed")
    assert by_job[no_calllog][3] == "retry" and by_job[finished][3] == "skipped"
    assert by_job[delete_rq][1:4] == ("-", "-", "failed")
    assert not any("Job OK" in line for line in lines), lines

    failed = FailedJobRegistry(RECORDINGS_QUEUE, connection=rq)
    assert set(failed.get_job_ids()) == {refused}
    job = Job.fetch(refused, connection=rq)
    assert job.get_status() == JobStatus.FAILED
    exc = job.latest_result().exc_string
    assert job.retries_left == 0  # RQ's crash retries were not spent re-running a final failure
    starts = [e for e in read_events(svc.config.history_dir) if e["kind"] == "job.start"]
    with svc.sessions() as s:
        runs = {r.rq_job_id: r for r in s.query(RecordingRun)}
    refused_run = next(r for r in runs.values() if r.call_sid == b["calls"][0]["call_sid"])
    assert [e["job_id"] for e in starts].count(str(refused_run.id)) == 1  # ran once
    assert refused_run.status == "failed" and f"RunFailed: {refused_run.error}" in exc, (refused_run.error, exc)
    assert Job.fetch(finished, connection=rq).get_status() == JobStatus.FINISHED

    leads_failed = FailedJobRegistry(LEADS_QUEUE, connection=rq)
    assert leads_failed.get_job_ids() == [delete_rq]
    assert "is held by job someone-else" in Job.fetch(delete_rq, connection=rq).latest_result().exc_string
    progress = client.get(f"/api/jobs/{r.json['job_id']}", headers=auth(leads)).json
    assert progress["status"] == "failed", progress


def test_a_job_that_raises_still_gets_rqs_crash_retries(app_factory):
    """The other way round: an unexpected error is not a final failure — RQ's Retry(max=3)
    re-runs it (a job called with an argument its function does not take raises TypeError)."""
    _client, svc = app_factory(time_scale=0.01)
    q = svc.queue(RECORDINGS_QUEUE)
    from rq import Retry

    job = q.enqueue("loopfix.reference_app.jobs.process_recording", no_such_argument=1, retry=Retry(max=2))
    lines = burst_worker(svc)
    outcomes = [m.group(4) for m in map(LINE.search, lines) if m and m.group(1) == job.id]
    assert len(outcomes) == 3 and all(o.startswith("error:") for o in outcomes), lines
    assert Job.fetch(job.id, connection=svc.redis).get_status() == JobStatus.FAILED


def test_status_shows_failed_jobs_and_the_parked_retry_with_its_due_time(app_factory):
    """`loopfix status`: what `rq info` shows, plus the retry parked outside RQ's registries."""
    from click.testing import CliRunner

    from loopfix.cli import cli

    _client, svc = app_factory(time_scale=0.01)
    b = add_business(svc, calls=1, recording_url="https://evil.example/{sid}.mp3")
    queued_run(svc, b["calls"][0]["call_sid"], "https://evil.example/x.mp3", business_id=b["id"])
    waiting_for_calllog = sid("CA")
    queued_run(svc, waiting_for_calllog, None, business_id=b["id"])
    enqueued_at = time.time()
    burst_worker(svc)
    with svc.sessions() as s:
        parked = s.query(RecordingRun).filter_by(call_sid=waiting_for_calllog).one()
        parked_id, due_at = parked.rq_job_id, parked.next_attempt_at

    url = svc.config.redis_url
    out = CliRunner().invoke(cli, ["status", "--redis-url", url, "--json"])
    assert out.exit_code == 0, out.output
    rec = next(q for q in json.loads(out.output)["queues"] if q["name"] == RECORDINGS_QUEUE)
    assert (rec["queued"], rec["failed"], rec["scheduled"]) == (0, 1, 1), rec
    [job] = rec["scheduled_jobs"]
    assert job["job_id"] == parked_id
    due = datetime.fromisoformat(job["due"]).timestamp()
    assert enqueued_at < due and abs(due - due_at) < 0.3, (due, due_at)  # the run's own next attempt time
    text = CliRunner().invoke(cli, ["status", "--redis-url", url])
    assert text.exit_code == 0 and f"scheduled {parked_id}" in text.output, text.output
    assert "0 queued, 0 started, 1 failed" in text.output, text.output
