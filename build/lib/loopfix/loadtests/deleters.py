"""Bulk-delete double-clickers (seed 000/003): a user selects every remaining lead of a business
and clicks delete `clicks_per_request` times within `click_spread_s`; then watches the job,
and resumes it `resume_after_s` after it paused (the BulkGate lock stays held meanwhile).
Requests arrive at the scenario's `requests_per_hour`. The app records the requests, the
job's runs and every deleted lead; the checker judges idempotency, the lock and deletions.
A resume answered 409 (the job runs again or finished: another watcher of the same job, after a
double-click, resumed it first) is the protocol's answer, not a Locust failure.
"""
from __future__ import annotations

import json

import gevent
import gevent.pool
from locust import FastHttpUser, task

from loopfix.loadtests.load_context import load_context
from loopfix.loadtests.players import auth

PAGE = 1000
FINISHED = ("completed", "failed")


class BulkDeleteUser(FastHttpUser):
    """One deleter for the whole run (fixed_count); each request watches its job in a greenlet."""

    fixed_count = 1

    def on_start(self) -> None:
        self.ctx = load_context()
        self.watchers = gevent.pool.Group()

    def wait_time(self) -> float:
        return 0.0

    @task
    def delete_all(self) -> None:
        ctx = self.ctx
        per_s = ctx.scenario.bulk_delete.requests_per_hour / 3600.0
        ctx.sleep(ctx.rng.expovariate(per_s) if per_s > 0 else 600.0)
        if per_s <= 0 or ctx.draining():
            return
        business = ctx.rng.choice(ctx.fixtures["businesses"])
        lead_ids = self.remaining(business)
        if not lead_ids:
            return
        b = ctx.scenario.bulk_delete
        clicks = [gevent.spawn(self.click, business, lead_ids, ctx.rng.uniform(0.0, b.click_spread_s))
                  for _ in range(b.clicks_per_request)]
        gevent.joinall(clicks)
        for job_id in {c.value for c in clicks if c.value is not None}:
            self.watchers.spawn(self.watch, business, job_id)

    def remaining(self, business: dict) -> list[int]:
        ids: list[int] = []
        after = 0
        while after is not None:
            resp = self.client.get(f"/api/leads?after={after}&limit={PAGE}", headers=auth(business), name="/api/leads")
            if resp.status_code != 200:
                return ids
            page = resp.json()
            ids += [lead["id"] for lead in page["leads"]]
            after = page["next_after"]
        return ids

    def click(self, business: dict, lead_ids: list[int], after_s: float) -> int | None:
        self.ctx.sleep(after_s)
        body = json.dumps({"lead_ids": lead_ids})
        resp = self.client.post("/api/leads/bulk-delete", data=body, name="/api/leads/bulk-delete",
                                headers={**auth(business), "Content-Type": "application/json"})
        return resp.json().get("job_id") if resp.status_code == 202 else None

    def watch(self, business: dict, job_id: int) -> None:
        """Poll the job; resume it `resume_after_s` after it paused; stop when it finished."""
        ctx = self.ctx
        while True:
            ctx.sleep(5.0)
            status = self.job_state(business, job_id)
            if status in FINISHED:
                return
            if status == "paused":
                ctx.sleep(ctx.scenario.bulk_delete.resume_after_s)
                self.resume(business, job_id)

    def job_state(self, business: dict, job_id) -> str | None:
        resp = self.client.get(f"/api/jobs/{job_id}", headers=auth(business), name="/api/jobs/[id]")
        return resp.json().get("status") if resp.status_code == 200 else None

    def resume(self, business: dict, job_id) -> None:
        with self.client.post(f"/api/jobs/{job_id}/resume", headers=auth(business), name="/api/jobs/[id]/resume",
                              catch_response=True) as resp:
            if resp.status_code in (202, 409):
                resp.success()
