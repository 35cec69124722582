"""The worker process: an RQ worker plus a ticker thread that promotes parked jobs when due
(coordination.promote_due, finely enough for the time scale) and sweeps stuck runs by
heartbeat (jobs.cleanup_stuck_recording_jobs) — neither depends on RQ's own maintenance,
which runs on real-time intervals of seconds to minutes. Each promotion of a recording job is
recorded as `job.enqueue` with via `retry` (a backoff retry: its run waits in `retry_wait`) or
`defer` (a slot deferral), so the checker can judge a retry that comes too late."""
from __future__ import annotations

import itertools
import logging
import threading
import time

import redis
from rq import SimpleWorker, Worker

from loopfix.reference_app.coordination import crash_point_on, promote_due
from loopfix.reference_app.jobs import HANG_AFTER_DEQUEUE, JOB_FUNC, cleanup_stuck_recording_jobs, hang_once
from loopfix.reference_app.models import RecordingRun
from loopfix.reference_app.policy import Policy
from loopfix.reference_app.services import QUEUES, Services, set_services

log = logging.getLogger(__name__)


def tick_seconds_for(policy: Policy) -> float:
    """Wall seconds between promotions: half a policy second, within [5 ms, 500 ms]."""
    return min(0.5, max(0.005, policy.wall(0.5)))


def tick_seconds(svc: Services) -> float:
    return tick_seconds_for(svc.policy)


class Ticker(threading.Thread):
    def __init__(self, svc: Services, queue_names=QUEUES):
        super().__init__(name="loopfix-ticker", daemon=True)
        self.svc, self.queue_names = svc, queue_names
        self.stop_event = threading.Event()

    def run(self) -> None:
        queues = [self.svc.queue(name) for name in self.queue_names]
        tick = tick_seconds(self.svc)
        sweep_every = max(tick, self.svc.policy.wall(self.svc.policy.heartbeat_interval_s))
        since_sweep = sweep_every
        while not self.stop_event.wait(tick):
            try:
                promote_due(queues, on_promote=self.record_promotion)
                since_sweep += tick
                if since_sweep >= sweep_every:
                    self.svc.coord.worker_beat()
                    since_sweep = 0.0
                    cleanup_stuck_recording_jobs(self.svc)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                continue  # Redis paused or restarting: try again next tick
            except Exception:
                log.exception("ticker pass failed")

    def record_promotion(self, job) -> None:
        """History: the backoff (or deferral) of a recording job ended and it is queued again."""
        if job.func_name != JOB_FUNC or not self.svc.history.enabled:
            return
        with self.svc.sessions() as s:
            run = s.get(RecordingRun, job.args[0])
            if run is not None:
                self.svc.history.emit("job.enqueue", job_id=str(run.id), call_sid=run.call_sid,
                                      job_type=run.job_type, via="retry" if run.status == "retry_wait" else "defer")


def hanging_after_dequeue(worker_class: type[Worker], svc: Services) -> type[Worker]:
    """Crash point HANG_AFTER_DEQUEUE: the worker hangs once after it popped a job off the queue
    and before a work horse started it — RQ still calls the job queued, no queue holds it."""

    class HangAfterDequeue(worker_class):
        def execute_job(self, job, queue):
            hang_once(svc, HANG_AFTER_DEQUEUE)
            super().execute_job(job, queue)

    return HangAfterDequeue


def run_worker(svc: Services, *, burst: bool = False, simple: bool = False, name: str | None = None) -> None:
    set_services(svc)
    # Build the lazy services before the ticker thread starts: cached_property holds a lock
    # while building, and a fork (RQ's work horse) taken mid-build would inherit it held.
    svc.sessions, svc.history, svc.coord  # noqa: B018
    conn = redis.Redis.from_url(svc.config.redis_url)  # no short socket timeout: RQ blocks on dequeue
    ticker = Ticker(svc)
    ticker.start()
    worker_class = SimpleWorker if simple else Worker
    if crash_point_on(HANG_AFTER_DEQUEUE):
        worker_class = hanging_after_dequeue(worker_class, svc)
    try:
        for round_ in itertools.count():
            # RQ's worker quits on a Redis error outside its dequeue loop (a restart mid-job):
            # work again under a fresh name (the old one may still look registered) until
            # asked to stop, so a Redis restart never leaves the queue without workers.
            worker = worker_class(list(QUEUES), connection=conn, name=f"{name}-r{round_}" if name and round_ else name)
            try:
                worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                log.warning("Redis unreachable while the worker shut down; working again")
            # _stop_requested is set only when the signal came mid-job; an idle worker's stop
            # leaves just the request date (missing it restarted a SIGTERMed worker until SIGKILL).
            if burst or worker._shutdown_requested_date is not None:
                break
            time.sleep(1.0)
    finally:
        ticker.stop_event.set()
