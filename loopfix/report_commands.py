"""`loopfix report`: the before/after report (issue 6).

`report` gathers run directories (sim and live) and sweep results (`loopfix sweep`,
loopfix/sweep_commands.py), produces with the model whatever the page needs and is missing,
checks every history with the invariant checker, and hands the results to reports/ to draw and
write.

Exit codes: 0 done, 1 the page was written but the fixed variant breaks an invariant, 2 bad
input — a one-line message, never a traceback, 130 interrupted (no page; the model runs and
the sweep rows finished by then stay in --runs).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import click

from loopfix.harness import invariants as inv
from loopfix import exits, parallel
from loopfix.sim_commands import BadInput, _progress
from loopfix.sweep_commands import keep_partial_rows, partial_path, run_sweep, run_sweep_with_progress, sweep_command
from loopfix.reference_app import policy as policy_mod
from loopfix.reports import capacity, measures
from loopfix.reports.measures import CALIBRATION_METRICS
from loopfix.reports.page import SLO_P95_S

__all__ = ["REPORT_SWEEPS", "register", "report_command", "run_sweep"]  # run_sweep: tests and bench import it here

# The sweeps the report runs when it is given none: (grid tag, sim.sweep.Grid settings), and
# the M/M/c special case (workers, utilisations, hours, seeds). --quick makes each smaller.
REPORT_SWEEPS = {
    "full": ([("capacity", dict(base="steady", workers=(1, 2, 3, 4, 6, 8), calls_per_hour=(300.0, 600.0, 1200.0),
                                outage_s=(0.0,))),
              ("metastability", dict(base="worker-outage", workers=(4,), calls_per_hour=(120.0, 240.0, 480.0, 720.0),
                                     outage_s=(0.0, 300.0, 900.0, 1800.0, 3600.0),
                                     variants=("before", "seed", "fixed")))],
             dict(workers=(1, 2, 4, 8), utilisations=(0.5, 0.7), hours=24.0, seeds=(1, 2, 3, 4))),
    "quick": ([("capacity", dict(base="steady", workers=(1, 2, 4), calls_per_hour=(600.0,), outage_s=(0.0,))),
               ("metastability", dict(base="worker-outage", workers=(4,), calls_per_hour=(240.0, 480.0),
                                      outage_s=(300.0, 1800.0), variants=("before", "seed", "fixed")))],
              dict(workers=(4,), utilisations=(0.7,), hours=24.0, seeds=(1, 2, 3, 4))),
}
RECOVER_WITHIN_S = 1200.0
BACKOFF_SCENARIO = "missing-calllog"


def _report_points(size: str) -> list[dict[str, Any]]:
    from loopfix.sim import sweep

    grids, mmc = REPORT_SWEEPS[size]
    pts = [{**p, "grid": tag} for tag, g in grids for p in sweep.points(sweep.Grid(**g))]
    return pts + [{**p, "grid": "mmc"} for p in sweep.mmc_grid(**mmc)]


def _read_sweep(path: Path) -> list[dict[str, Any]]:
    """The rows of a sweep results file; a history file given in its place is named as one."""
    try:
        return capacity.read_rows(path)
    except ValueError:
        from loopfix.harness import history as history_mod

        try:
            first = history_mod.read_jsonl(path)[:1]
        except (ValueError, OSError):
            first = []
        if first and {"t", "kind"} <= set(first[0]):
            raise ValueError(f"{path}: a history, not sweep results; pass the run directory it is in "
                             f"({path.parent})") from None
        raise


def _tagged(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows as the page sorts them, by their `grid` tag. Rows of `loopfix sweep` carry none:
    an M/M/c row is "mmc"; any other row belongs on the metastability map (outage x load), and
    a row without an outage is also a point of the capacity figure."""
    out: list[dict[str, Any]] = []
    for r in rows:
        if r.get("grid"):
            out.append(dict(r))
        elif r.get("mmc"):
            out.append({**r, "grid": "mmc"})
        else:
            if not float(r.get("outage_s") or 0):
                out.append({**r, "grid": "capacity"})
            out.append({**r, "grid": "metastability"})
    return out


def _classify(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """RUN_DIRS → (run directories, sweep result files); ValueError for anything else."""
    from loopfix.harness import history as history_mod

    runs, sweeps = [], []
    for path in paths:
        if path.is_file() and path.suffix in (".jsonl", ".csv"):
            sweeps.append(path)
        elif path.is_dir() and (path / history_mod.RUN_INFO_FILE).is_file():
            runs.append(path)
        elif path.is_dir() and any(d.is_dir() and (d / history_mod.RUN_INFO_FILE).is_file() for d in path.iterdir()):
            runs += sorted(d for d in path.iterdir() if d.is_dir() and (d / history_mod.RUN_INFO_FILE).is_file())
        elif path.is_dir() and any(path.glob("*.jsonl")):
            runs.append(path)
        else:
            raise ValueError(f"{path}: not a run directory (run.json + *.jsonl), a directory of them, "
                             f"or a sweep results file (.jsonl/.csv)")
    return runs, sweeps


def _run_record(label: str, history: list[dict[str, Any]], info: Mapping[str, Any], directory: Path | None) -> dict:
    """What the report needs of one run: its measures and the checker's verdicts."""
    from loopfix.harness import history as history_mod

    policy = history_mod.policy_from_run_info(info)
    scenario = info.get("scenario") or label
    return {"label": label, "scenario": scenario, "variant": policy.variant, "dir": directory,
            "source": info.get("source") or (history[0].get("source") if history else "sim"),
            "time_scale": info.get("time_scale", 1.0),
            "ttp": measures.times_to_playable(history), "summary": measures.summary(history),
            "backlog": measures.backlog(history), "outages": measures.outage_windows(history),
            "retry_timeline": measures.retry_timeline(history), "blocked": measures.blocked_after_failure(history),
            "worker_time": measures.worker_time_per_job(history),
            "played_on_request": _played_on_request(history),
            "queue_wait_p50_s": measures.percentile(measures.queue_waits(history), 0.5),
            "verdicts": [v.to_dict() for v in inv.check_all(history, policy)], "info": dict(info)}


def _read_run(directory: Path) -> dict[str, Any]:
    from loopfix.harness import history as history_mod
    from loopfix.sim_commands import read_history_warning_torn

    history = read_history_warning_torn(directory)
    problems = history_mod.validate(history)
    if problems:
        raise ValueError(f"{directory}: malformed history: {problems[0]}")
    return _run_record(directory.name, history, history_mod.read_run_info(directory) or {}, directory)


def _simulate_run(scenario: Any, runs_dir: Path, label: str) -> dict[str, Any]:
    """Run the model on `scenario`, write its run directory, and measure it."""
    from loopfix.harness import history as history_mod
    from loopfix.sim import simulate

    result = simulate(scenario)
    directory = runs_dir / label
    history_mod.write_history(directory / history_mod.HISTORY_FILE, result.history)
    history_mod.write_run_info(directory, result.run_info())
    return _run_record(label, result.history, result.run_info(), directory)


def _calibration(live: Sequence[Mapping[str, Any]], runs_dir: Path, step: Callable[[str], None]) -> list[dict]:
    """Each live run beside two model runs of the same scenario, variant and seed: the scenario
    as written, and the scenario with the worker time per job the live run measured
    (`workers.job_overhead_s` = the live median of in-job time besides the download plus the
    time between jobs while others wait: RQ's dequeue and fork, at the live time scale)."""
    from loopfix.harness.scenario import load_scenario, parse_scenario, with_settings

    pairs = []
    for run in live:
        info = run["info"]
        if "scenario_data" in info:
            scenario = parse_scenario(info["scenario_data"], name=str(info.get("scenario", "unnamed")))
        else:
            scenario = load_scenario(str(info.get("scenario", run["scenario"])))
        scenario = with_settings(scenario, variant=run["variant"])
        twins = [("model as written", scenario, f"twin-{run['label']}")]
        overhead = run["worker_time"]["overhead_s"]
        if overhead is not None:
            twins.append((f"model + live worker time {overhead:.1f} s/job",
                          with_settings(scenario, assignments={"workers.job_overhead_s": repr(overhead)}),
                          f"twin-overhead-{run['label']}"))
        for what, twin_scenario, label in twins:
            step(f"model twin of {run['label']} ({what})")
            sim = _simulate_run(twin_scenario, runs_dir, label)
            spread = _seed_spread(twin_scenario)
            errors = {m: _relative_error(run["summary"].get(m), sim["summary"].get(m)) for m in CALIBRATION_METRICS}
            pairs.append({"label": f"{run['scenario']} [{run['variant']}] at scale {float(run['time_scale']):g}, {what}",
                          "live": run["summary"],
                          "sim": sim["summary"], "errors": errors, "seed_range": spread,
                          "evidence": _evidence(run, sim),
                          "live_run": str(run["dir"]), "time_scale": run["time_scale"],
                          "load_avg": info.get("load_avg_start"),
                          "explanation": _disagreement(errors, run, sim, spread)})
    return pairs


CALIBRATION_SEEDS = range(1, 9)


def _seed_spread(scenario: Any) -> dict[str, list[float] | None]:
    """Each calibration figure's [min, max] over the model run with seeds 1-8: how far the
    model's own figure moves with the random draws alone (a p95 of time to playable moves in
    the player's poll steps, and a click storm's 8 sessions share one download)."""
    from loopfix.harness.scenario import with_settings
    from loopfix.sim.sweep import simulate_history

    figures: dict[str, list[float]] = {m: [] for m in CALIBRATION_METRICS}
    for seed in CALIBRATION_SEEDS:
        summary = measures.summary(simulate_history(with_settings(scenario, seed=seed)))
        for m in CALIBRATION_METRICS:
            if summary.get(m) is not None:
                figures[m].append(summary[m])
    return {m: [min(v), max(v)] if v else None for m, v in figures.items()}


def _played_on_request(history: Sequence[Mapping[str, Any]]) -> list[float]:
    """Share of playbacks that played on the player's 1st, 2nd, ... 6th-or-later request: time to
    playable moves in the steps of the player's poll schedule, and this says on which step."""
    played = [min(s.requests, 6) for s in measures.sessions(history) if s.time_to_playable_s is not None]
    return [round(played.count(n) / len(played), 3) if played else 0.0 for n in range(1, 7)]


def _relative_error(live: float | None, model: float | None) -> float | None:
    """(live - model) / model; 0 when they are equal (0 s and 0 s agree); None when there is no
    ratio (a figure missing, or the model's 0 against a live figure that is not)."""
    if live is None or model is None:
        return None
    if live == model:
        return 0.0
    return (live - model) / model if model else None


def _evidence(live: Mapping[str, Any], sim: Mapping[str, Any]) -> dict[str, Any]:
    """What the two runs did, side by side: the data a disagreement is explained by."""
    return {side: {"sessions": r["summary"]["sessions"], "outcomes": r["summary"]["outcomes"],
                   "worker_time_per_job_s": r["worker_time"]["overhead_s"],
                   "queue_wait_p50_s": r["queue_wait_p50_s"], "played_on_request_1_to_6": r["played_on_request"]}
            for side, r in (("live", live), ("model", sim))}


def _disagreement(errors: Mapping[str, float | None], live: Mapping[str, Any], sim: Mapping[str, Any],
                  spread: Mapping[str, list[float] | None]) -> str:
    """The figures outside ±15 %, where the live figure falls against the model's range over
    seeds, and, measured in both runs, what a worker spent per job besides the download, how
    long jobs waited, and what the clients did."""
    from loopfix.reports.page import CALIBRATION_TOLERANCE

    off = [m for m, e in errors.items() if e is not None and abs(e) > CALIBRATION_TOLERANCE]
    if not off:
        return ""
    ranges = []
    for m in off:
        lo_hi, value = spread.get(m), live["summary"][m]
        if lo_hi:
            where = "inside" if lo_hi[0] <= value <= lo_hi[1] else "outside"
            ranges.append(f"{m} live {_num(value)}, model over seeds {CALIBRATION_SEEDS.start}-"
                          f"{CALIBRATION_SEEDS.stop - 1} {_num(lo_hi[0])}–{_num(lo_hi[1])} ({where})")
    ev = _evidence(live, sim)
    lv, mv = ev["live"], ev["model"]
    return (f"outside ±15 %: {', '.join(off)}. " + "".join(f"{r}. " for r in ranges)
            + f"Measured, live vs model: worker time per job besides the download "
            f"{_num(lv['worker_time_per_job_s'])} vs {_num(mv['worker_time_per_job_s'])} s (live at "
            f"time scale {float(live['time_scale']):g}: 1 ms of wall time is {0.001 / float(live['time_scale']):g} "
            f"policy s); median queue wait {_num(lv['queue_wait_p50_s'])} vs {_num(mv['queue_wait_p50_s'])} s; "
            f"sessions {lv['sessions']} {lv['outcomes']} vs {mv['sessions']} {mv['outcomes']}; share of "
            f"playbacks on the player's 1st…6th+ request {lv['played_on_request_1_to_6']} vs "
            f"{mv['played_on_request_1_to_6']}.")


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def _explained_cells(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """Per variant, the metastability cell (outage, load) its sentence explains: where it
    recovers latest behind the fastest variant there ('never' counted as the whole time arrivals
    go on after the outage), or, where it is never behind, its own slowest recovery."""
    rec: dict[tuple[float, float], dict[str, float]] = {}
    for r in rows:
        if float(r["outage_s"]) > 0:
            never = float(r.get("observe_s") or 3600.0) + 1
            t = never if r.get("recovery_s") is None else float(r["recovery_s"])
            cell = rec.setdefault((float(r["outage_s"]), float(r["calls_per_hour"])), {})
            cell[r["variant"]] = max(cell.get(r["variant"], 0.0), t)
    out = {}
    for v in sorted({v for by in rec.values() for v in by}):
        mine = {cell: by for cell, by in rec.items() if v in by}
        out[v] = max(mine, key=lambda c: (mine[c][v] - min(mine[c].values()), mine[c][v], c[1], c[0]))
    return out


def _recovery_explained(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """For each variant's explained cell, the model run again at that point for every variant
    swept there, measured by `measures.after_outage`: what the page's sentence is worded from."""
    from loopfix.sim import sweep

    measured: dict[tuple[str, float, float], dict[str, Any] | None] = {}  # cells explained twice run once
    out = []
    for variant, (outage, load) in _explained_cells(rows).items():
        after = {}
        for r in rows:
            key = (r["variant"], float(r["outage_s"]), float(r["calls_per_hour"]))
            if key[1:] == (outage, load) and r["variant"] not in after:
                if key not in measured:
                    scenario, history = sweep.simulate_point(r)
                    measured[key] = measures.after_outage(history, until_s=scenario.duration_s)
                after[r["variant"]] = measured[key]
        waits = {v: a["recovery_s"] for v, a in after.items() if a and a["recovery_s"] is not None}
        out.append({"variant": variant, "cell": (outage, load), "after": after,
                    "fastest": min(waits, key=lambda v: (waits[v], v)) if waits else None})
    return out


def _stated_numbers(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ledger's stated-number checks: the ~52 min, the 12x lock TTL, the 120 s dedup."""
    fixed = policy_mod.make_policy("fixed")
    claim = policy_mod.describe(fixed)["claim_52_min"]
    measured = [v["figure"].get("measured_full_schedule_total_s") for r in runs if r["variant"] == "fixed"
                for v in r["verdicts"] if v["name"] == "backoff-schedule"]
    measured = [m for m in measured if m is not None]
    lock_ttl_s = dict(fixed.lock_ttl_s)["delete_leads_bulk"]
    ratio = lock_ttl_s / fixed.bulk_max_runtime_s
    blocked = {v: max((b for r in runs if r["variant"] == v for b in r["blocked"]), default=None)
               for v in ("before", "seed", "fixed")}
    dedup_ttl = policy_mod.make_policy("seed").enqueue_dedup_ttl_s
    return {
        "52min": {"holds": bool(claim["holds"]),
                  "text": f"{claim['explanation']}; measured in the model (fixed): "
                          + (f"{sum(measured) / len(measured):.0f} s" if measured else "no recording used all retries")},
        "lock12x": {"holds": ratio >= 12,
                    "text": f"lock TTL {lock_ttl_s:g} s / max runtime "
                            f"{fixed.bulk_max_runtime_s:g} s = {ratio:g}x (arithmetic); whether the lock is "
                            f"exclusive is the lock-exclusive verdict"},
        "dedup120": {"holds": None if blocked["seed"] is None else blocked["seed"] <= dedup_ttl + 1,
                     "text": "longest 'duplicate' answer after a failed job: " + ", ".join(
                         f"{v} {'not exercised' if b is None else f'{b:.0f} s'}" for v, b in blocked.items())},
    }


@click.command("report")
@click.argument("inputs", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/report"),
              show_default=True, help="where index.html, report.md and the PNGs go")
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/report-sim"),
              show_default=True, help="where the model runs the report produces are written")
@click.option("--quick", is_flag=True, help="smaller sweeps (for tests and a first look)")
@click.option("--jobs", type=int, help="processes for the sweeps (default: one per core)")
@click.option("--slo", "slo_p95_s", type=click.FloatRange(min=0, min_open=True), default=SLO_P95_S,
              show_default=True, help="p95 time-to-playable target (s): the capacity figure's line and the "
                                      "recommendation line")
def report_command(inputs: tuple[Path, ...], out_dir: Path, runs_dir: Path, quick: bool, jobs: int | None,
                   slo_p95_s: float) -> None:
    """Write one HTML page (OUT/index.html), its Markdown twin and the PNGs from INPUTS: run
    directories (sim or live: run.json + *.jsonl), directories of them (e.g. runs/), and sweep
    results (.jsonl/.csv from `loopfix sweep`). Whatever the page needs and INPUTS lack is
    produced with the model: the headline scenarios under before, seed and fixed, and the
    sweeps. Live runs add the calibration section (each beside a model run of its scenario)."""
    from loopfix.harness.scenario import load_scenario, with_settings
    from loopfix.sim_commands import HEADLINE_SCENARIOS
    from loopfix.reports import claims
    from loopfix.reports.page import ReportData, metastability_rows, write_report

    try:
        run_dirs, sweep_files = _classify(inputs)
        given = [_read_run(d) for d in run_dirs]
        given_rows = [r for f in sweep_files for r in _read_sweep(f)]
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    sim = [r for r in given if r["source"] == "sim"]
    live = [r for r in given if r["source"] == "live"]
    have = {(r["scenario"], r["variant"]) for r in sim}
    missing = [(n, v) for n in HEADLINE_SCENARIOS for v in policy_mod.VARIANTS if (n, v) not in have]
    rows = _tagged(given_rows)
    notes = [f"read {len(given)} run directories ({len(live)} live) and {len(given_rows)} sweep rows"]
    try:
        with _progress() as progress:
            task = progress.add_task("report", total=len(missing) + len(live))

            def step(label: str) -> None:
                progress.update(task, description=label, advance=1)
                if not sys.stderr.isatty():  # a log: the bar draws nothing there
                    click.echo(f"report: {label}", err=True)

            for name, variant in missing:
                step(f"model: {name} [{variant}]")
                sim.append(_simulate_run(with_settings(load_scenario(name), variant=variant), runs_dir,
                                         f"{name}-{variant}"))
            pairs = _calibration(live, runs_dir, step)
        if missing:
            notes.append(f"ran the model for {len(missing)} scenario x variant runs (written to {runs_dir})")
        have_grids = {r["grid"] for r in rows}
        points = [p for p in _report_points("quick" if quick else "full") if p["grid"] not in have_grids]
        if points:  # the grids the given sweep files lack (all of them when none is given)
            started = time.perf_counter()
            ran = run_sweep_with_progress(points, jobs, "report sweeps")
            notes.append(f"ran {len(points)} sweep points ({', '.join(sorted({p['grid'] for p in points}))}) "
                         f"in {time.perf_counter() - started:.1f} s")
            capacity.write_rows(runs_dir / "sweep.jsonl", ran)
            rows += ran
        if not live:
            notes.append("no live run directories given: no calibration section (run `loopfix loadtest` and pass "
                         "its runs/<run-id>/ directory)")
        order = {(n, v): i for i, (n, v) in enumerate((n, v) for n in HEADLINE_SCENARIOS for v in policy_mod.VARIANTS)}
        sim.sort(key=lambda r: order.get((r["scenario"], r["variant"]), len(order)))
        backoff = [(r["variant"], r["retry_timeline"]) for r in sim if r["scenario"] == BACKOFF_SCENARIO]
        data = ReportData(runs=sim + live, sweep_rows=rows, ledger=claims.ledger(sim + live, _stated_numbers(sim + live)),
                          schedule_s=policy_mod.backoff_schedule(policy_mod.make_policy("fixed")), backoff=backoff,
                          recover_within_s=RECOVER_WITHIN_S, calibration=pairs, notes=notes,
                          command="loopfix report" + (" --quick" if quick else "")
                          + (f" --slo {slo_p95_s:g}" if slo_p95_s != SLO_P95_S else "")
                          + "".join(f" {p}" for p in inputs),
                          slo_p95_s=slo_p95_s,
                          recovery=_recovery_explained(metastability_rows(rows)))
        paths = write_report(data, out_dir)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise BadInput(f"cannot write the report: {exc.strerror or exc}") from None
    except parallel.Interrupted as stop:
        kept = keep_partial_rows(stop, len(points), partial_path(runs_dir / "sweep.jsonl"))
        raise exits.Interrupted(f"{kept.message}; the model runs stay in {runs_dir}; no page written") from None
    except KeyboardInterrupt:
        raise exits.Interrupted(f"the model runs finished so far stay in {runs_dir}; no page written") from None
    click.echo(f"wrote {paths['html']} and {paths['markdown']} ({len(paths) - 2} figures)")
    broken = [r["label"] for r in sim if r["variant"] == "fixed" and any(v["valid"] is not True for v in r["verdicts"])]
    if broken:
        click.echo(f"fixed breaks an invariant in: {', '.join(broken)}", err=True)
    sys.exit(1 if broken else 0)


def register(cli: click.Group) -> None:
    """Attach the capacity and report commands to the `loopfix` group."""
    cli.add_command(sweep_command)
    cli.add_command(report_command)
