"""Bulk-deleters (seeds 000, 003): users who click delete (sometimes several times), and the
drivers of the app's request and delete run (flows.delete) in simulated time; the user's
resume."""
from __future__ import annotations

from typing import Generator

from loopfix.reference_app import policy as P
from loopfix.reference_app.flows.delete import delete_run, request_bulk_delete
from loopfix.reference_app.flows.effects import (ActiveLeadJob, ClaimJob, Clock, Commit, Coord, DeleteBatch, EndJob,
    EnqueueLeadJob, NewLeadJob, OwnedLeads, Sleep)
from loopfix.sim.world import DB_COMMIT_S, LOCK_OP, Entry, LeadJob


DONE, ROLLED_BACK = ("done",), ("error", "the batch's transaction rolled back")


class Deleters:
    """Bulk-delete requests and the lead job."""

    def bulk_deleters(self) -> Generator:
        b = self.scenario.bulk_delete
        rate = b.requests_per_hour / 3600.0
        while True:
            yield self.rng_leads.expovariate(rate)
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
                yield at - last
                last = at
                self.spawn(self.bulk_delete_request(business, client))

    def active_lead_job(self, business: int) -> LeadJob | None:
        for job in self.lead_jobs[business]:
            if job.status in ("queued", "running", "paused"):
                return job
        return None

    def bulk_delete_request(self, business: int, client: str) -> Generator:
        """POST /api/leads/bulk-delete (flows.delete.request_bulk_delete): the active job, or a
        new one; the seed's check and insert a commit apart (its Gap)."""
        flow, result, job = request_bulk_delete(business, client, self.policy), None, None
        while True:
            try:
                effect = flow.send(result)
            except StopIteration:
                return
            kind = effect.__class__
            if kind is tuple:  # (Emit, kind, fields)
                result = self.recorder_of[effect[1]]("web", **effect[2])
            elif kind is ActiveLeadJob:
                active = self.active_lead_job(business)
                result = None if active is None else active.job_id
            elif kind is NewLeadJob:
                active = self.active_lead_job(business) if effect.join else None
                if active is not None:  # the one-active-job constraint: join the winner
                    result = (active.job_id, True)
                else:
                    job = LeadJob(self.next_id(), business, sorted(self.leads[business]), self.env._now)
                    self.lead_jobs[business].append(job)
                    result = (job.job_id, False)
            elif kind is OwnedLeads:
                result = job.remaining
            elif kind is EnqueueLeadJob:
                result = self.queue.put(Entry(lead_job=job))
            else:  # Gap: the seed's work between its check and its insert
                result = yield DB_COMMIT_S

    def lead_job(self, job: LeadJob, proc: str) -> Generator:
        """One run of delete_leads_job (flows.delete.delete_run) in simulated time: a batch
        takes its scenario's time and fails (rolls back) at its rate."""
        if job.status != "queued":
            return  # finished, or already picked up by another run
        env, ops, recorder_of = self.env, self.coord.ops, self.recorder_of
        flow, result, pending = delete_run(job.business_id, job.job_id, job.started, self.policy), None, None
        while True:
            try:
                effect = flow.send(result)
            except StopIteration:
                return
            kind = effect.__class__
            if kind is tuple:  # (Coord, op, args) or (Emit, kind, fields)
                if effect[0] is Coord:
                    result = ops[effect[1]](*effect[2])
                else:
                    result = recorder_of[effect[1]](proc, **effect[2])
            elif kind is DeleteBatch:
                result = yield from self.delete_batch(job)
                pending = result if result[0] == "batch" else None
            elif kind is Commit:
                if effect.keep and pending is not None:
                    _, asked, deleted, _left = pending
                    leads = self.leads[job.business_id]
                    for lead in deleted:
                        leads.discard(lead)
                    job.processed += asked
                    job.remaining = job.remaining[asked:]
                result = pending = None
            elif kind is Sleep:
                result = yield effect.seconds
            elif kind is Clock:
                result = env._now
            elif kind is ClaimJob:
                job.status, job.started, job.heartbeat_at = "running", True, env._now
                result = True
            elif kind is EndJob:
                job.status = effect.status
                if effect.status == "paused":
                    self.spawn(self.resume_later(job))
                result = job.processed
            else:
                raise TypeError(f"not a delete run effect: {effect!r}")

    def delete_batch(self, job: LeadJob) -> Generator:
        """One batch's transaction, uncommitted (the DeleteBatch result)."""
        if not job.remaining:
            return DONE
        b, env = self.scenario.bulk_delete, self.env
        job.heartbeat_at = env._now
        batch = P.batches(job.remaining, self.policy)[0]
        yield self.rng_leads.uniform(*b.batch_s)
        if self.rng_leads.random() < b.batch_failure_rate:
            return ROLLED_BACK
        leads = self.leads[job.business_id]
        return "batch", len(batch), [lead for lead in batch if lead in leads], len(job.remaining) - len(batch)

    def resume_later(self, job: LeadJob) -> Generator:
        """The user comes back every resume_after_s and POSTs resume until it is taken
        (policy.bulk_resume_decision: a paused job at once, a crashed one once it looks dead)."""
        p, env = self.policy, self.env
        while True:
            yield self.scenario.bulk_delete.resume_after_s
            lock_held = self.coord.lock_holder(job.business_id, LOCK_OP) == job.job_id
            d = P.bulk_resume_decision(job.status, env._now, job.heartbeat_at, job.queued_at, lock_held, p)
            if d.kind == "finished":
                return
            if d.kind == "resume":
                job.status, job.queued_at = "queued", env._now
                self.queue.put(Entry(lead_job=job))
                return
