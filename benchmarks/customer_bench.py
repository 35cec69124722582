"""CPU µs per simulated customer, against Ciw in the same run (issue 18).

On one M/M/c (c = 4, utilisation 0.8, exponential service of mean 10 s, ~100 k customers a run,
seeds 1-3), each measured as process CPU time per customer served:
- Ciw (benchmarks/peers.py), the baseline every ratio is against;
- textbook SimPy (a `simpy.Resource` with c servers, one process per customer);
- loopfix's M/M/c point as `loopfix sweep --mmc` runs it: `sweep_row`'s two parts, its run
  and its measures, timed each (the command line passes them in: `PointRow`);
- loopfix's full model per call: `sim.simulate` (model, metrics) on bench's day scenario
  (benchmarks/bench_sim.day_scenario) cut to `full_hours`, timed whole: its metrics are
  measured as the model makes its records, inside the run (no pass after it to time alone).
Best of `repeat` rounds, interleaved (every tool once per round), each round summing CPU over
the seeds. The mean queue waits pooled over the seeds are checked against Erlang C (within
10 %): a fast wrong model would not count.

Run:  loopfix bench --only model --no-sweep [--customers 100000]
(the full model runs the day scenario for customers / 10,000 hours: 10 h for 100 k).
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from loopfix.benchmarks import peers

C, RHO, SERVICE_MEAN_S = 4, 0.8, 10.0
DAY_CALLS_PER_HOUR = 10_000.0  # bench_sim.day_scenario's arrival rate
WARMUP_S = 3600.0  # as the sweep's M/M/c point: waits of the first hour are left out
ERLANG_TOLERANCE = 0.10


@dataclass(frozen=True)
class PointRow:
    """How `loopfix sweep` makes one point's row, in its two parts (the command line's:
    sweep_commands.run_for_row and measure_point): `run(point)` -> its run, `measure(point, run)`
    -> its row."""

    run: Callable[[Mapping[str, Any]], Any]
    measure: Callable[[Mapping[str, Any], Any], dict[str, Any]]


@dataclass
class Tool:
    """One contender's measurements: per round, the CPU summed over the seeds and its parts."""

    name: str
    cpu: list[float] = field(default_factory=list)  # per round
    parts: list[dict[str, float]] = field(default_factory=list)  # per round: part -> CPU s
    customers: int = 0  # per round (the same every round)
    waits: list[tuple[float, int]] = field(default_factory=list)  # (mean, n) per seed, first round
    erlang_c_s: float | None = None

    def best(self) -> int:
        return min(range(len(self.cpu)), key=self.cpu.__getitem__)

    @property
    def us_per_customer(self) -> float:
        return self.cpu[self.best()] / self.customers * 1e6

    def part_us(self, part: str) -> float:
        return self.parts[self.best()][part] / self.customers * 1e6

    @property
    def wait_ratio(self) -> float | None:
        """Pooled mean queue wait ÷ Erlang C's (None for the full model: not an M/M/c)."""
        if self.erlang_c_s is None or not self.waits:
            return None
        n = sum(k for _, k in self.waits)
        return sum(m * k for m, k in self.waits) / n / self.erlang_c_s


def _cpu() -> float:
    return time.process_time()


def run_peer(tool: Tool, horizon_s: float, seeds, lam: float, mu: float, first: bool, peer) -> None:
    cpu, customers = 0.0, 0
    for seed in seeds:
        gc.collect()
        r = peer(C, lam, mu, horizon_s, seed, WARMUP_S)
        cpu += r.cpu_s
        customers += r.customers
        if first:
            tool.waits.append((r.mean_wait_s, r.waits_n))
    tool.cpu.append(cpu)
    tool.parts.append({"all": cpu})
    tool.customers = customers


def mmc_point(hours: float, seed: int) -> dict[str, Any]:
    from loopfix.sim import sweep

    return sweep.mmc_grid([C], [RHO], SERVICE_MEAN_S, hours=hours, seeds=[seed])[0]


def run_point(tool: Tool, hours: float, seeds, first: bool, parts: PointRow) -> None:
    """loopfix's M/M/c point: sweep_row's two parts (its run, its measures), timed."""
    from loopfix.sim import sweep

    sim_s = measure_s = 0.0
    customers = 0
    for seed in seeds:
        point = mmc_point(hours, seed)
        gc.collect()
        t0 = _cpu()
        run = parts.run(point)
        t1 = _cpu()
        row = parts.measure(point, run)
        t2 = _cpu()
        sim_s, measure_s = sim_s + t1 - t0, measure_s + t2 - t1
        customers += sweep.jobs_started(run)
        if first:
            tool.waits.append((row["queue_wait_mean_s"], row["queue_wait_n"]))
            tool.erlang_c_s = row["erlang_c_wait_s"]
        del run
    tool.cpu.append(sim_s + measure_s)
    tool.parts.append({"simulate": sim_s, "measures": measure_s})
    tool.customers = customers


def run_full(tool: Tool, hours: float, seeds) -> None:
    """loopfix's full model per call: sim.simulate on the day scenario cut to `hours`."""
    from loopfix.benchmarks.bench_sim import day_scenario
    from loopfix.harness.scenario import with_settings
    from loopfix.sim import simulate

    total = 0.0
    customers = 0
    for seed in seeds:
        s = with_settings(day_scenario(hours), seed=seed)
        gc.collect()
        t0 = _cpu()
        result = simulate(s)
        total += _cpu() - t0
        customers += sum(1 for e in result.history if e["kind"] == "recording.created")
        del result
    tool.cpu.append(total)
    tool.parts.append({"simulate, metrics online": total})
    tool.customers = customers


def full_hours_for(customers: int) -> float:
    """Hours of the day scenario with as many calls as an M/M/c run has customers (10 h: 100 k)."""
    return customers / DAY_CALLS_PER_HOUR


def measure(point_row: PointRow, customers: int = 100_000, repeat: int = 3, seeds=(1, 2, 3),
            full_hours: float | None = None, progress=lambda label: None) -> dict[str, Tool]:
    """Every tool, `repeat` interleaved rounds; M/M/c runs long enough for ~`customers` each."""
    from loopfix.sim.queueing import mmc_mean_wait

    lam, mu = RHO * C / SERVICE_MEAN_S, 1.0 / SERVICE_MEAN_S
    horizon_s = customers / lam
    full_hours = full_hours_for(customers) if full_hours is None else full_hours
    tools = {name: Tool(name) for name in ("ciw", "simpy", "point", "full")}
    for name in ("ciw", "simpy"):
        tools[name].erlang_c_s = mmc_mean_wait(C, lam, mu)
    for i in range(repeat):
        first = i == 0
        progress(f"model: Ciw M/M/c, round {i + 1} of {repeat}")
        run_peer(tools["ciw"], horizon_s, seeds, lam, mu, first, peers.ciw_mmc)
        progress(f"model: SimPy M/M/c, round {i + 1} of {repeat}")
        run_peer(tools["simpy"], horizon_s, seeds, lam, mu, first, peers.simpy_mmc)
        progress(f"model: loopfix M/M/c point, round {i + 1} of {repeat}")
        run_point(tools["point"], horizon_s / 3600.0, seeds, first, point_row)
        progress(f"model: loopfix full model ({full_hours:g} h day), round {i + 1} of {repeat}")
        run_full(tools["full"], full_hours, seeds)
    return tools


LABELS = {
    "ciw": "Ciw {ciw} (M/M/c)",
    "simpy": "textbook SimPy (Resource, 4 servers)",
    "point": "loopfix M/M/c point as `loopfix sweep --mmc` runs it (sweep_row)",
    "full": "loopfix full model per call (`sim.simulate`, day scenario cut to {hours:g} h)",
}
GOALS = {"point": 1.0, "full": 1.3}


def label(name: str, full_hours: float = 10.0) -> str:
    import ciw

    return LABELS[name].format(ciw=ciw.__version__, hours=full_hours)


def erlang_ok(tool: Tool) -> bool | None:
    r = tool.wait_ratio
    return None if r is None else abs(r - 1.0) <= ERLANG_TOLERANCE
