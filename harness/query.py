"""What a checker asks of a history besides its own events: the events of some kinds, the
outage windows (outage.start / outage.end paired), and when a retry that fell due could first
be promoted (nothing promotes while every worker, the scheduler or Redis is down)."""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from loopfix.harness.verdicts import Event


def outage_windows(history: Iterable[Event]) -> list[tuple[Event, float]]:
    """Each outage's outage.start and the time it ended (inf while still open), paired by
    (target, how)."""
    opened: dict[tuple[Any, Any], Event] = {}
    windows: list[tuple[Event, float]] = []
    for e in of(history, "outage.start", "outage.end"):
        key = (e.get("target"), e.get("how"))
        if e["kind"] == "outage.start":
            opened[key] = e
        elif key in opened:
            windows.append((opened.pop(key), float(e["t"])))
    return windows + [(start, math.inf) for start in opened.values()]


def promotion_halts(history: Iterable[Event]) -> list[tuple[float, float]]:
    """Windows (start, end; end inf while open) when nothing could promote a due retry: every
    worker down (their ticker promotes), the scheduler stopped, or Redis paused or gone."""
    return sorted((float(s["t"]), end) for s, end in outage_windows(history)
                  if s.get("target") != "twilio" and not (s.get("target") == "workers" and s.get("workers", 0) != 0))


def promotable_at(due: float, halts: Sequence[tuple[float, float]]) -> float:
    """When a retry due at `due` could first be promoted: `due`, or the end of the halts covering it."""
    for start, end in halts:
        if start <= due <= end:
            due = end
    return due


def of(history: Iterable[Event], *kinds: str) -> list[Event]:
    """The events of these kinds, in history order."""
    return [e for e in history if e.get("kind") in kinds]
