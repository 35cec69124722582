"""`loopfix status`: the app's RQ queues, their started and failed jobs, the workers, and the
work scheduled for later, the way `rq info` shows queues.

RQ's own scheduler is not used (its whole-second scores are too coarse for a scaled clock:
reference_app/worker.py has the measurement), so `rq info` and rq-dashboard never see a parked
retry; this command lists them with their due times (parking.parked_jobs).
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import click

from loopfix.redis_check import require_redis


def snapshot(redis_url: str, limit: int = 20, now: float | None = None) -> dict:
    """Queues (queued, started, failed, finished, scheduled counts and the `limit` soonest
    scheduled jobs) and workers of the app's RQ, read from `redis_url`."""
    import redis
    from rq import Queue, Worker
    from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

    from loopfix.reference_app.parking import parked_count, parked_jobs
    from loopfix.reference_app.services import QUEUES

    now = time.time() if now is None else now
    conn = redis.Redis.from_url(redis_url)
    queues = []
    for name in QUEUES:
        q = Queue(name, connection=conn)
        parked = parked_jobs(q, limit)
        queues.append({
            "name": name, "queued": q.count,
            "started": StartedJobRegistry(name, connection=conn).count,
            "failed": FailedJobRegistry(name, connection=conn).count,
            "finished": FinishedJobRegistry(name, connection=conn).count,
            "scheduled": parked_count(q),
            "scheduled_jobs": [{"job_id": job_id, "due": _iso(due), "due_in_s": round(due - now, 3)}
                               for job_id, due in parked],
        })
    workers = [{"name": w.name, "state": w.get_state(), "queues": w.queue_names(),
                "current_job": w.get_current_job_id()} for w in Worker.all(connection=conn)]
    return {"redis_url": _shown(redis_url), "at": _iso(now), "queues": queues, "workers": workers}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


def _shown(url: str) -> str:
    from loopfix.redis_check import _without_password

    return _without_password(url)


def render(snap: dict) -> str:
    """Plain text: one line per queue with a bar of its queued jobs (as `rq info`), its
    scheduled jobs under it, then the workers."""
    lines = []
    for q in snap["queues"]:
        bar = "|" * min(q["queued"], 50) + ("+" if q["queued"] > 50 else "")
        lines.append(f"{q['name']:<11} {bar} {q['queued']} queued, {q['started']} started, "
                     f"{q['failed']} failed, {q['finished']} finished, {q['scheduled']} scheduled")
        for j in q["scheduled_jobs"]:
            when = f"in {j['due_in_s']:.3f} s" if j["due_in_s"] >= 0 else f"due {-j['due_in_s']:.3f} s ago"
            lines.append(f"  scheduled {j['job_id']}  {j['due']}  ({when})")
        if q["scheduled"] > len(q["scheduled_jobs"]):
            lines.append(f"  ... {q['scheduled'] - len(q['scheduled_jobs'])} more scheduled")
    lines.append(f"{len(snap['queues'])} queues, {sum(q['queued'] for q in snap['queues'])} jobs queued, "
                 f"{sum(q['scheduled'] for q in snap['queues'])} scheduled")
    lines.append("")
    for w in snap["workers"]:
        job = f" ({w['current_job']})" if w["current_job"] else ""
        lines.append(f"{w['name']} {w['state']}: {', '.join(w['queues'])}{job}")
    lines.append(f"{len(snap['workers'])} workers, {len(snap['queues'])} queues")
    lines.append(f"Updated: {snap['at']}  ({snap['redis_url']})")
    return "\n".join(lines)


@click.command()
@click.option("--redis-url", envvar="REDIS_URL", default="redis://127.0.0.1:6379/0", show_default=True,
              help="The app's Redis. Env REDIS_URL.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(0, 10_000),
              help="Scheduled jobs listed per queue (soonest first).")
def status(redis_url, as_json, limit):
    """Queues, started/failed jobs, workers and scheduled (parked) jobs with their due times."""
    require_redis(redis_url)
    snap = snapshot(redis_url, limit)
    click.echo(json.dumps(snap, indent=2) if as_json else render(snap))


def register(cli: click.Group) -> None:
    cli.add_command(status)
