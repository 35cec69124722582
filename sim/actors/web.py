"""The web side, as the app's routes run it: the recording webhook, the enqueue with its dedup
(flows.enqueue), the Redis-down fallback on the database, the playback poll (flows.playback)
and the enqueue API. Redis unreachable: a request that needs it gets 503 (RedisUnavailable),
or falls back on the database where the app does."""
from __future__ import annotations

from typing import Generator

from loopfix.reference_app import policy as P
from loopfix.reference_app.flows.effects import ActiveRun, Coord, CreateRun, Enqueue, FailStuck
from loopfix.reference_app.flows.enqueue import dedup_enqueue, enqueue_request, pending_run, recording_callback
from loopfix.reference_app.flows.playback import PollCall, Reply, decide, gate_and_act
from loopfix.sim.world import DB_COMMIT_S, REDIS_RTT_S, Call, EnqueueError, RedisUnavailable, Run, new_object, new_tuple

_END = object()  # next(flow, _END): the flow has ended
assert PollCall._fields == ("business_id", "call_sid", "has_recording_url", "file_ready", "run")  # new_tuple


class Web:
    """The app's request handlers in simulated time."""

    def webhook(self, call: Call, opened: bool = True) -> None:
        """The recording status callback (flows.enqueue.recording_callback): record it and
        enqueue the full job (000) by flows.enqueue.dedup_enqueue. Handled in the arrival
        process itself: one webhook per call, nothing to race with (never a replay), so no commit
        wait and no simulated time passes: the run is created at once (insert_run, `remember`:
        `opened`). With Redis reachable the callback yields the enqueue's steps itself
        (`inline`: one flow to drive), and Redis cannot become unreachable meanwhile (no time
        passes). Redis unreachable: the Enqueue effect, and the database fallback
        (drive_pending_run), or 503 (RedisUnavailable): Twilio's callback is not retried in the
        model, the recording is lost. `opened`: whether anyone will open the call's recording
        (decided at its arrival)."""
        paused = self.redis_paused  # paused, or restarting
        flow = recording_callback(call.business_id, call.call_sid, call.recording_sid, call.has_url, False,
                                  self.policy, not paused)
        send, ops, result = flow.send, self.coord.ops, None
        while True:
            # flow.send(result); for None (a record's answer), next(flow, _END): the same step,
            # and the flow's end without a StopIteration to catch (its value is not needed)
            if result is None:
                effect = next(flow, _END)
                if effect is _END:
                    return
            else:
                try:
                    effect = send(result)
                except StopIteration:
                    return
            if effect.__class__ is tuple:
                if effect[0] is Coord:  # (Coord, op, args): the enqueue's dedup
                    result = ops[effect[1]](*effect[2])
                else:  # (EmitValues, kind, values)
                    result = self.recorder_of[effect[1]]("web", *effect[2])
            elif effect.__class__ is CreateRun:  # the full job via the webhook (WEBHOOK_ENQUEUE)
                try:
                    self.insert_run(call, "full", "webhook", opened)
                    result = True
                except EnqueueError:
                    result = False
            else:  # Enqueue, with Redis unreachable
                if not self.orphans_swept:
                    return flow.close()  # RedisUnavailable: 503
                steps = self.drive_pending_run(call, "full", "webhook", wait=False, remember=opened)
                try:
                    steps.send(None)
                except StopIteration as stop:
                    result = self.reported_reason[stop.value]

    def commit_new_run(self, call: Call, job_type: str, via: str) -> Generator:
        """Create the run row and put its job on the queue (insert_run) after the commit's
        DB_COMMIT_S, where a concurrent request could slip in (clicks)."""
        yield DB_COMMIT_S
        return self.insert_run(call, job_type, via)

    def insert_run(self, call: Call, job_type: str, via: str, remember: bool = True) -> Run:
        """Create the run row and put its job on the queue; EnqueueError when enqueue raises.
        `latest_run` is what a later request about the call reads (a poll, an enqueue with Redis
        unreachable): `remember=False` for a call no request will be about (nobody opens its
        recording), so that its run and call are freed once the job is done instead of being
        held to the end of the run (a sweep point's 100 k calls)."""
        job_id = str(next(self.ids))  # next_id()
        run = new_object(Run)  # Run(job_id, call, job_type, "queued", now, enqueue_retry_max), every field
        run.job_id, run.call, run.job_type = job_id, call, job_type  # (three at most: no tuple built)
        run.status, run.created_at, run.rq_retries_left = "queued", self.env._now, self.enqueue_retry_max
        run.token = run.retry_count = run.fetch_retry_count = run.defer_count = 0
        run.started_at = run.heartbeat_at = run.next_attempt_at = run.alive_since = None
        if remember:
            self.latest_run[call.call_sid] = run
        if self.redis_paused:  # Redis unreachable: paused, or restarting
            if self.orphans_swept:
                self.active_runs[job_id] = run  # the row is the record; the sweeper enqueues it
                self.orphans[job_id] = (run, run.token, None)
                return run
            run.status = "failed"
            raise EnqueueError("enqueue raised")
        if self.semaphore_in_api and job_type == "download_only" \
                and not self.coord.acquire_slot(call.business_id, run.job_id):
            run.status = "failed"  # before: the API takes the download slot, and none was free
            raise EnqueueError("no download slot free")
        if self.retry_is_int[via]:  # policy.enqueue_retry_is_int, asked once per path
            run.status = "failed"
            raise EnqueueError("enqueue raised")
        self.active_runs[job_id] = run
        self.push(run)
        self.rec.job_enqueue("web", job_id=job_id, call_sid=call.call_sid, job_type=job_type, via=via)
        return run

    def request_enqueue(self, call: Call, job_type: str, via: str, dedup: bool = True) -> Generator:
        """Seed 001's enqueue with its dedup key; returns 'enqueued' | 'duplicate' | 'error', as
        the caller sees it (policy.reported_enqueue_reason)."""
        reason = yield from self.drive_enqueue(call, job_type, via, dedup)
        return self.reported_reason[reason]

    def drive_enqueue(self, call: Call, job_type: str, via: str, dedup: bool) -> Generator:
        """Seed 001's enqueue (flows.enqueue.dedup_enqueue, as recordings.enqueue_recording drives it):
        'enqueued' | 'duplicate' | 'error'; RedisUnavailable when Redis cannot answer the dedup
        claim and nothing falls back on the database. The run is created after the commit's
        DB_COMMIT_S (commit_new_run), where a concurrent request can slip in."""
        if dedup and self.redis_paused:  # Redis unreachable: paused, or restarting
            if self.orphans_swept:
                return (yield from self.drive_pending_run(call, job_type, via))
            raise RedisUnavailable  # the dedup claim's own round trip fails, before any run exists
        flow = dedup_enqueue(call.call_sid, job_type, via, dedup, self.policy)
        done, value = self.enqueue_steps(flow, None)
        while not done:  # a CreateRun
            try:
                yield from self.commit_new_run(call, job_type, via)
                created = True
            except EnqueueError:
                created = False
            done, value = self.enqueue_steps(flow, created)
        return value

    def enqueue_steps(self, flow, result) -> tuple[bool, str | None]:
        """Send `result` into the enqueue flow and do its Coordination effects until it ends,
        (True, its reason), or asks for the run to be created, (False, None)."""
        ops = self.coord.ops
        while True:
            try:
                effect = flow.send(result)
            except StopIteration as stop:
                return True, stop.value
            if effect.__class__ is CreateRun:
                return False, None
            result = ops[effect[1]](*effect[2])  # (Coord, op, args)

    def active_run_of(self, call: Call) -> bool:
        run = self.latest_run.get(call.call_sid)
        return run is not None and run.job_id in self.active_runs

    def drive_pending_run(self, call: Call, job_type: str, via: str, wait: bool = True,
                          remember: bool = True) -> Generator:
        """Redis unreachable with no dedup answer: flows.enqueue.pending_run on the model's runs
        (a run created now, while Redis is unreachable, is an orphan for the sweep)."""
        flow, result = pending_run(False, job_type, via), None
        while True:
            try:
                effect = flow.send(result)
            except StopIteration as stop:
                return stop.value
            if effect.__class__ is ActiveRun:
                result = self.active_run_of(call)
            elif wait:
                result = yield from self.commit_new_run(call, job_type, via)
            else:
                result = self.insert_run(call, job_type, via, remember)

    def request_playback(self, call: Call) -> Generator:
        """GET /api/recordings/file/<call_sid> → (status, retry_after_s, audio_ok): the app's
        flow (flows.playback.poll) driven in simulated time. Redis unreachable: a poll whose
        answer needs it gets 503."""
        p, now = self.policy, self.env._now
        if call.archive is False and now < call.calllog_at:
            return 404, None, False
        run = self.latest_run.get(call.call_sid)
        polled = new_tuple(PollCall, (call.business_id, call.call_sid, call.has_url, call.file_ready,
                                      run.state(now, p.heartbeat_interval_s) if run else None))
        # flows.playback.poll as its two parts: most polls are answered by `decide` alone (a file
        # ready), with no flow to run and no StopIteration to catch (-8.7 M instructions, full 1)
        first = decide(polled, now, p)
        if first.__class__ is Reply:
            return first.status, first.retry_after_s, first.serve and call.audio_ok
        flow = gate_and_act(polled, first, p)
        ops, send, result = self.coord.ops, flow.send, None
        while True:
            try:
                effect = send(result)
            except StopIteration as stop:
                reply = stop.value
                break
            kind = effect.__class__
            if kind is tuple and effect[0] is Coord:
                if self.redis_paused:
                    flow.close()
                    return 503, float(P.REDIS_UNAVAILABLE_RETRY_AFTER_S), False
                result = ops[effect[1]](*effect[2])
            elif kind is tuple:  # (EmitValues, kind, values)
                result = self.recorder_of[effect[1]]("web", *effect[2])
            elif kind is Enqueue:
                try:
                    result = yield from self.request_enqueue(call, effect.job_type, effect.via, effect.dedup)
                except RedisUnavailable:  # Redis went away since the gate answered
                    flow.close()
                    return 503, float(P.REDIS_UNAVAILABLE_RETRY_AFTER_S), False
            elif kind is FailStuck:
                result = self.fail_stuck(run, effect.reason)
            else:  # Gap: the round trip inside the seed's check-then-set
                result = yield REDIS_RTT_S
        return reply.status, reply.retry_after_s, reply.serve and call.audio_ok

    def fail_stuck(self, run: Run, why: str) -> None:
        if run.status not in P.ACTIVE_RUN_STATUSES:
            return
        run.status = "failed"
        run.alive_since = None
        self.active_runs.pop(run.job_id, None)
        self.rec.job_stuck("web", job_id=run.job_id, call_sid=run.call.call_sid, reason=why)
        self.coord.clear_dedup(run.call.call_sid, run.job_type)

    def post_enqueue(self, call: Call) -> Generator:
        """POST .../recording/enqueue (001; flows.enqueue.enqueue_request): reason → status by
        policy.enqueue_status. Redis unreachable: 503 redis_unavailable, nothing recorded."""
        flow, result = enqueue_request(call.call_sid, call.has_url, call.file_ready), None
        while True:
            try:
                effect = flow.send(result)
            except StopIteration:
                return
            if effect.__class__ is tuple:  # (EmitValues, kind, values)
                result = self.recorder_of[effect[1]]("web", *effect[2])
            else:  # Enqueue
                try:
                    result = yield from self.request_enqueue(call, effect.job_type, effect.via, effect.dedup)
                except RedisUnavailable:
                    return flow.close()
