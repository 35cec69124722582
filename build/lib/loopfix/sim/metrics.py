"""Capacity-planning figures from a history and the model's samples (pure functions).

time-to-playable (first request of a session → its 200), requests per playback, jobs and
downloads per recording, and queue depth / worker utilisation over time.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence


def quantiles(values: Sequence[float], qs: Iterable[float] = (0.5, 0.9, 0.99)) -> dict[str, float | None]:
    """Nearest-rank quantiles plus mean and max; None for an empty sample."""
    xs = sorted(values)
    out: dict[str, float | None] = {}
    for q in qs:
        out[f"p{round(q * 100):d}"] = xs[min(len(xs) - 1, max(0, int(round(q * len(xs) + 0.5)) - 1))] if xs else None
    out["mean"] = sum(xs) / len(xs) if xs else None
    out["max"] = xs[-1] if xs else None
    out["n"] = len(xs)
    return out


def history_metrics(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    first: dict[tuple[Any, Any], float] = {}
    played: dict[tuple[Any, Any], float] = {}
    requests: dict[tuple[Any, Any], int] = defaultdict(int)
    outcomes: dict[str, int] = defaultdict(int)
    jobs: dict[Any, set[Any]] = defaultdict(set)
    downloads: dict[Any, int] = defaultdict(int)
    recordings: set[Any] = set()
    runs = 0
    for e in history:
        k = e["kind"]
        if k == "client.request":
            key = (e["client"], e["session"])
            first.setdefault(key, e["t"])
            requests[key] += 1
            if e["status"] in (200, 206) and key not in played:
                played[key] = e["t"] - first[key]
        elif k == "client.end":
            outcomes[e["outcome"]] += 1
        elif k == "job.enqueue":
            jobs[e["call_sid"]].add(e["job_id"])
        elif k == "job.start":
            runs += 1
        elif k == "download.end" and e["ok"] and not e["skipped"]:
            downloads[e["recording_sid"]] += 1
        elif k == "recording.created" and e["has_url"]:
            recordings.add(e["recording_sid"])
    per_recording_downloads = [downloads.get(r, 0) for r in recordings]
    return {
        "events": len(history),
        "time_to_playable_s": quantiles(list(played.values())),
        "requests_per_playback": quantiles([requests[k] for k in played]),
        "session_outcomes": dict(sorted(outcomes.items())),
        "jobs_per_recording": quantiles([len(v) for v in jobs.values()]),
        "downloads_per_recording": quantiles(per_recording_downloads),
        "job_runs": runs,
    }


def queue_metrics(samples: Sequence[Any], workers: int) -> dict[str, Any]:
    """Queue depth and utilisation (busy / workers up) from periodic samples."""
    depth = [s.queue_depth for s in samples]
    util = [s.busy_workers / s.workers_up if s.workers_up else 1.0 for s in samples]
    return {
        "queue_depth": quantiles(depth),
        "utilisation": quantiles(util),
        "workers": workers,
        "timeline": [{"t": s.t, "queue_depth": s.queue_depth, "busy": s.busy_workers, "up": s.workers_up}
                     for s in samples],
    }
