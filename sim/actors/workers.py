"""The RQ workers, their stuck/orphan sweeper, and the recording job they run (seed 000's
retries, seed 004's slots and deferral, the download) — with what a crash loses and what RQ
re-runs. Parked jobs are promoted by the workers' ticker, sim/ticker.py."""
from __future__ import annotations

from typing import Any, Generator

import simpy

from loopfix.reference_app import policy as P
from loopfix.reference_app.flows.effects import (ClaimRun, Coord, FetchAudio, Finish, Park, Release, RetryByRQ, Save,
    Sleep, StartRun, Transcribe, drive, in_schema_order)
from loopfix.reference_app.flows.recording import recording_job
from loopfix.reference_app.flows.sweep import Focus, JobStatus, SweptRun, sweep
from loopfix.sim.world import Entry, Run


FETCHED_OK, FETCH_FAILED = ("ok", ""), ("transient", "")
# The job's own records are made here on every job, by their recorders called positionally (a
# call by keyword costs about twice as much, measured): in these fields' order.
POSITIONAL = {"job.start": ("job_id", "call_sid", "attempt", "worker"), "job.end": ("job_id", "call_sid", "outcome"),
              "download.start": ("job_id", "call_sid", "recording_sid"),
              "download.end": ("job_id", "call_sid", "recording_sid", "ok", "skipped", "bytes"),
              "slot.release": ("job_id", "business_id", "freed")}
in_schema_order("sim.actors.workers", POSITIONAL)
_END = object()  # next(flow, _END): the job's flow has ended


class Workers:
    """Workers, scheduler and sweeper, and the recording job."""

    def worker(self, w: int) -> Generator:
        name, queue, down = f"worker-{w}", self.queue, self.worker_down
        items, idle, flow = queue.items, queue.wait(), None  # idle: the queue's line of waiters (always the same)
        job_overhead_s, policy = self.job_overhead_s, self.policy
        ops, recorder_of = self.coord.ops, self.recorder_of
        transcribes = self.transcribe_s[1] > 0  # a full job's transcription takes time
        env, active_runs, beats, run_attempt = self.env, self.active_runs, self.beats, P.run_attempt
        rec, idempotent, twilio = self.rec, self.download_idempotent, self.scenario.twilio
        job_start, job_end = rec.job_start, rec.job_end
        download_start, download_end = rec.download_start, rec.download_end
        release_inflight, release_slot, slot_release = ops["release_inflight"], ops["release_slot"], rec.slot_release
        coord, release, worker_job = Coord, Release, self.worker_job
        while True:
            entry = None
            try:
                while down[w] or self.redis_paused:
                    yield self.worker_wake[w]
                entry = items.popleft() if items else (yield idle)  # nothing interrupts an idle worker
                if down[w] or self.redis_paused:
                    queue.push_front(entry)
                    continue
                try:  # busy: worker_job[w] is set while a job runs (the sampler counts them)
                    run = entry.run
                    if entry.lead_job is not None:
                        worker_job[w] = entry.lead_job
                        yield from self.lead_job(entry.lead_job, name)
                    elif run.status in ("done", "failed") or run.token != entry.token:
                        pass  # superseded (re-queued as stuck) or finished: the app's job does nothing
                    else:
                        # The app's job (flows.recording.recording_job) on the run in simulated
                        # time, inline: a generator and two calls less per job. The common
                        # effects (StartRun, the Coordination calls, FetchAudio, Finish) are done
                        # here, inline too (a method call each cost more than its body, measured),
                        # the rest by job_effect; the download, the transcription and a Sleep (the
                        # seeds' faults only) take simulated time. A run's job_id and call never change.
                        worker_job[w] = run
                        yield job_overhead_s
                        call, job_id = run.call, run.job_id
                        call_sid = call.call_sid
                        transcribe = transcribes and run.job_type == "full"
                        # a Job, as a tuple; flow.send called as a method (cheaper than a bound send kept)
                        flow = recording_job((job_id, call_sid, call.business_id, run.retry_count,
                                              run.fetch_retry_count, run.defer_count, job_id, job_id, transcribe),
                                             policy)
                        result = None
                        while True:
                            # flow.send(result); for None, next(flow, _END): the same step, and
                            # the flow's end (after Release, its last effect) with no StopIteration
                            # raised (the job's value is the app's, not needed here). Measured on
                            # the day scenario's hour: -8.6 M instructions; Release (one resume
                            # and one effect less per job) -22.8 M.
                            if result is None:
                                effect = next(flow, _END)
                                if effect is _END:
                                    break
                            else:
                                try:
                                    effect = flow.send(result)
                                except StopIteration:
                                    break
                            kind = effect.__class__
                            if kind is tuple:  # (Coord, op, args[, kind, values]), Release or Emit
                                tag = effect[0]
                                if tag is coord:
                                    result = ops[effect[1]](*effect[2])
                                    if len(effect) > 3:  # recorded: values, then the answer
                                        recorder_of[effect[3]](name, *effect[4], result)
                                elif tag is release:  # (Release, claim, slot, values): the job's end
                                    if effect[1] is not None:
                                        release_inflight(*effect[1])
                                    slot_release(name, *effect[3], release_slot(*effect[2]))
                                    result = None
                                else:
                                    result = recorder_of[effect[1]](name, **effect[2])
                            elif kind is FetchAudio:  # the download, once: skipped when the file is complete
                                if idempotent and call.file_ready:
                                    download_end(name, job_id, call_sid, call.recording_sid, True, True, 0)
                                    result = FETCHED_OK
                                    continue
                                download_start(name, job_id, call_sid, call.recording_sid)
                                fails = self.fetch_fails() or call.served == "missing"
                                took = call.download_s if self.twilio is twilio else self.download_time(self.twilio)
                                yield min(took, 5.0) if fails else took
                                if fails:
                                    download_end(name, job_id, call_sid, call.recording_sid, False, False, 0)
                                    result = FETCH_FAILED
                                    continue
                                served = call.served
                                # two racing downloads, when the file is complete now: the unique
                                # RecordingSid row says the other one completed first, but the bytes
                                # were fetched twice (as in the app, skipped means nothing was fetched)
                                if not (idempotent and call.file_ready):
                                    call.file_ready, call.audio_ok = True, served == "audio"
                                download_end(name, job_id, call_sid, call.recording_sid, True, False,
                                             960_000 if served == "audio" else 1_200)
                                result = FETCHED_OK
                            elif kind is Finish:
                                status = effect.status
                                run.status, run.alive_since = status, None
                                active_runs.pop(job_id, None)
                                job_end(name, job_id, call_sid, status)
                                result = None
                            elif kind is StartRun:
                                now = env._now
                                run.status, run.started_at, run.heartbeat_at = "running", now, now
                                run.alive_since = now if beats else None
                                job_start(name, job_id, call_sid, run_attempt(run.retry_count, run.fetch_retry_count),
                                          name)
                                result = None if now < call.calllog_at else call.recording_sid
                            elif kind is Sleep:
                                result = yield effect.seconds
                            elif kind is Transcribe:
                                result = yield self.rng_twilio.uniform(*self.transcribe_s)
                            else:
                                result = self.job_effect(effect, run, name)
                finally:
                    worker_job[w] = None
            except simpy.Interrupt:
                flow = None  # the job's flow is dropped (closed now, as its worker dies: it releases nothing)
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
        """cleanup_stuck_recording_jobs (flows.sweep.sweep) every heartbeat interval. The sweep
        runs in the workers' tickers, so not while every worker is down (nor while Redis is
        paused). Runs that can be neither stuck nor orphaned now are left out (the policy's
        answer for them is known: world.waiting_never_stuck_while_alive, live_run_never_stuck)."""
        p, env, active_runs, orphans = self.policy, self.env, self.active_runs, self.orphans
        hb = p.heartbeat_interval_s
        while True:
            yield hb
            if self.redis_paused or all(self.worker_down):
                continue
            now = env._now
            skip_waiting = self.waiting_never_stuck_while_alive and self.worker_alive()
            skip_live = self.live_run_never_stuck
            runs = [SweptRun(run, run.job_id, run.call.call_sid, run.job_type, run.retry_count, run.call.business_id,
                             run.call.recording_sid, run.job_id, run.state(now, hb))
                    for run in list(active_runs.values())
                    if not (skip_waiting and run.status in P.WAITING_RUN_STATUSES and run.job_id not in orphans)
                    and not (skip_live and run.alive_since is not None and run.status == "running")]
            self.sweep_flow(sweep(runs, now, p))
            if not runs and skip_waiting and skip_live and not orphans:
                yield from self.sweeper_idle()  # nothing to find until an outage (sim.ticker)

    def sweep_flow(self, flow) -> Any:
        """Run the sweep flow on the model's runs, recording as the sweeper. One sweep at a time
        in the model: its ClaimRun always wins. RQ's status of a run's job: 'dequeued' for one a
        worker popped and died before starting, none for one created while Redis was down (the
        orphans), else a live one."""
        coord, record, orphans = self.coord, self.record, self.orphans
        run = None

        def answer(effect):
            nonlocal run
            kind = effect.__class__
            if kind is Focus:
                run = effect.ref
                return None
            if kind is JobStatus:
                orphan = orphans.get(run.job_id)
                if orphan is None or orphan[0] is not run or orphan[1] != run.token:
                    if orphan is not None:
                        del orphans[run.job_id]  # re-queued since
                    return "queued", None
                return (None, None) if orphan[2] is None else ("dequeued", orphan[2])
            if kind is ClaimRun:
                for name, value in effect.fields.items():
                    if name == "created_now":
                        run.created_at = self.env._now
                    elif name != "error":  # the model keeps no error text
                        setattr(run, name, value)
                run.alive_since = None
                orphans.pop(run.job_id, None)
                if run.status == "failed":
                    self.active_runs.pop(run.job_id, None)
                return True
            if kind is tuple:  # (Coord, op, args) or (Emit, kind, fields)
                if effect[0] is Coord:
                    return coord.ops[effect[1]](*effect[2])
                return record(effect[1], "sweeper", effect[2])
            if kind is Park:
                return self.push(run, effect.delay_s, via=effect.via)
            raise TypeError(f"not a sweep effect: {effect!r}")

        return drive(flow, answer)

    def job_effect(self, effect: Any, run: Run, proc: str) -> Any:
        """The recording job's rarer effects (Save, Park, RetryByRQ): their result. The
        Coordination calls, Release, records, StartRun, FetchAudio and Finish are done in the
        worker's loop."""
        kind = effect.__class__
        if kind is Save:
            for name, value in effect.fields.items():
                if name == "next_attempt_in_s":
                    run.next_attempt_at = self.env._now + value
                elif name != "error":  # the model keeps no error text
                    setattr(run, name, value)
            if "status" in effect.fields:
                run.alive_since = None
            return None
        if kind is Park:
            return self.push(run, effect.delay_s, via=effect.via)
        if kind is RetryByRQ:  # seed: RQ's Retry(max=3) re-runs it at once, or gives up
            if run.rq_retries_left > 0:
                run.rq_retries_left -= 1
                return self.push(run)
            return self.active_runs.pop(run.job_id, None)  # RQ's failed registry; the row stays 'queued'
        raise TypeError(f"not a recording job effect: {effect!r}")

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
