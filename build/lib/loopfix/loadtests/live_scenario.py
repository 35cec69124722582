"""The scenario a live run drives: a scenario file with `--variant` / `--set` applied, at a
wall-time scale.

Shared by `loopfix loadtest` (which turns the ValueError into a one-line CLI error) and the
scripts in loadtests/ that start runs themselves (redis_compare), so that neither imports the
other: the CLI sits above loadtests/, never below.
"""
from __future__ import annotations

from typing import Sequence

from loopfix.harness.scenario import Scenario, load_scenario, with_settings
from loopfix.reference_app.config import parse_assignments

DEFAULT_TIME_SCALE = 0.01  # wall seconds per policy second for a scenario written in real time


def live_scenario(name: str, variant: str | None, sets: Sequence[str], time_scale: float | None,
                  duration: float | None) -> Scenario:
    """Scenario `name` (a file under scenarios/ or a path) with `variant` (None: the file's) and
    the `NAME=VALUE` assignments `sets`, run at `time_scale` (None: the file's unless it is real
    time, then DEFAULT_TIME_SCALE), with `duration` wall seconds of load (None: the file's).
    Raises ValueError saying what to fix."""
    s = with_settings(load_scenario(name), variant=variant, assignments=parse_assignments(list(sets)))
    scale = time_scale if time_scale is not None else (s.time_scale if s.time_scale != 1.0 else DEFAULT_TIME_SCALE)
    extra = {"time_scale": repr(scale)}
    if duration is not None:
        extra["duration_s"] = repr(duration / scale)
    return with_settings(s, assignments=extra)
