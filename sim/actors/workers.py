"""The RQ workers, their stuck/orphan sweeper, and the recording job they run (seed 000's
retries, seed 004's slots and deferral, the download) — with what a crash loses and what RQ
re-runs. Parked jobs are promoted by the workers' ticker, sim/ticker.py."""
from __future__ import annotations

from typing import Any, Generator

import simpy

from loopfix.reference_app import policy as P
from loopfix.reference_app.flows.effects import ClaimRun, Coord, Emit, Finish, Park, RetryByRQ, Save, Sleep, drive
from loopfix.reference_app.flows.recording import defer, retry_later, take_slot
from loopfix.reference_app.flows.sweep import requeue_orphan, requeue_stuck
from loopfix.sim.world import Entry, Run


class Workers:
    """Workers, scheduler and sweeper, and the recording job."""

    def worker(self, w: int) -> Generator:
        name, queue, down = f"worker-{w}", self.queue, self.worker_down
        items = queue.items
        while True:
            entry = None
            try:
                while down[w] or self.redis_paused:
                    yield self.worker_wake[w]
                entry = items.popleft() if items else (yield from queue.take())
                if down[w] or self.redis_paused:
                    queue.push_front(entry)
                    continue
                self.busy += 1
                try:
                    if entry.lead_job is not None:
                        self.worker_job[w] = entry.lead_job
                        yield from self.lead_job(entry.lead_job, name)
                    else:
                        yield from self.recording_job(entry, w, name)
                finally:
                    self.busy -= 1
                    self.worker_job[w] = None
            except simpy.Interrupt:
                if entry is not None and entry.run is not None and entry.run.status == "running":
                    self.lose_in_crash(entry.run, w)
                elif entry is not None and entry.run is not None and entry.run.token == entry.token:
                    # popped, not started yet (the job's overhead): RQ's status stays 'dequeued' and
                    # nothing re-queues the job but the sweep (policy.run_orphaned)
                    self.orphans[entry.run.job_id] = (entry.run, entry.token, self.env._now)
                elif entry is not None and entry.lead_job is not None and entry.lead_job.status == "running":
                    # the run dies mid-batch (rolled back): the row stays 'running', the lock
                    # stays until its TTL, and the user resumes it once it is evidently dead
                    self.spawn(self.resume_later(entry.lead_job))

    def wake_workers(self) -> None:
        for i, ev in enumerate(self.worker_wake):
            if not ev.triggered:
                ev.succeed()
            self.worker_wake[i] = self.env.event()

    def sweeper(self) -> Generator:
        """cleanup_stuck_recording_jobs every heartbeat interval: a stuck run is re-queued under
        a new token, spending one retry, or failed when its retries are spent. The sweep runs in
        the workers' tickers, so not while every worker is down (nor while Redis is paused)."""
        p, env = self.policy, self.env
        while True:
            yield env.timeout(p.heartbeat_interval_s)
            if self.redis_paused or all(self.worker_down):
                continue
            if self.orphans:
                self.sweep_orphans()
            now, alive = env._now, self.worker_alive()
            skip_waiting, skip_live = alive and self.waiting_never_stuck_while_alive, self.live_run_never_stuck
            idle = skip_waiting and skip_live and not self.orphans  # every run skipped: nothing to find
            for run in list(self.active_runs.values()):
                waiting = run.status in P.WAITING_RUN_STATUSES
                if waiting and skip_waiting:
                    continue
                if skip_live and run.alive_since is not None and run.status == "running":
                    continue
                idle = False
                why = P.stuck_reason(run.state(now, p.heartbeat_interval_s), now, p, alive if waiting else None)
                if why is None:
                    continue
                self.sweep_flow(requeue_stuck(run.job_id, run.call.call_sid, run.job_type, run.retry_count, why,
                                              run.call.business_id, run.call.recording_sid, run.job_id, p), run)
            if idle:  # and it stays so until an outage: no tick until one is near (sim.ticker)
                yield from self.sweeper_idle()

    def sweep_orphans(self) -> None:
        """jobs.requeue_orphan: a waiting run no RQ job will run is enqueued again once
        policy.run_orphaned says so (never with `orphan_runs_not_swept`)."""
        p, now = self.policy, self.env._now
        for job_id, (run, token, dequeued_at) in list(self.orphans.items()):
            if run.token != token or run.status not in P.WAITING_RUN_STATUSES or job_id not in self.active_runs:
                del self.orphans[job_id]  # re-queued since, or finished
                continue
            job_status = None if dequeued_at is None else "dequeued"
            if not P.run_orphaned(run.state(now, p.heartbeat_interval_s), job_status, now, p, dequeued_at):
                continue
            del self.orphans[job_id]
            self.sweep_flow(requeue_orphan(run.job_id, run.call.call_sid, run.job_type), run)

    def sweep_flow(self, flow, run: Run) -> Any:
        """Run a sweep flow (flows/sweep.py) on `run`, recording as the sweeper. One sweep at a
        time in the model: its ClaimRun always wins."""
        coord, record = self.coord, self.record

        def handle(effect):
            kind = effect.__class__
            if kind is ClaimRun:
                for name, value in effect.fields.items():
                    if name == "created_now":
                        run.created_at = self.env._now
                    elif name != "error":  # the model keeps no error text
                        setattr(run, name, value)
                run.alive_since = None
                if run.status == "failed":
                    self.active_runs.pop(run.job_id, None)
                return True
            if kind is Emit:
                return record(effect.kind, "sweeper", effect.fields)
            if kind is Coord:
                return getattr(coord, effect.op)(*effect.args)
            if kind is Park:
                return self.push(run, effect.delay_s, via=effect.via)
            raise TypeError(f"not a sweep effect: {effect!r}")

        return drive(flow, handle)

    def recording_job(self, entry: Entry, w: int, proc: str) -> Generator:
        run, env = entry.run, self.env
        assert run is not None
        if run.status in ("done", "failed") or run.token != entry.token:
            return  # superseded (re-queued as stuck) or finished: the app's job does nothing
        self.worker_job[w] = run
        yield env.timeout(self.job_overhead_s)
        call, now = run.call, env._now
        run.status, run.started_at, run.heartbeat_at = "running", now, now
        run.alive_since = now if self.beats else None
        coord, job_id, sid = self.coord, run.job_id, call.recording_sid
        self.rec.job_start(proc, job_id=job_id, call_sid=call.call_sid,
                           attempt=P.run_attempt(run.retry_count, run.fetch_retry_count), worker=proc)
        if now < call.calllog_at:
            yield from self.job_flow(retry_later(job_id, call.call_sid, run.retry_count, run.fetch_retry_count,
                                                 "calllog", "CallLog not found", self.policy), run, proc)
            return
        if not self.semaphore_in_api:  # before: the API took the slot (download_only jobs), or none is taken
            flow = take_slot(job_id, call.business_id, job_id, call.call_sid, self.policy)
            done, ok = self.flow_now(flow, run, proc, None)
            if not done:  # blocking_slot_loop: waits in the worker
                ok = yield from self.job_flow(flow, run, proc, ok)
            if not ok:
                yield from self.defer_job(run, proc)
                return
        # As the app's _download_with_slot: the slot is released last (its `finally`), after
        # the job's own end — a deferral for a recording in flight elsewhere included.
        if not coord.claim_inflight(sid, job_id):
            yield from self.defer_job(run, proc)
            self.release_slot(run, proc)
            return
        ok = yield from self.fetch_audio(run, proc)
        if ok and run.job_type == "full" and self.transcribe_s[1] > 0:
            # the scenario's transcription (no step of the reference app) holds no claim or slot
            coord.release_inflight(sid, job_id)
            self.release_slot(run, proc)
            yield env.timeout(self.rng_twilio.uniform(*self.transcribe_s))
            self.finish(run, "done", proc)
            return
        if ok:
            self.finish(run, "done", proc)
        else:
            yield from self.job_flow(retry_later(job_id, call.call_sid, run.retry_count, run.fetch_retry_count,
                                                 "fetch", "audio not available", self.policy), run, proc)
        coord.release_inflight(sid, job_id)
        self.release_slot(run, proc)

    def job_flow(self, flow, run: Run, proc: str, pending: Any = None) -> Generator:
        """Run one of the recording job's flows (flows/recording.py) on `run` in simulated time,
        recording as `proc`; returns the flow's value. Effects are done at once (`flow_now`)
        until one needs simulated time (a Sleep: the seeds' faults only); `pending`: the Sleep
        a flow already started with flow_now waits on."""
        done, value = self.flow_now(flow, run, proc, None) if pending is None else (False, pending)
        while not done:  # value: the Sleep the flow waits on
            done, value = self.flow_now(flow, run, proc, (yield self.env.timeout(value.seconds)))
        return value

    def flow_now(self, flow, run: Run, proc: str, result: Any) -> tuple[bool, Any]:
        """Send `result` into `flow` and do its effects until it ends, (True, its value), or
        yields a Sleep, (False, the Sleep)."""
        coord = self.coord
        while True:
            try:
                effect = flow.send(result)
            except StopIteration as stop:
                return True, stop.value
            kind = effect.__class__
            if kind is Coord:
                result = getattr(coord, effect.op)(*effect.args)
            elif kind is Emit:
                result = self.recorder_of[effect.kind](proc, **effect.fields)
            elif kind is Save:
                for name, value in effect.fields.items():
                    if name == "next_attempt_in_s":
                        run.next_attempt_at = self.env._now + value
                    elif name != "error":  # the model keeps no error text
                        setattr(run, name, value)
                if "status" in effect.fields:
                    run.alive_since = None
                result = None
            elif kind is Park:
                result = self.push(run, effect.delay_s, via=effect.via)
            elif kind is Sleep:
                return False, effect
            elif kind is Finish:
                result = self.finish(run, effect.status, proc)
            elif kind is RetryByRQ:  # seed: RQ's Retry(max=3) re-runs it at once, or gives up
                if run.rq_retries_left > 0:
                    run.rq_retries_left -= 1
                    result = self.push(run)
                else:
                    result = self.active_runs.pop(run.job_id, None)  # RQ's failed registry; the row stays 'queued'
            else:
                raise TypeError(f"not a recording job effect: {effect!r}")

    def finish(self, run: Run, status: str, proc: str) -> None:
        run.status, run.alive_since = status, None
        self.active_runs.pop(run.job_id, None)
        self.rec.job_end(proc, job_id=run.job_id, call_sid=run.call.call_sid, outcome=status)

    def release_slot(self, run: Run, proc: str) -> None:
        freed = self.coord.release_slot(run.call.business_id, run.job_id)
        self.rec.slot_release(proc, job_id=run.job_id, business_id=run.call.business_id, freed=freed)

    def release_claims(self, run: Run) -> None:
        self.coord.release_inflight(run.call.recording_sid, run.job_id)
        self.coord.release_slot(run.call.business_id, run.job_id)

    def defer_job(self, run: Run, proc: str) -> Generator:
        """No free slot, or the recording in flight elsewhere (004): flows.recording.defer."""
        yield from self.job_flow(defer(run.job_id, run.call.call_sid, run.defer_count, self.policy), run, proc)

    def fetch_audio(self, run: Run, proc: str) -> Generator:
        """Fetch the recording once; True when the file is (now) complete."""
        p, env, call = self.policy, self.env, run.call
        sid = call.recording_sid
        if self.download_idempotent and call.file_ready:
            self.rec.download_end(proc, job_id=run.job_id, call_sid=call.call_sid, recording_sid=sid,
                      ok=True, skipped=True, bytes=0)
            return True
        self.rec.download_start(proc, job_id=run.job_id, call_sid=call.call_sid, recording_sid=sid)
        served = call.served
        fails = self.fetch_fails()
        took = call.download_s if self.twilio is self.scenario.twilio else self.download_time(self.twilio)
        yield env.timeout(took if not fails and served != "missing" else min(took, 5.0))
        if fails or served == "missing":
            self.rec.download_end(proc, job_id=run.job_id, call_sid=call.call_sid, recording_sid=sid,
                      ok=False, skipped=False, bytes=0)
            return False
        size = 960_000 if served == "audio" else 1_200
        if self.download_idempotent and call.file_ready:
            # two racing downloads: the unique RecordingSid row says the other one completed first,
            # but the bytes were fetched twice (as in the app, skipped means nothing was fetched)
            self.rec.download_end(proc, job_id=run.job_id, call_sid=call.call_sid, recording_sid=sid,
                      ok=True, skipped=False, bytes=size)
            return True
        call.file_ready, call.audio_ok = True, served == "audio"
        self.rec.download_end(proc, job_id=run.job_id, call_sid=call.call_sid, recording_sid=sid,
                  ok=True, skipped=False, bytes=size)
        return True

    def lose_in_crash(self, run: Run, w: int) -> None:
        """A crashed worker's job: its heartbeat stops, its claims expire with their TTLs, and
        RQ re-runs it (same RQ id) when the worker comes back, if its retries are not spent."""
        now = self.env._now
        last_beat = run.state(now, self.policy.heartbeat_interval_s).heartbeat_at
        run.heartbeat_at, run.alive_since = last_beat, None
        self.coord.lapse_claims(run.call.business_id, run.call.recording_sid, run.job_id, last_beat or now)
        self.crashed.append((run, run.token))

    def rq_requeue_crashed(self) -> None:
        for run, token in self.crashed:
            if run.token != token or run.status not in ("running",):
                continue  # the sweeper already re-queued or failed it
            self.rec.job_end("rq", job_id=run.job_id, call_sid=run.call.call_sid, outcome="crashed")
            if run.rq_retries_left > 0:
                run.rq_retries_left -= 1
                self.queue.put(Entry(run=run, token=token))
                self.rec.job_enqueue("rq", job_id=run.job_id, call_sid=run.call.call_sid,
                          job_type=run.job_type, via="requeue")
        self.crashed = []
