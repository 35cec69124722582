"""What every Locust user of a run shares inside one Locust process: the run directory (the
locustfile's `--loopfix-run-dir`, set here by `use_run_dir`; `LOOPFIX_LOAD_DIR` when none was
set), its scenario and Policy (from `run.json`, so the load and the checker use
the same constants), the fixtures, the clock in policy seconds, and the history writer that
appends this process's client.* events to `<run>/locust-<pid>.jsonl`.

Time: `now()` is policy seconds since the load started: Locust's test_start (the locustfile
sets `load_start` then, and the master writes it to `<run>/load_start` for the runner's fault
plan). The stack's histories count from the run's epoch instead; the checker only compares
times within one history.
"""
from __future__ import annotations

import collections
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent

from loopfix.harness import history as history_mod
from loopfix.harness.scenario import Scenario, parse_scenario
from loopfix.loadtests.fixtures import read_fixtures
from loopfix.reference_app.events import HistoryWriter
from loopfix.reference_app.policy import Policy

RUN_DIR_ENV = "LOOPFIX_LOAD_DIR"  # the fallback of the locustfile's --loopfix-run-dir
LOAD_START_FILE = "load_start"
PROBE_FILE = "probe"  # target mode: the runner lists the recordings to play once more here ...
PROBE_DONE_FILE = "probe_done"  # ... and Locust's probe user answers here when every session ended


@dataclass
class FreshCall:
    """A call a webhook sender created in this process, to be opened from `open_at` (wall)."""

    business: dict[str, Any]
    call_sid: str
    open_at: float


@dataclass
class LoadContext:
    run_dir: Path
    info: dict[str, Any]
    scenario: Scenario
    policy: Policy
    fixtures: dict[str, Any]
    history: HistoryWriter
    load_start: float
    rng: random.Random
    fresh: collections.deque = field(default_factory=collections.deque)
    _clients: int = 0

    @property
    def scale(self) -> float:
        return self.policy.time_scale

    def now(self) -> float:
        """Policy seconds since the load started."""
        return (time.time() - self.load_start) / self.scale

    def draining(self) -> bool:
        """Past the scenario's duration: users start nothing new, what runs finishes."""
        return self.now() >= self.scenario.duration_s

    def sleep(self, policy_s: float) -> None:
        gevent.sleep(max(0.0, self.policy.wall(policy_s)))

    def new_client(self, prefix: str) -> str:
        """A client id unique across the run's Locust processes."""
        self._clients += 1
        return f"{prefix}{os.getpid()}-{self._clients}"

    def emit(self, kind: str, **fields: Any) -> None:
        self.history.emit(kind, **fields)

    def pick_call(self) -> tuple[dict[str, Any], str]:
        """(business, call_sid) to open: a fresh webhook call whose time has come, else a random
        archive call (most of them not downloaded yet early in a run)."""
        if self.fresh and self.fresh[0].open_at <= time.time():
            call = self.fresh.popleft()
            return call.business, call.call_sid
        business = self.rng.choice(self.fixtures["businesses"])
        return business, self.rng.choice(business["archive"])["call_sid"]


class NoLoadRun(RuntimeError):
    """No run directory given, or one without a run.json that names a scenario."""


_CONTEXTS: dict[int, LoadContext] = {}
_run_dir: Path | None = None


def use_run_dir(directory: str | os.PathLike) -> None:
    """The run directory of this process's users (the locustfile's --loopfix-run-dir). Set before
    the first `load_context()`; Locust's --processes children inherit it when they fork."""
    global _run_dir
    _run_dir = Path(directory)


def load_context() -> LoadContext:
    """This process's context, built on first use in each process (Locust's --processes forks
    after importing the locustfile: each child gets its own random stream and history file)."""
    pid = os.getpid()
    if pid not in _CONTEXTS:
        given = _run_dir if _run_dir is not None else os.environ.get(RUN_DIR_ENV, "")
        _CONTEXTS[pid] = _build(Path(given) if str(given) else None)
    return _CONTEXTS[pid]


def _build(directory: Path | None) -> LoadContext:
    if directory is None:
        raise NoLoadRun(f"no load run directory: give --loopfix-run-dir DIR (or {RUN_DIR_ENV}=DIR), a directory "
                        "from `loopfix stack up` or `loopfix loadtest`")
    try:
        info = history_mod.read_run_info(directory)
        fixtures = read_fixtures(directory) if info else {}
    except (OSError, ValueError) as exc:
        raise NoLoadRun(f"{directory}: {exc}") from None
    if not info or "scenario_data" not in info:
        raise NoLoadRun(f"{directory} is not a load run directory (no run.json with a scenario): give one from "
                        "`loopfix stack up` or `loopfix loadtest`")
    scenario = parse_scenario(info["scenario_data"], name=info.get("scenario", "unnamed"))
    policy = history_mod.policy_from_run_info(info)
    history = HistoryWriter(directory, proc="locust", time_scale=policy.time_scale, epoch=float(info["epoch"]),
                            source="target" if info.get("source") == "target" else "live")
    return LoadContext(directory, info, scenario, policy, fixtures, history, time.time(),
                       random.Random(f"{scenario.seed}-{os.getpid()}"))
