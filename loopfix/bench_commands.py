"""`loopfix bench`: loopfix's own speed and the app's hot paths, each figure beside a baseline
measured in the same run (issue 8). The measuring lives in `benchmarks/`; this module picks the
areas, owns the private stack (redis-server, gunicorn) and prints a table or JSON.

Exit codes: 0 measured (whether or not each goal is met: the table says), 2 bad input or a
missing tool (wrk, redis-server), with a one-line message, 130 interrupted (each stack stopped
at once). Progress goes to stderr: a bar on a terminal, a line per step in a log.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import click
from rich.table import Table

from loopfix.output import console as output_console
from loopfix.sim_commands import BadInput, _progress, log_step

AREAS = ("model", "app", "redis", "storm")
MET = {True: "met", False: "NOT met", None: ""}


def measure(areas: tuple[str, ...], seconds: float, day_hours: float, sweep: bool, storm_users: int,
            label, customers: int = 100_000) -> list:
    """Every figure of `areas`, in AREAS order; `label(text)` reports progress."""
    from loopfix.benchmarks import app_bench, model_bench, redis_bench, storm_bench  # heavy: only when benching
    from loopfix.loadtests.stack import Stack
    from loopfix.reference_app.config import Config

    figures = []
    if "model" in areas:
        from loopfix.benchmarks.customer_bench import PointRow
        from loopfix.sweep_commands import measure_point, run_for_row

        figures += model_bench.figures(PointRow(run_for_row, measure_point), day_hours, progress=label,
                                       customers=customers)
        if sweep:
            from loopfix.sweep_commands import run_sweep

            jobs = os.cpu_count() or 1
            figures.append(model_bench.sweep_figure(lambda points: run_sweep(points, jobs), jobs, label))
    services = [a for a in ("redis", "app", "storm") if a in areas]
    if not services:
        return figures
    if shutil.which("redis-server") is None:
        raise BadInput("redis-server not on PATH (apt-get install -y redis-server)")
    if ("app" in areas or "storm" in areas) and shutil.which("wrk") is None:
        raise BadInput("wrk not on PATH (apt-get install -y wrk)")
    work = Path(tempfile.mkdtemp(prefix="loopfix-bench-"))
    try:
        for area in services:  # a fresh private stack per area: nothing carries over
            stack = Stack(work / area, Config(data_dir=(work / area / "data").resolve()))
            try:
                url = stack.start_redis()
                if area == "redis":
                    label("redis: round trips per poll")
                    figures += redis_bench.figures(url, work / area)
                elif area == "app":
                    figures += app_bench.figures(stack, seconds, progress=label)
                else:
                    figures += storm_bench.figures(stack, max(seconds, 15.0), storm_users, progress=label)
            except KeyboardInterrupt:  # Ctrl-C: no warm shutdowns one after another
                stack.stop_now()
                raise
            finally:
                stack.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return figures


def table(figures: list) -> Table:
    from loopfix.benchmarks.figures import fmt

    t = Table(title="loopfix bench (baselines measured in this run; what each is: below)")
    for col in ("area", "figure", "value", "baseline", "ratio", "goal", "met"):
        t.add_column(col, justify="right" if col in ("value", "baseline", "ratio") else "left")
    for f in figures:
        t.add_row(f.area, f.name, f"{fmt(f.value)} {f.unit}",
                  "-" if f.baseline is None else f"{fmt(f.baseline)} {f.baseline_unit or f.unit}",
                  fmt(f.ratio), f.goal, MET[f.met])
    return t


@click.command("bench")
@click.option("--json", "as_json", is_flag=True, help="print the figures as JSON (value, baseline, ratio, goal, met)")
@click.option("--only", type=click.Choice(AREAS), multiple=True,
              help="measure only this area (repeatable); default: all four")
@click.option("--seconds", type=click.FloatRange(1, 600), default=5.0, show_default=True,
              help="wall seconds of load per app measurement (each storm runs at least 15)")
@click.option("--day-hours", type=click.FloatRange(min=0, min_open=True), default=24.0, show_default=True,
              help="simulated hours of the model's 'one day' run")
@click.option("--no-sweep", is_flag=True, help="skip the 200-point sweep (minutes) in the model area")
@click.option("--customers", type=click.IntRange(1000, 10_000_000), default=100_000, show_default=True,
              help="customers per M/M/c run of the model area's CPU-per-customer figures (seeds 1-3, 3 rounds)")
@click.option("--storm-users", type=click.IntRange(1, 100_000), default=100, show_default=True,
              help="Locust users of the first storm; each next storm doubles them")
def bench_command(as_json, only, seconds, day_hours, no_sweep, storm_users, customers):
    """Measure loopfix and the app against baselines taken in the same run.

    \b
    model  CPU µs per simulated customer on one M/M/c (c = 4, utilisation 0.8, seeds 1-3) of
           textbook SimPy, a `loopfix sweep --mmc` point (goal <= 1.0x) and the full model
           per call (day scenario cut to 10 h, goal <= 1.3x), each / Ciw's in the same run,
           mean waits checked against Erlang C; one simulated day at 10,000 calls/h with
           players (goal <= 20 s); a 200-point sweep (goal <= 120 s)
    app    GET /api/recordings/file/<sid> req/s on the 202 and 200 paths / a bare Flask JSON
           endpoint under the same gunicorn configuration, load from wrk (goal >= 0.5 on 202)
    redis  Redis round trips per poll, from INFO commandstats + MONITOR (goal <= 1 on 202)
    storm  the highest req/s of `loopfix loadtest poll-storm --profile steady` (users doubling)
           with every invariant holding, and where the CPU went (goal >= 1000)

    Needs redis-server and wrk on PATH for app, redis and storm. Results: BENCHMARKS.md.
    """
    areas = tuple(a for a in AREAS if a in only) if only else AREAS
    with _progress() as progress:
        task = progress.add_task("bench", total=None)

        def label(text: str) -> None:
            progress.update(task, description=text)
            if not as_json:
                log_step(f"bench: {text}")

        try:
            figures = measure(areas, seconds, day_hours, not no_sweep, storm_users, label, customers)
        except (RuntimeError, TimeoutError, OSError) as exc:  # a tool or a process of the stack failed
            raise BadInput(str(exc).splitlines()[0]) from None
    if as_json:
        click.echo(json.dumps([f.to_dict() for f in figures], indent=1))
    else:
        output_console().print(table(figures))
        for f in figures:
            click.echo(f"- {f.area} / {f.name}: baseline = {f.baseline_name or 'none'}; {f.note}")


def register(cli: click.Group) -> None:
    cli.add_command(bench_command)
