"""Run one scenario through the model.

`simulate(scenario)` → SimResult (the history, kept compact — sim.records.CompactHistory —
its metrics, measured as the records are made, and policy), for callers that read the history
afterwards. `simulate_checked`
keeps no history: each record goes, as it is made, to the invariants and the metrics in one
pass (harness.invariants.online) and, when asked, to a history file; what stays in memory is
what the invariants must keep. Both give the same verdicts and metrics for the same scenario.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from loopfix.harness import invariants as inv
from loopfix.harness.history import HistoryFile
from loopfix.harness.scenario import Scenario
from loopfix.reference_app.policy import Policy
from loopfix.sim.metrics import HistoryMetrics, queue_metrics
from loopfix.sim.model import simulate_model
from loopfix.sim.process import gc_paused
from loopfix.sim.records import CompactHistory


def run_info(s: Scenario) -> dict[str, Any]:
    """What `run.json` records: enough for the checker to rebuild the policy."""
    return {
        "source": "sim",
        "scenario": s.name,
        "seed": s.seed,
        "variant": s.variant,
        "faults": list(s.faults),
        "policy": dict(s.policy),
        "time_scale": s.time_scale,
    }


@dataclass(frozen=True)
class SimResult:
    scenario: Scenario
    policy: Policy
    history: CompactHistory
    metrics: dict[str, Any]

    def run_info(self) -> dict[str, Any]:
        return run_info(self.scenario)


def simulate(scenario: Scenario, on_progress: Callable[[float], None] | None = None) -> SimResult:
    """Simulate `scenario` to duration_s + drain_s (same seed → the same history, byte for byte)."""
    policy = scenario.make_policy()
    measure = HistoryMetrics()  # fed as the records are made: no pass over the history after
    # but for the kinds it only counts: the history counts those at the end
    history = CompactHistory(feed=measure.uncounted)
    if gc.isenabled():
        # The history's one list of values (millions, by the run's end) made old while it is empty:
        # a young collection (what the collector runs every few hundred allocations anyway)
        # moves it, with the caller's young objects, to the oldest generation, which only the
        # rare full collections scan. Else the first collections after the run, young and
        # middle, would each go through every value (0.2 s of the 10 h day's 3.2 s).
        gc.collect(1)
    model = simulate_model(scenario, policy, on_progress, history=history)
    measure.take_counts(history)
    metrics = measure.result(len(history))
    history.feed.clear()  # the result keeps the history, not the metrics' tables
    metrics.update(queue_metrics(model.samples, scenario.workers.count))
    # The model is a web of cycles that only the collector frees: disposed of, it no longer holds
    # the history, which then goes as soon as the caller lets go of the result rather than at
    # the collector's next full pass, after going through all its values (callgrind, an hour of
    # the day: 18 M instructions at the process's exit).
    model.dispose()
    return SimResult(scenario, policy, history, metrics)


class Fed:
    """A consumer as a fan-out sees it: the handlers it is fed."""

    def __init__(self, handlers: dict[str, Callable[[Any], None]]):
        self.handlers = handlers


@dataclass(frozen=True)
class CheckedRun:
    """A model run checked as it ran: how many events it recorded, the verdicts, the metrics."""

    scenario: Scenario
    policy: Policy
    events: int
    verdicts: Sequence[inv.Verdict]
    metrics: dict[str, Any]

    def run_info(self) -> dict[str, Any]:
        return run_info(self.scenario)


def simulate_checked(scenario: Scenario, on_progress: Callable[[float, int], None] | None = None,
                     history_path: str | Path | None = None) -> CheckedRun:
    """Simulate `scenario`, checking every invariant and measuring as the records are made;
    `history_path`: also write the history there (JSON Lines, as write_history would) as it
    happens. `on_progress(fraction, events so far)` per step of simulated time."""
    policy = scenario.make_policy()
    metrics = HistoryMetrics()
    out = HistoryFile(history_path) if history_path is not None else None
    # The collector stays paused (as simulate_model pauses it) until the checks have given their
    # verdicts and let go of what they kept: then that is freed at once, not scanned first.
    with gc_paused():
        try:
            # the metrics are fed but for the kinds they only count: the fan-out counts those
            fed = Fed(metrics.uncounted)
            fan = inv.online(policy, also=[fed], each=out.write if out is not None else None, ordered=True)
            step = None if on_progress is None else (lambda f: on_progress(f, fan.events))
            model = simulate_model(scenario, policy, step, history=fan)
            metrics.take_counts(fan)
            figures = metrics.result(fan.events)
            figures.update(queue_metrics(model.samples, scenario.workers.count))
            run = CheckedRun(scenario, policy, fan.events, fan.verdicts(), figures)
            fan.close()
            return run
        finally:
            if out is not None:
                out.close()
