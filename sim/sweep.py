"""Capacity sweeps: a grid of scenario settings, each point one run of the model.

A sweep answers capacity questions ("how many workers for this load", "how long an outage can
we absorb") by running the model at every point of a grid over workers, arrival rate, Twilio
latency, outage length and variant, starting from one base scenario. This module expands the
grid and runs one point; measuring a run is `reports/measures.py`'s job and the parallel
runner with its progress bar is `loopfix sweep`.

A grid can be cut into shards for a CI matrix (`shard`): each point carries its place in the
whole grid (`grid_index`, `grid_size`, `grid_digest`), so that the shards' rows join back into
one table in grid order (`reports/capacity.merge_shards`) and shards of different grids do not.

The *M/M/c special case* (`mmc=True`) checks the model against queueing theory at sweep
scale: every call has a recording, nothing fails, nobody plays, the CallLog is always there,
slots never bind, and each download takes an exponential time with mean `service_mean_s`
(the one place this module models the environment differently: a lognormal Twilio is M/G/c,
whose waits differ from Erlang C by up to ~12 % at CV 1). The job's fixed overhead is a
microsecond, so a worker serves at rate 1 / service_mean_s and the queue is M/M/c.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterator, Mapping, Sequence

from loopfix.harness.scenario import Outage, Scenario, load_scenario, with_settings
from loopfix.reference_app import policy as policy_mod
from loopfix.reference_app.events import EVENT_FIELDS
from loopfix.sim.model import Model
from loopfix.sim.process import gc_paused

MMC_OVERHEAD_S = 1e-6
MMC_BUSINESSES = 1


@dataclass(frozen=True)
class Grid:
    """The axes of a sweep; every combination is one point. An outage of 0 means none."""

    base: str = "worker-outage"
    workers: tuple[int, ...] = (2, 4, 8)
    calls_per_hour: tuple[float, ...] = (240.0, 600.0)
    latency_median_s: tuple[float, ...] = (4.0,)
    outage_s: tuple[float, ...] = (0.0, 1200.0)
    variants: tuple[str, ...] = ("fixed",)
    seeds: tuple[int, ...] = (1,)
    outage_at_s: float = 600.0
    observe_s: float = 3600.0  # arrivals go on this long after the outage ends
    mmc: bool = False
    service_mean_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("workers", "calls_per_hour", "latency_median_s", "outage_s", "variants", "seeds"):
            if not getattr(self, name):
                raise ValueError(f"sweep axis {name} is empty: give at least one value")
        if min(self.workers) < 1:
            raise ValueError(f"workers must be >= 1, got {min(self.workers)}")
        if min(self.calls_per_hour) <= 0 or min(self.latency_median_s) <= 0 or min(self.outage_s) < 0:
            raise ValueError("calls per hour and latency must be > 0, outage lengths >= 0")
        unknown = sorted(set(self.variants) - set(policy_mod.VARIANTS))
        if unknown:
            raise ValueError(f"unknown variant {unknown[0]!r}; known: {', '.join(policy_mod.VARIANTS)}")
        if self.mmc and self.service_mean_s <= 0:
            raise ValueError("service_mean_s must be > 0")

    def __len__(self) -> int:
        return math.prod(len(getattr(self, a)) for a in
                         ("workers", "calls_per_hour", "latency_median_s", "outage_s", "variants", "seeds"))


def points(grid: Grid) -> Iterator[dict[str, Any]]:
    """Every point of the grid as plain data (what a sweep row starts from)."""
    for w, cph, lat, out, variant, seed in itertools.product(
            grid.workers, grid.calls_per_hour, grid.latency_median_s, grid.outage_s, grid.variants, grid.seeds):
        yield {"base": grid.base, "workers": w, "calls_per_hour": cph, "latency_median_s": lat,
               "outage_s": out, "variant": variant, "seed": seed, "outage_at_s": grid.outage_at_s,
               "observe_s": grid.observe_s, "mmc": grid.mmc, "service_mean_s": grid.service_mean_s}


def scenario_for(point: Mapping[str, Any]) -> Scenario:
    """The scenario of one point: the base scenario with the point's settings. The outage
    (all workers stopped) replaces the base's outages; arrivals run `observe_s` past its end."""
    base = load_scenario(point["base"])
    out = float(point["outage_s"])
    settings = {"workers.count": point["workers"], "arrivals.calls_per_hour": point["calls_per_hour"],
                "twilio.latency_median_s": point["latency_median_s"]}
    if point["mmc"]:
        settings.update({
            "recordings.url_fraction": 1, "recordings.archive_calls": 0, "recordings.odd_url_fraction": 0,
            "twilio.slow_fraction": 0, "twilio.fault_rate": 0, "calllog.commit_delay_s": "[0, 0]",
            "calllog.late_fraction": 0, "clients.play_fraction": 0, "clients.archive_plays_per_hour": 0,
            "bulk_delete.requests_per_hour": 0, "workers.job_overhead_s": MMC_OVERHEAD_S,
            "workers.transcribe_s": "[0, 0]", "businesses": MMC_BUSINESSES,
            "slots_per_business": max(point["workers"], 1),
            "duration_s": point["observe_s"], "drain_s": 600})
    s = with_settings(base, variant=point["variant"], seed=point["seed"],
                      assignments={k: str(v) for k, v in settings.items()})
    if out > 0:
        at = float(point["outage_at_s"])
        outage = Outage(target="workers", how="stop", at_s=at, duration_s=out, workers=0)
        return dataclasses.replace(s, outages=(outage,), duration_s=max(s.duration_s, at + out + point["observe_s"]))
    return dataclasses.replace(s, outages=())


def load_end_s(point: Mapping[str, Any]) -> float:
    """When arrivals stop at this point: recovery after that is only the queue draining."""
    return scenario_for(point).duration_s


@dataclass(frozen=True)
class PointRun:
    """One point's run: its scenario, its history (only the records of the kinds asked for,
    in order), how many records the run made in all, and the consumer the records of the kinds
    it reads were fed to as they were made (`run_point`'s `fed`; None: none were)."""

    scenario: Scenario
    history: list[dict[str, Any]]
    events: int
    fed: Any = None


def simulate_point(point: Mapping[str, Any]) -> tuple[Scenario, list[dict[str, Any]]]:
    """Run the model at one point: (its scenario, its whole history)."""
    run = run_point(point)
    return run.scenario, run.history


def run_point(point: Mapping[str, Any], keep: Collection[str] | None = None, fed: Any = None) -> PointRun:
    """Run the model at one point, keeping only the records of the kinds in `keep` (all when
    None): the fast lane of a sweep whose figures read a few kinds (KeptKinds). `fed`: a
    consumer with `handlers` (kind -> step, as reports.measures.Scan) that the records of those
    kinds go to as they are made, instead of being kept."""
    s = scenario_for(point)
    cls = _exponential_downloads(float(point["service_mean_s"])) if point["mmc"] else Model
    feed = fed.handlers if fed is not None else None
    if feed is not None:  # each kind's records go one way: fed, else kept or counted
        keep = frozenset(EVENT_FIELDS if keep is None else keep) - set(feed)
    history, events = _run(s, cls, keep, feed)
    return PointRun(s, history, events, fed)


def simulate_history(s: Scenario, cls: type[Model] = Model) -> list[dict[str, Any]]:
    """Only the history of a model run: a sweep measures it itself (reports/measures.py), so the
    model's own metrics are not computed."""
    return _run(s, cls, None)[0]


class KeptKinds:
    """The history of a fast-lane run: the records of the kinds in `kinds` kept in `records`, in
    order, those of the kinds in `feed` handed to the kind's step as they are made (a consumer's
    `handlers`: measured online, not kept), the others only counted. It speaks sim.records'
    router protocol: `route(kind)` says once per kind where its records go, None for nowhere,
    and the recorders of a kind routed nowhere take the kind's own fields and build no record —
    where a recorder taking any fields (`**fields`) would build a dict of them on every call —,
    and those of a kind whose handler has a `step` (as reports.measures.Scan's) call the step
    with the fields it names, no record built either.
    `tally[0]` counts every record the recorders made."""

    def __init__(self, kinds: Collection[str], feed: Mapping[str, Callable[[dict[str, Any]], None]] | None = None):
        self.feed = dict(feed or {})
        unknown = sorted((set(kinds) | set(self.feed)) - set(EVENT_FIELDS))
        if unknown:
            raise ValueError(f"unknown event kinds {unknown}")
        both = sorted(set(kinds) & set(self.feed))
        if both:
            raise ValueError(f"event kinds {both} both kept and fed: a kind's records go one way")
        self.kinds = frozenset(kinds)
        self.records: list[dict[str, Any]] = []
        self.tally = [0]
        self.clock: list[float] | None = None  # the recorders' clock (sim.records)

    def route(self, kind: str) -> Callable[[dict[str, Any]], None] | None:
        if kind in self.feed:
            return self.feed[kind]
        return self.records.append if kind in self.kinds else None

    def append(self, record: dict[str, Any]) -> None:
        """A record made without a recorder: kept, fed or counted as its kind says."""
        self.tally[0] += 1
        to = self.route(record["kind"])
        if to is not None:
            to(record)

    @property
    def events(self) -> int:
        return self.tally[0]


def _run(s: Scenario, cls: type[Model], keep: Collection[str] | None,
         feed: Mapping[str, Callable[[dict[str, Any]], None]] | None = None) -> tuple[list[dict[str, Any]], int]:
    """(the kept history, every record made): the model is disposed of before the collector
    runs again, so it is freed at once (Model.dispose)."""
    kept = KeptKinds(keep, feed) if keep is not None else None
    model = cls(s, s.make_policy()) if kept is None else cls(s, s.make_policy(), history=kept)
    model.start()
    with gc_paused():  # as sim.model does: the history would be re-scanned for nothing
        model.env.run(until=s.duration_s + s.drain_s)
        history, events = (model.history, len(model.history)) if kept is None else (kept.records, kept.events)
        model.dispose()
    return history, events


def jobs_started(run: PointRun) -> int:
    """Job runs started in a point's run: an M/M/c point's customers served. Its job.start
    records were kept in its history, or fed to its consumer (which counts them: `job_runs()`)."""
    if run.fed is not None and "job.start" in run.fed.handlers:
        return run.fed.job_runs()
    return sum(1 for e in run.history if e["kind"] == "job.start")


def _exponential_downloads(mean_s: float) -> type[Model]:
    lambd = 1.0 / mean_s

    class ExponentialDownloads(Model):
        """The model with exponential Twilio download times (mean `mean_s`)."""

        def download_time(self, t: Any = None) -> float:
            # rng_twilio.expovariate(lambd), inline (Random.expovariate's own formula): once a call
            return -math.log(1.0 - self.rng_twilio.random()) / lambd

    return ExponentialDownloads


def mmc_grid(workers: Sequence[int], utilisations: Sequence[float], service_mean_s: float = 10.0,
             hours: float = 24.0, seeds: Sequence[int] = (1,)) -> list[dict[str, Any]]:
    """M/M/c points for `workers` x target `utilisations` (arrival rate = rho * c / mean)."""
    grid = Grid(base="steady", workers=tuple(workers), calls_per_hour=(1.0,), outage_s=(0.0,),
                variants=("fixed",), seeds=tuple(seeds), mmc=True, service_mean_s=service_mean_s)
    out = []
    for p in points(grid):
        for rho in utilisations:
            if not 0 < rho < 1:
                raise ValueError(f"utilisation must be between 0 and 1, got {rho}")
            mean = service_mean_s + MMC_OVERHEAD_S
            out.append({**p, "calls_per_hour": rho * p["workers"] / mean * 3600.0, "utilisation_target": rho,
                        "observe_s": hours * 3600.0})
    return out


def numbered(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The points with their place in the grid: `grid_index` (0-based, grid order), `grid_size`,
    and `grid_digest`, a fingerprint of the whole grid (shards of different grids differ in it)."""
    # "g" first: a CSV cell of hex digits alone could read back as a number
    digest = "g" + hashlib.sha256(json.dumps([dict(p) for p in points], sort_keys=True, default=str).encode()).hexdigest()[:12]
    return [{**p, "grid_index": i, "grid_size": len(points), "grid_digest": digest} for i, p in enumerate(points)]


def parse_shard(text: str) -> tuple[int, int]:
    """"K/N" -> (K, N), shard K of N counted from 1; ValueError that says what to write."""
    k, sep, n = text.partition("/")
    try:
        shard_k, shard_n = int(k), int(n)
    except ValueError:
        shard_k = shard_n = 0
    if not sep or not 1 <= shard_k <= shard_n:
        raise ValueError(f"--shard must be K/N with 1 <= K <= N (e.g. 2/4), got {text!r}")
    return shard_k, shard_n


def shard(points: Sequence[Mapping[str, Any]], k: int, n: int) -> list[Mapping[str, Any]]:
    """Shard k of n (from 1): every n-th point from the k-th. Interleaved rather than cut in
    blocks, so that each shard gets a like mix of cheap and expensive points."""
    return list(points[k - 1::n])
