"""Shared by the lead-deletion tests (test_leads.py: through real workers; test_leads_api.py:
the API in process): the `lead_config` fixture, an API client, businesses with leads, and
helpers that wait for a job's state or start and kill worker processes."""
from __future__ import annotations

import json
import os
import socket
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import insert, select

from loopfix.loadtests.stack import Stack
from loopfix.reference_app import create_app
from loopfix.reference_app.config import Config
from loopfix.reference_app.coordination import WORKERS_ALIVE_KEY
from loopfix.reference_app.models import BackgroundJob, Lead
from loopfix.reference_app.policy import make_policy
from loopfix.reference_app.services import Services
from tests.conftest import add_business, auth

OP = "delete_leads_bulk"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def lead_config(tmp_path, private_redis):
    """lead_config(variant, faults, time_scale, database_url, **policy_overrides) -> Config whose
    data dir is the one stack_factory gives the processes, so the test and they share SQLite."""
    redis.Redis.from_url(private_redis).flushdb()

    def build(variant="fixed", faults="", time_scale=0.01, database_url="", **overrides) -> Config:
        return Config(redis_url=private_redis, database_url=database_url,
                      data_dir=(tmp_path / "run" / "data").resolve(), history_dir=tmp_path / "history",
                      run_epoch=time.time(), policy=make_policy(variant, faults, time_scale, overrides))

    return build


class Api:
    """The same calls over real HTTP (gunicorn) or through Flask's test client (in-process)."""

    def __init__(self, business: dict, base_url: str | None = None, client=None):
        self.headers, self.base_url, self.client = auth(business), base_url, client

    def call(self, method: str, path: str, body=None, params=None) -> tuple[int, dict]:
        if self.client is not None:
            r = self.client.open(path, method=method, json=body, query_string=params, headers=self.headers)
            return r.status_code, r.get_json()
        r = requests.request(method, self.base_url + path, json=body, params=params, headers=self.headers,
                             timeout=30)
        return r.status_code, r.json()

    def bulk_delete(self, lead_ids) -> tuple[int, dict]:
        return self.call("POST", "/api/leads/bulk-delete", {"lead_ids": lead_ids})

    def job(self, job_id) -> dict:
        status, body = self.call("GET", f"/api/jobs/{job_id}")
        assert status == 200, body
        return body

    def resume(self, job_id) -> tuple[int, dict]:
        return self.call("POST", f"/api/jobs/{job_id}/resume")


def business_with_leads(svc: Services, n: int, names: tuple[str, ...] = ()) -> dict:
    """A business with `n` leads (the first len(names) named as given); adds `lead_ids`."""
    b = add_business(svc, calls=0)
    with svc.sessions() as s:
        rows = [dict(business_id=b["id"], name=names[i] if i < len(names) else f"lead {i}", phone=f"+1555{i:07d}")
                for i in range(n)]
        b["lead_ids"] = sorted(s.execute(insert(Lead).returning(Lead.id), rows).scalars())
        s.commit()
    return b


def remaining(svc: Services, business_id: int) -> set[int]:
    with svc.sessions() as s:
        return set(s.scalars(select(Lead.id).where(Lead.business_id == business_id)))


def jobs_of(svc: Services, business_id: int) -> list[BackgroundJob]:
    with svc.sessions() as s:
        return list(s.scalars(select(BackgroundJob).where(BackgroundJob.business_id == business_id)
                              .order_by(BackgroundJob.id)))


def wait_for(check, timeout: float, what: str, every: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_status(api: Api, job_id: int, statuses: tuple[str, ...], timeout: float = 20) -> dict:
    return wait_for(lambda: (j := api.job(job_id))["status"] in statuses and j, timeout,
                    f"job {job_id} to become {'/'.join(statuses)}")


def deletes_per_lead(history) -> Counter:
    return Counter(e["lead_id"] for e in history if e["kind"] == "lead.delete")


def storm(url: str, business: dict, lead_ids: list[int], n: int = 50) -> list[tuple[int, dict]]:
    """`n` concurrent POSTs with last-byte synchronisation: each thread sends its whole request
    but the final byte, all wait on one barrier, then all send the last byte — the requests
    complete within microseconds of each other, as a burst of retries from a proxy would."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"lead_ids": lead_ids}).encode()
    raw = (f"POST /api/leads/bulk-delete HTTP/1.1\r\nHost: {host}:{port}\r\n"
           f"Authorization: Bearer {business['token']}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    barrier, results, lock = threading.Barrier(n), [], threading.Lock()

    def click():
        try:
            with socket.create_connection((host, int(port)), timeout=60) as conn:
                conn.sendall(raw[:-1])
                barrier.wait()
                conn.sendall(raw[-1:])
                reply = b"".join(iter(lambda: conn.recv(65536), b""))
            head, _, payload = reply.partition(b"\r\n\r\n")
            outcome = (int(head.split()[1]), json.loads(payload) if payload.startswith(b"{") else {"text": payload[:300]})
        except (OSError, ValueError, threading.BrokenBarrierError) as exc:
            outcome = (0, {"exception": repr(exc)})
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=click) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def start_worker(stack: Stack, name: str | None = None):
    """Start an RQ worker and wait until its ticker has finished one full sweep (two liveness
    beats). A job forked before that can deadlock in the work horse: the ticker builds the
    services lazily under Python 3.11's cached_property lock, and a fork copies it held."""
    proc = stack.start_worker(name)
    r = redis.Redis.from_url(stack.config.redis_url)
    last = [-3]

    def second_beat() -> bool:
        ttl = r.pttl(WORKERS_ALIVE_KEY)
        beat = last[0] > 0 and ttl > last[0]
        last[0] = ttl if ttl > 0 else last[0]
        return beat

    wait_for(second_beat, 20, f"{proc.name}'s ticker to sweep", every=0.002)
    return proc


def kill_worker(stack: Stack, name: str) -> None:
    """SIGKILL a worker *and* its work horse, as a dying machine would. The horse has to be
    killed by its own pid: RQ puts it in a process group of its own (os.setpgrp), so the
    stack's group signal reaches only the worker, and the horse would run the job on."""
    proc = stack.procs[name]
    horses = [int(pid) for task in Path(f"/proc/{proc.pid}/task").iterdir()
              for pid in (task / "children").read_text().split()]
    for pid in horses:
        os.kill(pid, signal.SIGKILL)
    proc.signal(signal.SIGKILL)
    proc.popen.wait(5)


def in_process(config: Config) -> tuple[object, Services]:
    app = create_app(config)
    return app.test_client(), app.extensions["loopfix"]
