"""One target run from a target file to a checked history, in `runs/<run-id>/`:

1. start loopfix's media stand-in on the target's media host and port, recording every fetch
   the service makes of it (`media-*.jsonl`);
2. list every business's leads (`leads.listed`, phase start); announce the fixtures' calls'
   recordings (signed callbacks; calls created first when the fixtures list none) — the
   archive the players open; write fixtures.json and run.json (`source: target`, the policy the
   service promises, the tolerances, the target's settings);
3. run the scenario's Locust storm through the target's adapter (loadtests/locustfile.py picks
   the target users; the conformance scenario runs its scripted plan), while the fault plan
   stops and starts the service's workers through its hooks and degrades the stand-in — an
   outage the target has no hook for is skipped and named;
4. drain until no player session is open, the outages are over and every accepted recording
   has been fetched (or `drain_s` is over); then the probe: one player session on every
   accepted recording, so "playable after the faults end" is seen as a player sees it;
5. list the leads again (phase end), stop Locust and the stand-in, check every invariant from
   outside (harness/outside.py). `loopfix verify` on the directory gives the same verdict.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from loopfix.harness import history as history_mod
from loopfix.harness import outside
from loopfix.harness.invariants import Verdict, player_time_bound
from loopfix.harness.scenario import Outage, Scenario, with_settings
from loopfix.loadtests import runner
from loopfix.loadtests.faults import FaultPlan
from loopfix.loadtests.fixtures import new_sid, recording_url, write_fixtures
from loopfix.loadtests.load_context import LOAD_START_FILE, PROBE_DONE_FILE, PROBE_FILE, RUN_DIR_ENV
from loopfix.loadtests.stack import Stack, wait_until
from loopfix.loadtests.target.adapter import Business, PlainHttp, Target, make_target
from loopfix.loadtests.target.config import TargetConfig
from loopfix.loadtests.target.observed import send_call_status, send_recording
from loopfix.reference_app.config import Config
from loopfix.reference_app.events import HistoryWriter
from loopfix.reference_app.policy import Policy

EARLY_WALL_S = 0.05  # a retry may come this much (wall) before its backoff: clocks and send times
LATE_WALL_S = 1.0  # and this much after it before it is late: the service's scheduler, queue and start
ARCHIVE_PER_BUSINESS = 20  # calls loopfix creates per business when the fixtures list none
PROBE_MARGIN_WALL_S = 30.0


@dataclass(frozen=True)
class TargetOptions:
    """A load run's options (scenario, users, processes, profile, where runs go; the stack's
    own fields unused) and the target it storms instead of a stack."""

    load: runner.LoadOptions
    config: TargetConfig


def target_scenario(s: Scenario, config: TargetConfig) -> Scenario:
    """The scenario as the target runs it: its time scale, the fixed policy with the target's
    [policy] promises (the variant is the service's own business, not a switch here)."""
    return replace(with_settings(s, variant="fixed", assignments={"time_scale": repr(config.time_scale)}),
                   faults=(), policy=tuple(sorted(config.policy.items())))


def target_info(config: TargetConfig) -> dict[str, Any]:
    """TargetConfig as run.json keeps it (fixtures are fixtures.json)."""
    info = asdict(config)
    info.pop("fixtures")
    return {k: str(v) if isinstance(v, Path) else v for k, v in info.items()}


def tolerances(p: Policy) -> dict[str, float]:
    return {"early_s": p.policy_seconds(EARLY_WALL_S), "late_s": p.policy_seconds(LATE_WALL_S),
            "early_wall_s": EARLY_WALL_S, "late_wall_s": LATE_WALL_S}


class TargetFaultPlan(FaultPlan):
    """The scenario's outage windows on a target: every-worker windows through its hooks, Twilio
    windows on the stand-in; anything else (Redis, the scheduler, part of the workers, no hook)
    is skipped and named in `skipped`."""

    def __init__(self, stack: Stack, target: Target, scenario: Scenario, load_start: float,
                 history: HistoryWriter):
        super().__init__(stack, scenario, load_start, history)
        self.target = target
        self.skipped: list[str] = []

    def targets(self, o: Outage) -> list[str]:
        return []

    def _hooked(self, o: Outage) -> bool:
        if o.target == "workers" and o.workers == 0 and self.target.supports("workers_stop") \
                and self.target.supports("workers_start"):
            return True
        why = "no workers_stop/workers_start hook" if o.target == "workers" and o.workers == 0 else \
            "hooks stop every worker, not some" if o.target == "workers" else f"no hook for {o.target} outages"
        self.skipped.append(f"{o.target}/{o.how} at {o.at_s:g} s: {why}")
        return False

    def begin(self, o: Outage, workers: list[str]) -> None:
        if o.target == "twilio":
            return super().begin(o, workers)
        if self._hooked(o):
            self.history.emit("outage.start", target="workers", how=o.how, workers=0)
            self.target.workers_stop()

    def end(self, o: Outage, workers: list[str]) -> None:
        if o.target == "twilio":
            return super().end(o, workers)
        if o.target == "workers" and o.workers == 0 and self.target.supports("workers_start"):
            self.target.workers_start()
            self.history.emit("outage.end", target="workers", how=o.how, workers=0)


class Progress(runner.OpenSessions):
    """What the drain waits for: open player sessions (every file of the run: the probe's too),
    and accepted recordings not fetched yet."""

    def __init__(self, run_dir: Path):
        super().__init__(run_dir, "*.jsonl")
        self.accepted: dict[str, tuple[Any, str]] = {}  # recording_sid -> (business id, call_sid)
        self.doomed: set[str] = set()
        self.fetched: set[str] = set()

    def see(self, e: dict) -> None:
        super().see(e)
        if e["kind"] == "recording.created":
            self.accepted[e["recording_sid"]] = (e["business_id"], e["call_sid"])
            if e.get("fails_by_design"):
                self.doomed.add(e["recording_sid"])
        elif e["kind"] == "download.end" and e.get("ok"):
            self.fetched.add(e["recording_sid"])

    def busy(self) -> bool:
        return self.count() > 0 or any(r not in self.fetched and r not in self.doomed for r in self.accepted)

    def to_probe(self) -> list[tuple[Any, str]]:
        self.count()
        return [who for rec, who in self.accepted.items() if rec not in self.doomed]


def announce_archive(config: TargetConfig, target: Target, history: HistoryWriter, stub_url: str,
                     s: Scenario) -> list[dict[str, Any]]:
    """The fixtures' businesses with an `archive` the players open: each listed call gets its
    recording (a signed callback with a URL on the stand-in); with none listed, loopfix creates
    calls itself (call-status first). Conformance scenarios make their own calls."""
    out = []
    for b in config.fixtures["businesses"]:
        calls = [] if s.conformance is not None else list(b.get("calls") or [])
        created = not calls and s.conformance is None
        if created:
            calls = [{"call_sid": new_sid("CA")} for _ in range(ARCHIVE_PER_BUSINESS)]
        archive = []
        for call in calls:
            call_sid, rec = call["call_sid"], call.get("recording_sid") or new_sid("RE")
            if created:
                send_call_status(history, target, b, call_sid)
            url = recording_url(stub_url, b["account_sid"], rec, "")
            status = send_recording(history, target, b, call_sid, rec, url)
            if 200 <= status < 300:
                archive.append({"call_sid": call_sid, "has_url": True})
        out.append({**b, "archive": archive})
    return out


def list_leads(target: Target, config: TargetConfig, history: HistoryWriter, phase: str) -> dict[Any, list[int]]:
    listed = {}
    for b in config.fixtures["businesses"]:
        ids = target.list_leads(Business.from_fixture(b))
        history.emit("leads.listed", business_id=b["id"], lead_ids=ids, phase=phase)
        listed[b["id"]] = ids or []
    return listed


def run_target(opts: TargetOptions, on_progress: Callable[[str, float], None] | None = None
               ) -> tuple[runner.LoadResult, list[str]]:
    """Run one target load test end to end (see the module docstring); returns the result and
    the outages that were skipped."""
    load, config = opts.load, opts.config
    s = load.scenario
    p = s.make_policy()
    progress = on_progress or (lambda _label, _fraction: None)
    run_dir = (load.runs_root / (load.run_id or runner.new_run_id(s))).resolve()
    run_dir.mkdir(parents=True, exist_ok=False)
    epoch = time.time()
    stack = Stack(run_dir, Config(policy=p, media_hosts=()))
    plan = None
    progress("starting the stand-in", 0.0)
    try:
        stub_url = stack.start_stub(config.media_host, config.media_port, size_bytes=runner.STUB_SIZE_BYTES,
                                    latency_s=s.twilio.latency_median_s, latency_sigma=s.twilio.latency_sigma,
                                    error_rate=s.twilio.fault_rate, history_dir=run_dir, epoch=repr(epoch))
        history = HistoryWriter(run_dir, "runner", p.time_scale, epoch, source="target")
        target = make_target(config, PlainHttp(config.url))
        progress("announcing the archive", 0.0)
        listed = list_leads(target, config, history, "start")
        businesses = announce_archive(config, target, history, stub_url, s)
        for b in businesses:
            b["lead_ids"] = listed[b["id"]]
        write_fixtures(run_dir, {"stub_url": stub_url, "businesses": businesses})
        info = {"source": "target", "scenario": s.name, "scenario_data": s.to_dict(), "variant": "fixed",
                "faults": [], "policy": dict(config.policy), "time_scale": p.time_scale, "seed": s.seed,
                "users": load.users, "processes": load.processes, "profile": load.profile, "epoch": epoch,
                "app_url": config.url, "stub_url": stub_url, "target": target_info(config),
                "tolerance": tolerances(p), "pids": {n: pr.pid for n, pr in stack.procs.items()},
                "stack_marker": stack.marker, "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
        history_mod.write_run_info(run_dir, info)
        args = runner.locust_command(load, config.url, run_dir)
        if s.conformance is not None:  # no shape: the fixed users only (conformance, probe)
            args += ["--users", "2", "--spawn-rate", "2"]
        env = {**stack.env("locust"), RUN_DIR_ENV: str(run_dir)}
        if config.adapter and config.source:  # an adapter module beside the target file imports there too
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(config.source).resolve().parent),
                                                              env.get("PYTHONPATH")]))
        locust = stack._spawn("locust", args, env)
        started = run_dir / LOAD_START_FILE
        wait_until(started.is_file, 60, "locust", locust.popen, locust.log)
        load_start = float(started.read_text(encoding="utf-8"))
        plan = TargetFaultPlan(stack, target, s, load_start, HistoryWriter(run_dir, "env", p.time_scale, epoch,
                                                                          source="target"))
        plan.start()
        watch = Progress(run_dir)
        load_end, settled = runner.load_and_drain(locust, s, load_start, progress,
                                                  lambda: not plan.outages_over.is_set() or watch.busy())
        drained = time.time()
        plan.stop()
        progress("probe", 1.0)
        (run_dir / PROBE_FILE).write_text(json.dumps(watch.to_probe()), encoding="utf-8")
        wait_until(lambda: (run_dir / PROBE_DONE_FILE).is_file(), p.wall(player_time_bound(p)) + PROBE_MARGIN_WALL_S,
                   "the probe", locust.popen, locust.log)
        list_leads(target, config, history, "end")
        code = runner.stop_locust(locust)
        progress("done", 1.0)
        requests, failures = runner.locust_totals(run_dir)
        info["skipped_outages"] = plan.skipped
        history_mod.write_run_info(run_dir, info)
        result = runner.LoadResult(run_dir, code, load_end - load_start, drained - load_end, settled, requests,
                                   failures, plan.errors)
        return result, plan.skipped
    finally:
        if plan is not None:
            plan.stop()
        stack.stop()


def check_target_history(history: list[dict], info: dict[str, Any], p: Policy) -> list[Verdict]:
    """The verdicts from outside of a target run's history, with the tolerances its run.json
    records; fail-fast is observable only if the workers hooks ran (an outage window is there)."""
    tol = info.get("tolerance") or tolerances(p)
    hooks = any(e.get("kind") == "outage.start" and e.get("target") == "workers" for e in history)
    return outside.check_target(history, p, hooks=hooks, early_s=tol["early_s"], late_s=tol["late_s"])


def check_target_run(run_dir: Path) -> tuple[list[dict], list[Verdict]]:
    """(merged history, verdicts) of a target run directory — what `loopfix loadtest --target`
    printed, and what `loopfix verify` prints."""
    info = history_mod.read_run_info(run_dir) or {}
    history = history_mod.read_history(run_dir)
    return history, check_target_history(history, info, history_mod.policy_from_run_info(info))
