"""The worker process: an RQ worker plus a ticker thread that promotes parked jobs when due
(parking.promote_due, finely enough for the time scale) and sweeps stuck runs by
heartbeat (jobs.cleanup_stuck_recording_jobs) — neither depends on RQ's own maintenance,
which runs on real-time intervals of seconds to minutes. Each promotion of a recording job is
recorded as `job.enqueue` with via `retry` (a backoff retry: its run waits in `retry_wait`) or
`defer` (a slot deferral), so the checker can judge a retry that comes too late.

Why not RQ's own scheduler (`enqueue_in` + `rq worker --with-scheduler`), measured
(`python -m loopfix.benchmarks.sched_bench`: 50 jobs due 0.3 s after their enqueue, one
forking worker, private redis-server): RQ scores its ScheduledJobRegistry in whole seconds and
its scheduler polls once a second (RQScheduler interval 1, not settable through Worker), so a
job started 0.21 s early to 0.74 s late (median 0.29 s late, 10 of 50 early); through
promote_due every tick_seconds it started 12–31 ms after its due time (median 17 ms), the same as
a job enqueued at once (median 19 ms: the worker's own pick-up). A second run at load average
7–8: RQ's scheduler 0.0–1.51 s late (median 0.69 s), the ticker 0.02–0.29 s (median 76 ms) and
a job enqueued at once 0.04–0.19 s (median 73 ms) — the load delays the pick-up, not the promotion. At time_scale 0.01 the
backoff checker allows 2 % + 1 policy s on the first 60 s retry: 2.2 policy s, 22 ms wall —
RQ's scheduler would be 20–75 policy seconds off, both too soon and too late. `loopfix status`
shows the parked jobs with their due times, as `rq info` shows queues.

Each job runs as a `LoopfixJob`: it logs one line when it ends (job id, call_sid, attempt,
outcome, seconds; RQ's own per-job lines stay at WARNING), and a run its entry function
reports failed for good (`{"status": "failed", ...}`: retry budget spent, fail-fast, a refused
URL, a bulk delete that gave up) ends its RQ job FAILED with the reason as exc_info, without
RQ's Retry(max=3) (kept for crashes) re-running it; the run's own status and history are the
entry function's, unchanged."""
from __future__ import annotations

import itertools
import logging
import sys
import threading
import time

import redis
from rq import SimpleWorker, Worker
from rq.job import Job

from loopfix.reference_app.coordination import crash_point_on
from loopfix.reference_app.parking import promote_due
from loopfix.reference_app.jobs import HANG_AFTER_DEQUEUE, JOB_FUNC, cleanup_stuck_recording_jobs, hang_once
from loopfix.reference_app.models import RecordingRun
from loopfix.reference_app.policy import Policy, run_attempt
from loopfix.reference_app.services import QUEUES, Services, get_services, set_services

log = logging.getLogger(__name__)
job_log = logging.getLogger("loopfix.worker.jobs")  # one line per job, at INFO


def tick_seconds_for(policy: Policy) -> float:
    """Wall seconds between promotions: half a policy second, within [5 ms, 500 ms]."""
    return min(0.5, max(0.005, policy.wall(0.5)))


def tick_seconds(svc: Services) -> float:
    return tick_seconds_for(svc.policy)


class Ticker(threading.Thread):
    """The ticker thread. Each pass holds `passing`, and the forking worker forks only while
    holding it too: a work horse forked mid-pass would inherit, held for good, whatever lock
    the pass held (SQLAlchemy's mapper configuration, SQLite's allocator) and hang on its first
    query (seen under load: the burst worker stuck in wait_for_horse)."""

    def __init__(self, svc: Services, queue_names=QUEUES):
        super().__init__(name="loopfix-ticker", daemon=True)
        self.svc, self.queue_names = svc, queue_names
        self.stop_event = threading.Event()
        self.passing = threading.Lock()

    def run(self) -> None:
        queues = [self.svc.queue(name) for name in self.queue_names]
        tick = tick_seconds(self.svc)
        sweep_every = max(tick, self.svc.policy.wall(self.svc.policy.heartbeat_interval_s))
        since_sweep = sweep_every
        while not self.stop_event.wait(tick):
            try:
                with self.passing:
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


# --------------------------------------------------------------------------- jobs as RQ sees them


class RunFailed(Exception):
    """The run failed for good (its entry function said so): the RQ job ends FAILED."""


def job_outcome(result) -> tuple[str, str | None]:
    """(outcome, reason it failed for good or None) of an entry function's return value:
    process_recording's {"status": done|failed, "error"} / {"retry"} / {"deferred"} /
    {"skipped"}, delete_leads' {"status": completed|paused|failed, "reason"} / {"skipped"}."""
    if not isinstance(result, dict):
        return "ok", None
    if result.get("skipped"):
        return "skipped", None
    status = result.get("status")
    if status == "failed":
        return "failed", str(result.get("error") or result.get("reason") or "failed")
    if status:
        return str(status), None
    for key in ("retry", "deferred"):
        if key in result:
            return key, None
    return "ok", None


def job_subject(job: Job) -> tuple[str, str]:
    """(call_sid, attempt) of a recording job's run as it starts; ("-", "-") for other jobs."""
    if job.func_name != JOB_FUNC:
        return "-", "-"
    try:
        with get_services().sessions() as s:
            run = s.get(RecordingRun, job.args[0])
            return (run.call_sid, str(run_attempt(run.retry_count, run.fetch_retry_count))) if run else ("-", "-")
    except Exception:  # the log line never decides the job's fate
        return "-", "-"


class LoopfixJob(Job):
    """An RQ job that logs how it ended and turns a run failed for good into a failed RQ job."""

    def perform(self):
        call_sid, attempt = job_subject(self)
        began = time.monotonic()

        def line(outcome: str) -> None:
            job_log.info("job %s call_sid=%s attempt=%s outcome=%s seconds=%.3f",
                         self.id, call_sid, attempt, outcome, time.monotonic() - began)

        try:
            result = super().perform()
        except BaseException as exc:
            line(f"error:{type(exc).__name__}")
            raise
        outcome, reason = job_outcome(result)
        line(outcome)
        if reason is not None:
            self.retries_left = 0  # RQ's Retry is for crashes; this failure is final
            raise RunFailed(reason)
        return result


class LoopfixWorkerMixin:
    """RQ's worker with LoopfixJob, minus RQ's traceback log for a RunFailed (the job's line says it)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("job_class", LoopfixJob)
        super().__init__(*args, **kwargs)

    def subscribe(self):
        """RQ's command channel, listened to in 0.2 s waits instead of RQ's 60: redis-py 8's
        PubSubWorkerThread.stop() joins the thread, which sits out its whole wait once
        UNSUBSCRIBE has answered, so every worker exit (a --burst one too) took up to 60 s."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(sleep_time=0.2, daemon=True,
                                                       exception_handler=self._pubsub_exception_handler)

    def handle_exception(self, job, *exc_info):
        if isinstance(exc_info[1], RunFailed):
            return
        super().handle_exception(job, *exc_info)


class LoopfixWorker(LoopfixWorkerMixin, Worker):
    """The forking worker: forks its work horse between two ticker passes (Ticker.passing)."""

    fork_guard: threading.Lock | None = None

    def fork_work_horse(self, job, queue):
        if self.fork_guard is None:
            return super().fork_work_horse(job, queue)
        with self.fork_guard:  # the horse never comes back here: RQ's child ends in os._exit
            return super().fork_work_horse(job, queue)


class LoopfixSimpleWorker(LoopfixWorkerMixin, SimpleWorker):
    pass


def log_jobs_to_stderr() -> None:
    """`loopfix worker`'s job lines on stderr (once per process)."""
    if not any(getattr(h, "loopfix_jobs", False) for h in job_log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        handler.loopfix_jobs = True
        job_log.addHandler(handler)
    job_log.setLevel(logging.INFO)


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
    log_jobs_to_stderr()
    worker_class = LoopfixSimpleWorker if simple else LoopfixWorker
    if crash_point_on(HANG_AFTER_DEQUEUE):
        worker_class = hanging_after_dequeue(worker_class, svc)
    try:
        for round_ in itertools.count():
            # RQ's worker quits on a Redis error outside its dequeue loop (a restart mid-job):
            # work again under a fresh name (the old one may still look registered) until
            # asked to stop, so a Redis restart never leaves the queue without workers.
            worker = worker_class(list(QUEUES), connection=conn, name=f"{name}-r{round_}" if name and round_ else name)
            worker.fork_guard = ticker.passing
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
