"""Delayed jobs: RQ's scheduled registry scores whole seconds and its scheduler polls once a
second, too coarse for a scaled clock (at time_scale 0.01 one second is 100 policy seconds;
measured against RQ's own scheduler in reference_app/worker.py and benchmarks/sched_bench.py),
so jobs due later wait in a sorted set scored by float epoch seconds and `promote_due` moves them
into their RQ queue atomically (WATCH/MULTI: each due job is enqueued exactly once however many
workers tick); `parked_jobs` lists them for `loopfix status`. Part of the Redis adapter beside
reference_app/coordination.py (the key's template is here, its only user).
"""
from __future__ import annotations

import time
from typing import Callable, Iterable

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from loopfix.reference_app.coordination import _text

DELAYED_KEY = "loopfix:delayed:{queue}"


def schedule_in(queue: Queue, job: Job, delay_wall_s: float) -> None:
    """Park `job` (created with `queue.create_job`) until `delay_wall_s` from now; a later
    `promote_due` enqueues it. A zero delay enqueues at once."""
    if delay_wall_s <= 0:
        queue.enqueue_job(job)
        return
    with queue.connection.pipeline() as pipe:
        job.set_status(JobStatus.SCHEDULED, pipeline=pipe)
        job.save(pipeline=pipe)
        pipe.zadd(DELAYED_KEY.format(queue=queue.name), {job.id: time.time() + delay_wall_s})
        pipe.execute()


def promote_due(queues: Iterable[Queue], now: float | None = None, batch: int = 100,
                on_promote: Callable[[Job], None] | None = None) -> int:
    """Enqueue every parked job whose time has come; returns how many this call moved.

    Each move is WATCH key → check it is still parked → MULTI: ZREM + enqueue → EXEC, so when
    several workers tick at once each job is enqueued by exactly one of them; `on_promote(job)`
    runs once per job this call moved (the worker records it in the history).
    """
    moved = 0
    for queue in queues:
        conn = queue.connection
        key = DELAYED_KEY.format(queue=queue.name)
        due = conn.zrangebyscore(key, "-inf", time.time() if now is None else now, start=0, num=batch)
        for raw in due:
            job_id = _text(raw)
            with conn.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    if pipe.zscore(key, job_id) is None:
                        continue
                    try:
                        job = Job.fetch(job_id, connection=conn)
                    except NoSuchJobError:
                        pipe.multi()
                        pipe.zrem(key, job_id)
                        pipe.execute()
                        continue
                    pipe.multi()
                    pipe.zrem(key, job_id)
                    queue.enqueue_job(job, pipeline=pipe)
                    pipe.execute()
                    moved += 1
                except redis.WatchError:
                    continue
            if on_promote is not None:
                on_promote(job)
    return moved


def parked_count(queue: Queue) -> int:
    return int(queue.connection.zcard(DELAYED_KEY.format(queue=queue.name)))


def parked_jobs(queue: Queue, limit: int = 100) -> list[tuple[str, float]]:
    """The jobs parked for `queue` (schedule_in), soonest first, up to `limit`: (job id, due
    time in wall epoch seconds) — what `loopfix status` shows as scheduled work."""
    rows = queue.connection.zrange(DELAYED_KEY.format(queue=queue.name), 0, limit - 1, withscores=True)
    return [(_text(job_id), float(due)) for job_id, due in rows]
