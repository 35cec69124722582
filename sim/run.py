"""Run one scenario through the model: scenario → (history, metrics, policy)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from loopfix.harness.scenario import Scenario
from loopfix.reference_app.policy import Policy
from loopfix.sim.metrics import history_metrics, queue_metrics
from loopfix.sim.model import simulate_model
from loopfix.sim.process import gc_paused


@dataclass(frozen=True)
class SimResult:
    scenario: Scenario
    policy: Policy
    history: list[dict[str, Any]]
    metrics: dict[str, Any]

    def run_info(self) -> dict[str, Any]:
        """What `run.json` records: enough for the checker to rebuild the policy."""
        s = self.scenario
        return {
            "source": "sim",
            "scenario": s.name,
            "seed": s.seed,
            "variant": s.variant,
            "faults": list(s.faults),
            "policy": dict(s.policy),
            "time_scale": s.time_scale,
        }


def simulate(scenario: Scenario, on_progress: Callable[[float], None] | None = None) -> SimResult:
    """Simulate `scenario` to duration_s + drain_s (same seed → the same history, byte for byte)."""
    policy = scenario.make_policy()
    model = simulate_model(scenario, policy, on_progress)
    with gc_paused():  # the metrics' sets and dicts live to the end: nothing for the collector
        metrics = history_metrics(model.history)
        metrics.update(queue_metrics(model.samples, scenario.workers.count))
    return SimResult(scenario, policy, model.history, metrics)
