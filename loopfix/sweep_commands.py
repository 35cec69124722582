"""`loopfix sweep`: capacity planning over a grid of scenarios (issue 6).

`sweep` runs the model over a grid (sim/sweep.py), in parallel over the cores, measures each
run with reports/measures.py, writes one row per point (JSON Lines or CSV) and answers the two
planning questions. `run_sweep` is also what `loopfix report` and `loopfix bench` run.

Exit codes: 0 done, 1 a question has no answer in the grid, 2 bad input — a one-line message,
never a traceback, 130 interrupted (the rows finished by then in <out>.partial.jsonl).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import click

from harness import invariants as inv
from loopfix import exits, parallel
from loopfix.sim_commands import BadInput, _progress
from reports import capacity, measures

WARMUP_S = 3600.0  # M/M/c: queue waits of the first simulated hour are left out (empty start)


# --------------------------------------------------------------------------- one sweep point


def sweep_row(point: Mapping[str, Any]) -> dict[str, Any]:
    """Run the model at one point and measure it: the point's settings plus its figures."""
    from sim import sweep
    from sim.queueing import mmc_mean_wait

    started = time.perf_counter()
    scenario, history = sweep.simulate_point(point)
    row: dict[str, Any] = dict(point)
    summary = measures.summary(history)
    row.update({k: v for k, v in summary.items() if k != "outcomes"})
    row.update({f"sessions_{k}": v for k, v in summary["outcomes"].items()})
    waits = measures.queue_waits(history, after_t=WARMUP_S if point["mmc"] else 0.0)
    overhead = scenario.workers.job_overhead_s
    row["queue_wait_n"] = len(waits)
    row["queue_wait_mean_s"] = (measures.mean(waits) - overhead) if waits else None
    row["queue_wait_p95_s"] = (measures.percentile(waits, 0.95) - overhead) if waits else None
    if point["mmc"]:
        lam = scenario.arrivals.calls_per_hour / 3600.0
        row["erlang_c_wait_s"] = mmc_mean_wait(scenario.workers.count, lam, 1.0 / (point["service_mean_s"] + overhead))
    else:
        runs = [(e["job_id"], float(e["t"])) for e in history if e["kind"] in ("job.start", "job.end")]
        row["erlang_c_wait_s"] = _erlang_c_for(runs, scenario.workers.count, scenario.duration_s, overhead)
        series = measures.backlog(history)
        row["recovery_s"] = measures.recovery_s(history, until_s=scenario.duration_s, series=series) \
            if scenario.outages else 0.0
        row["max_backlog"] = max((w for _, w, _ in series), default=0)
        if point.get("check"):  # the checker is a third of a point's time: only when asked
            verdicts = inv.check_all(history, scenario.make_policy())
            row["invariants_hold"] = inv.overall(verdicts)
            row["broken"] = ",".join(v.name for v in verdicts if v.valid is not True)
    row["events"] = len(history)
    row["wall_s"] = round(time.perf_counter() - started, 3)
    return row


def _erlang_c_for(events: Sequence[tuple[str, float]], workers: int, duration_s: float,
                  overhead_s: float) -> float | None:
    """Erlang C's mean wait for the job rate and mean run time the model showed (None when
    that load would be unstable): the prediction the capacity figure overlays."""
    from sim.queueing import mmc_mean_wait

    started: dict[str, float] = {}
    runs: list[float] = []
    for job_id, t in events:
        if job_id in started:
            runs.append(t - started.pop(job_id) + overhead_s)
        else:
            started[job_id] = t
    if not runs or duration_s <= 0:
        return None
    lam, mu = len(runs) / duration_s, 1.0 / max(sum(runs) / len(runs), 1e-9)
    return mmc_mean_wait(workers, lam, mu) if lam < workers * mu else None


def _expected_cost(point: Mapping[str, Any]) -> float:
    """A rough ordering of points by run time: simulated hours x arrivals, more so when the
    workers are down for long or are many (slot contention defers jobs over and over)."""
    hours = (float(point.get("outage_at_s", 0)) + float(point["outage_s"]) + float(point["observe_s"])) / 3600
    return hours * float(point["calls_per_hour"]) * (1 + float(point["outage_s"]) / 1800) * (1 + point["workers"] / 8)


def run_sweep(points: Sequence[Mapping[str, Any]], jobs: int | None = None,
              on_done: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Every point through `sweep_row`, `jobs` processes at a time (default: one per core);
    rows in the points' order. Ctrl-C raises `parallel.Interrupted` with the rows finished,
    the workers stopped at once."""
    jobs = max(1, jobs or os.cpu_count() or 1)
    # Longest first, so that no long point starts last and runs alone on one core at the end.
    order = sorted(range(len(points)), key=lambda i: -_expected_cost(points[i]))
    return parallel.run_all(sweep_row, points, jobs, order, on_done)


def run_sweep_with_progress(points: Sequence[Mapping[str, Any]], jobs: int | None, label: str) -> list[dict[str, Any]]:
    """`run_sweep` under a progress bar; when stderr is a log, not a terminal, one line per
    point finished instead (a bar draws nothing there)."""
    finished = [0]

    def log_line(n: int) -> None:
        finished[0] += n
        click.echo(f"{label}: {finished[0]} of {len(points)} points", err=True)

    if not sys.stderr.isatty():
        return run_sweep(points, jobs, log_line)
    with _progress() as progress:
        task = progress.add_task(f"{label}: {len(points)} points", total=len(points))
        return run_sweep(points, jobs, lambda n: progress.update(task, advance=n))


def partial_path(path: Path) -> Path:
    """Where the rows of an interrupted sweep go: sweep.jsonl -> sweep.partial.jsonl."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def keep_partial_rows(interrupted: parallel.Interrupted, total: int, path: Path) -> exits.Interrupted:
    """Write the rows an interrupted sweep finished to `path`; the exit naming them."""
    rows = [interrupted.done[i] for i in sorted(interrupted.done)]
    if not rows:
        return exits.Interrupted(f"no point of {total} had finished; nothing written")
    capacity.write_rows(path, rows)
    return exits.Interrupted(f"{len(rows)} of {total} points finished, their rows written to {path}")


# --------------------------------------------------------------------------- loopfix sweep


def _numbers(kind: type) -> Callable[[Any, Any, str | None], tuple]:
    def parse(ctx: Any, param: Any, value: str | None) -> tuple:
        if value is None:
            return ()
        try:
            return tuple(kind(x) for x in value.split(",") if x.strip())
        except ValueError:
            raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None

    return parse


@click.command("sweep")
@click.option("--base", default="worker-outage", show_default=True, help="scenario the grid starts from")
@click.option("--workers", callback=_numbers(int), default="2,4,8", show_default=True, help="worker counts")
@click.option("--calls-per-hour", "calls", callback=_numbers(float), default="240,600", show_default=True,
              help="arrival rates")
@click.option("--latency", callback=_numbers(float), default="4", show_default=True,
              help="Twilio median download seconds")
@click.option("--outage", callback=_numbers(float), default="0,1200", show_default=True,
              help="outage lengths in seconds (all workers stopped; 0 = none)")
@click.option("--variants", default="fixed", show_default=True, help="comma-separated: before, seed, fixed")
@click.option("--seeds", callback=_numbers(int), default="1", show_default=True, help="random seeds per point")
@click.option("--outage-at", type=float, default=600.0, show_default=True, help="when the outage starts (s)")
@click.option("--observe", type=float, default=3600.0, show_default=True,
              help="arrivals continue this long after the outage ends (s)")
@click.option("--mmc", is_flag=True, help="the M/M/c special case: exponential downloads, no faults, no clients; "
              "grid over --workers x --utilisation, compared with Erlang C")
@click.option("--utilisation", callback=_numbers(float), default="0.5,0.7", show_default=True,
              help="--mmc: target utilisations")
@click.option("--hours", type=float, default=24.0, show_default=True, help="--mmc: simulated hours per point")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("sweep.jsonl"),
              show_default=True, help="results file: .jsonl or .csv")
@click.option("--from", "from_path", type=click.Path(dir_okay=False, path_type=Path),
              help="answer from an existing results file instead of running")
@click.option("--jobs", type=int, help="processes (default: one per core)")
@click.option("--check", is_flag=True, help="also run the invariant checker on every point (columns "
              "invariants_hold, broken; about a third slower)")
@click.option("--p95-target", type=float, help="answer: fewest workers with p95 time to playable <= this (s)...")
@click.option("--at-load", type=float, help="...at this many calls per hour")
@click.option("--recover-within", type=float, help="answer: longest outage after which the backlog recovers "
              "within this many seconds")
def sweep_command(base: str, workers: tuple, calls: tuple, latency: tuple, outage: tuple, variants: str, seeds: tuple,
                  outage_at: float, observe: float, mmc: bool, utilisation: tuple, hours: float, out_path: Path,
                  from_path: Path | None, jobs: int | None, check: bool, p95_target: float | None,
                  at_load: float | None, recover_within: float | None) -> None:
    """Run the model over a grid of workers x calls per hour x Twilio latency x outage length x
    variant (x seed), in parallel, into a results table; answer "how many workers for p95 time
    to playable <= X at load Y" (--p95-target X --at-load Y) and "how long an outage recovers
    within Z" (--recover-within Z)."""
    from sim import sweep

    if (p95_target is None) != (at_load is None):
        raise BadInput("--p95-target and --at-load go together")
    if out_path.suffix not in (".jsonl", ".csv"):
        raise BadInput(f"--out must end in .jsonl or .csv, got {out_path.name}")
    try:
        if from_path is not None:
            rows = capacity.read_rows(from_path)
        else:
            if mmc:
                points = sweep.mmc_grid(workers, utilisation, hours=hours, seeds=seeds)
            else:
                grid = sweep.Grid(base=base, workers=workers, calls_per_hour=calls, latency_median_s=latency,
                                  outage_s=outage, variants=tuple(v.strip() for v in variants.split(",") if v.strip()),
                                  seeds=seeds, outage_at_s=outage_at, observe_s=observe)
                points = list(sweep.points(grid))
                sweep.scenario_for(points[0])  # a bad base scenario fails here, before any process starts
            points = [{**p, "check": check} for p in points]
            started = time.perf_counter()
            try:
                rows = run_sweep_with_progress(points, jobs, "sweep")
            except parallel.Interrupted as stop:
                raise keep_partial_rows(stop, len(points), partial_path(out_path)) from None
            elapsed = time.perf_counter() - started
            capacity.write_rows(out_path, rows)
            click.echo(f"{len(rows)} points in {elapsed:.1f} s on {jobs or os.cpu_count()} processes -> {out_path}",
                       err=True)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise BadInput(f"cannot write {out_path}: {exc.strerror or exc}") from None
    sys.exit(_print_answers(rows, p95_target, at_load, recover_within))


def _print_answers(rows: Sequence[Mapping[str, Any]], p95_target: float | None, at_load: float | None,
                   recover_within: float | None) -> int:
    code = 0
    for a in capacity.mmc_agreement(rows):
        click.echo(f"M/M/c c={a['workers']} rho={a['utilisation']:.2f}: mean wait {a['measured_wait_s']:.3f} s, "
                   f"Erlang C {a['erlang_c_wait_s']:.3f} s ({a['relative_error']:+.1%}, {a['jobs']} jobs)")
    if p95_target is not None and at_load is not None:
        answers = capacity.min_workers(rows, p95_target, at_load)
        if not answers:
            click.echo(f"no fixed-variant rows at {at_load:g} calls/hour in the results", err=True)
            code = 1
        for a in answers:
            where = f"latency {a['latency_median_s']:g} s, outage {a['outage_s']:g} s"
            if a["workers"] is None:
                code = 1
                click.echo(f"p95 <= {p95_target:g} s at {at_load:g} calls/h ({where}): no swept worker count "
                           f"({', '.join(map(str, a['swept_workers']))}) is enough")
            else:
                click.echo(f"p95 <= {p95_target:g} s at {at_load:g} calls/h ({where}): "
                           f"{a['workers']} workers (p95 {a['p95_by_workers'][a['workers']]:.1f} s)")
    if recover_within is not None:
        for a in capacity.longest_outage(rows, recover_within):
            what = ("none of the swept outages" if a["longest_outage_s"] is None
                    else f"{a['longest_outage_s']:g} s")
            code = code or (1 if a["longest_outage_s"] is None else 0)
            click.echo(f"recovers within {recover_within:g} s [{a['variant']}, {a['workers']} workers, "
                       f"{a['calls_per_hour']:g} calls/h]: longest outage {what}")
    return code


# --------------------------------------------------------------------------- loopfix report
