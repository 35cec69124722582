"""Bulk-deleters (seeds 000, 003): users who click delete (sometimes several times), the lead
delete job with its BulkGate lock (flows.locks), batches, throttle, pause and resume."""
from __future__ import annotations

from typing import Any, Generator

from loopfix.reference_app import policy as P
from loopfix.reference_app.flows.effects import Coord, drive
from loopfix.reference_app.flows.locks import keep_lock, release_lock, take_lock
from loopfix.sim.world import DB_COMMIT_S, LOCK_OP, Entry, LeadJob


class Deleters:
    """Bulk-delete requests and the lead job."""

    def bulk_deleters(self) -> Generator:
        b = self.scenario.bulk_delete
        rate = b.requests_per_hour / 3600.0
        while True:
            yield self.env.timeout(self.rng_leads.expovariate(rate))
            if self.env._now >= self.scenario.duration_s:
                return
            business = 1 + self.rng_leads.randrange(self.scenario.businesses)
            if not self.leads[business]:
                continue
            self._clients += 1
            client = f"d{self._clients}"
            offsets = sorted(self.rng_leads.uniform(0.0, b.click_spread_s) for _ in range(b.clicks_per_request))
            last = 0.0
            for at in offsets:
                yield self.env.timeout(at - last)
                last = at
                self.spawn(self.bulk_delete_request(business, client))

    def active_lead_job(self, business: int) -> LeadJob | None:
        for job in self.lead_jobs[business]:
            if job.status in ("queued", "running", "paused"):
                return job
        return None

    def bulk_delete_request(self, business: int, client: str) -> Generator:
        """POST /api/leads/bulk-delete: return the active job (fixed: one atomic step; seed:
        check, then insert a commit later; before: always a new job)."""
        mode = P.bulk_dedup_mode(self.policy)
        existing = None
        if mode != "new_job":
            existing = self.active_lead_job(business)
            if existing is None and mode == "check_then_insert":
                yield self.env.timeout(DB_COMMIT_S)
        if existing is not None:
            self.rec.lead_job_request("web", business_id=business, job_id=existing.job_id, existing=True,
                      client=client)
            return
        job = LeadJob(self.next_id(), business, sorted(self.leads[business]), self.env._now)
        self.lead_jobs[business].append(job)
        self.rec.lead_job_request("web", business_id=business, job_id=job.job_id, existing=False, client=client)
        for lead in job.remaining:
            self.rec.lead_requested("web", business_id=business, lead_id=lead, job_id=job.job_id)
        self.queue.put(Entry(lead_job=job))

    def lock_flow(self, flow, proc: str) -> Any:
        """Run a lock flow (flows/locks.py) on the model's Coordination, recording as `proc`."""
        coord, record = self.coord, self.record
        return drive(flow, lambda e: getattr(coord, e.op)(*e.args) if e.__class__ is Coord
                     else record(e.kind, proc, e.fields))

    def end_lead_job(self, job: LeadJob, status: str, proc: str) -> None:
        job.status = status
        self.lock_flow(release_lock(job.business_id, LOCK_OP, job.job_id), proc)
        self.rec.lead_job_end(proc, business_id=job.business_id, job_id=job.job_id, status=status,
                  processed=job.processed)

    def lead_job(self, job: LeadJob, proc: str) -> Generator:
        """One run of delete_leads_job: lock (a resumed run keeps its job's lock), batches with
        throttle, skip gone leads, retry a failed batch and stop after consecutive failures,
        pause keeping the lock after the runtime budget, release at the end."""
        p, env, b = self.policy, self.env, self.scenario.bulk_delete
        if job.status != "queued":
            return  # finished, or already picked up by another run
        ok = self.lock_flow(take_lock(job.business_id, LOCK_OP, job.job_id, job.started), proc)
        if not ok:
            self.end_lead_job(job, "failed", proc)  # seed 003: release runs on every failure
            return
        job.status, job.started, job.heartbeat_at = "running", True, env._now
        self.rec.lead_job_start(proc, business_id=job.business_id, job_id=job.job_id)
        started, failures = env._now, 0
        leads = self.leads[job.business_id]
        while job.remaining:
            job.heartbeat_at = env._now
            batch = P.batches(job.remaining, p)[0]
            yield env.timeout(self.rng_leads.uniform(*b.batch_s))
            if self.rng_leads.random() < b.batch_failure_rate:
                # the batch's transaction rolled back: the same batch is tried again
                failures += 1
                if P.bulk_should_stop(failures, p):
                    self.end_lead_job(job, "failed", proc)
                    return
                yield env.timeout(p.bulk_throttle_s)
                continue
            present = [lead for lead in batch if lead in leads]  # leads already gone are skipped
            if P.bulk_batch_fails(len(batch), len(present), p):
                self.end_lead_job(job, "failed", proc)
                return
            failures = 0
            for lead in present:
                leads.discard(lead)
                self.rec.lead_delete(proc, business_id=job.business_id, lead_id=lead, job_id=job.job_id)
            job.processed += len(batch)
            job.remaining = job.remaining[len(batch):]
            if not self.lock_flow(keep_lock(job.business_id, LOCK_OP, job.job_id), proc):
                self.end_lead_job(job, "failed", proc)
                return
            if not job.remaining:
                break
            yield env.timeout(p.bulk_throttle_s)
            if P.bulk_should_pause(env._now - started, p):
                job.status = "paused"
                self.rec.lead_job_pause(proc, business_id=job.business_id, job_id=job.job_id,
                          processed=job.processed)
                self.spawn(self.resume_later(job))
                return
        self.end_lead_job(job, "completed", proc)

    def resume_later(self, job: LeadJob) -> Generator:
        """The user comes back every resume_after_s and POSTs resume until it is taken
        (policy.bulk_resume_decision: a paused job at once, a crashed one once it looks dead)."""
        p, env = self.policy, self.env
        while True:
            yield env.timeout(self.scenario.bulk_delete.resume_after_s)
            lock_held = self.coord.lock_holder(job.business_id, LOCK_OP) == job.job_id
            d = P.bulk_resume_decision(job.status, env._now, job.heartbeat_at, job.queued_at, lock_held, p)
            if d.kind == "finished":
                return
            if d.kind == "resume":
                job.status, job.queued_at = "queued", env._now
                self.queue.put(Entry(lead_job=job))
                return
