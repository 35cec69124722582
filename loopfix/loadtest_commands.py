"""`loopfix loadtest SCENARIO` and `loopfix stack up | down`: the real stack under Locust.

`loadtest` goes from nothing to a verdict table: it starts a private stack, runs the scenario's
client mix and outages under Locust, drains, stops everything and checks every invariant on
the run's merged live history (the same checker and scenario files as `loopfix sim`). Exit
codes like `loopfix sim`: 0 every invariant holds, 1 one is broken or undecided, 2 bad input.

`stack up` starts and seeds the same stack and leaves it running for `locust -f
loadtests/locustfile.py` by hand (its web UI included); `stack down` stops it by the pids and
marker it recorded in the run directory.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from loopfix.harness import history as history_mod
from loopfix.harness import invariants as inv
from loopfix.harness.scenario import Scenario
from loopfix.loadtests import runner, shapes
from loopfix.loadtests.live_scenario import DEFAULT_TIME_SCALE, live_scenario
from loopfix.loadtests.load_context import RUN_DIR_ENV
from loopfix.loadtests.stack import _kill, marked_pids
from loopfix.loadtests.verdicts import check_run
from loopfix import exits
from loopfix.output import console as output_console
from loopfix.redis_check import require_redis
from loopfix.sim_commands import BadInput, _print_verdicts, _progress, junit_option, log_step, write_junit_if_asked
from loopfix.reference_app import policy as policy_mod


def build_scenario(name: str, variant: str | None, sets: tuple[str, ...], time_scale: float | None,
                   duration: float | None) -> Scenario:
    """The scenario with --variant/--set, run at --time-scale (default: the file's unless it is
    real time, then 0.01), with --duration wall seconds of load."""
    try:
        return live_scenario(name, variant, sets, time_scale, duration)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def scenario_options(fn):
    fn = click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
                      show_default=True, help="where run directories go")(fn)
    fn = click.option("--redis-url", default=None,
                      help="use this Redis (default: a private redis-server; REDIS_URL when none is on PATH)")(fn)
    fn = click.option("--profile", type=click.Choice(sorted(shapes.PROFILES)), default="storm", show_default=True,
                      help="storm profile: how many users click over the run (loadtests/shapes.py)")(fn)
    fn = click.option("--users", type=click.IntRange(1, 100_000), default=None,
                      help="peak Locust users (default: the scenario's `users`)")(fn)
    fn = click.option("--set", "sets", multiple=True, metavar="NAME=VALUE",
                      help="override a scenario field (workers.count=2) or policy constant (max_retries=6)")(fn)
    fn = click.option("--time-scale", type=click.FloatRange(min=0, min_open=True), default=None,
                      help=f"wall seconds per policy second (default {DEFAULT_TIME_SCALE} for real-time scenarios)")(fn)
    fn = click.option("--variant", type=click.Choice(policy_mod.VARIANTS), help="before | seed | fixed")(fn)
    return fn


def figures(history: list[dict[str, Any]]) -> dict[str, Any]:
    from loopfix.sim.metrics import history_metrics  # the model's figures, computed on the live history

    return history_metrics(history)


@click.command("loadtest")
@click.argument("scenario")
@scenario_options
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="wall seconds of load (default: the scenario's duration_s x time scale); then it drains")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Locust processes: above 1, Locust's own --processes mode (a master and N workers)")
@click.option("--app-workers", type=click.IntRange(1, 64), default=2, show_default=True, help="gunicorn processes")
@click.option("--app-threads", type=click.IntRange(1, 256), default=8, show_default=True,
              help="threads per gunicorn process")
@click.option("--json", "as_json", is_flag=True, help="print the verdicts, figures and run summary as JSON")
@junit_option
@click.option("--target", "target_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="storm YOUR service instead of a stack loopfix starts (`loopfix target init` writes one); "
                   "judged only from outside it")
def loadtest_command(scenario, variant, time_scale, sets, users, profile, redis_url, runs_dir, duration, processes,
                     app_workers, app_threads, as_json, junit_path, target_file):
    """Run SCENARIO (a name under scenarios/ or a .toml path) against the real stack under
    Locust, then check every invariant on the live history of runs/<run-id>/.

    With --target TARGET.toml the same storm goes to your own service, and the history is only
    what is observable outside it (requests, answers, and its fetches of loopfix's media
    stand-in); invariants that need its insides are reported "not observable", never passed."""
    if target_file is not None:
        return _loadtest_target(scenario, target_file, variant, time_scale, sets, users, profile, runs_dir, duration,
                                processes, as_json, junit_path)
    s = build_scenario(scenario, variant, sets, time_scale, duration)
    if redis_url:
        require_redis(redis_url)  # before any process starts, not "app not ready after 30 s"
    run_id = runner.new_run_id(s)
    opts = runner.LoadOptions(s, users=users or s.users, processes=processes, profile=profile, runs_root=runs_dir,
                              redis_url=redis_url, app_workers=app_workers, app_threads=app_threads, run_id=run_id)
    result = _with_progress(s, lambda on: runner.run_load(opts, on), quiet=as_json,
                            kept=f"the partial run stays in {runs_dir / run_id}")
    try:
        history, verdicts = check_run(result.run_dir)
    except ValueError as exc:  # no history at all: nothing ran that the checker could judge
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    _finish(s, result, history, verdicts, as_json, junit_path)


def _with_progress(s: Scenario, run, quiet: bool = False,
                   kept: str = "the partial run stays in its directory under --runs-dir"):
    """Run `run(on_progress)` under a progress bar (where stderr is a log: a line per phase,
    unless `quiet`); a start-up failure is one line, exit 2."""
    phases: list[str] = []

    def log_phase(label: str) -> None:  # a line per phase where stderr is a log (no bar there)
        if label not in phases and not quiet:
            phases.append(label)
            log_step(f"loadtest: {s.name} [{s.variant}] {label}")

    try:
        with _progress() as progress:
            task = progress.add_task(f"{s.name} [{s.variant}]", total=1.0)

            def on_progress(label: str, f: float) -> None:
                progress.update(task, completed=min(f, 1.0), description=f"{s.name} [{s.variant}] {label}")
                log_phase(label)

            return run(on_progress)
    except (RuntimeError, TimeoutError, OSError) as exc:
        raise BadInput(str(exc).splitlines()[0]) from None
    except KeyboardInterrupt:  # every process the run started is stopped by then; what it wrote stays
        raise exits.Interrupted(kept) from None


def _loadtest_target(scenario, target_file, variant, time_scale, sets, users, profile, runs_dir, duration, processes,
                     as_json, junit_path):
    from loopfix.loadtests.target.config import TargetFileError, load_target
    from loopfix.loadtests.target.run import TargetOptions, check_target_run, run_target, target_scenario

    if variant is not None or time_scale is not None:
        raise BadInput("--variant and --time-scale do not apply with --target: the service runs its own code, at "
                       "the target file's time_scale")
    try:
        config = load_target(target_file)
    except TargetFileError as exc:
        for line in exc.problems[:-1]:
            click.echo(f"error: {target_file}: {line}", err=True)
        raise BadInput(f"{target_file}: {exc.problems[-1]}") from None
    s = target_scenario(build_scenario(scenario, None, sets, config.time_scale, duration), config)
    run_id = runner.new_run_id(s)
    opts = TargetOptions(runner.LoadOptions(s, users=users or s.users, processes=processes, profile=profile,
                                            runs_root=runs_dir, run_id=run_id), config)
    result, skipped = _with_progress(s, lambda on: run_target(opts, on), quiet=as_json,
                                     kept=f"the partial run stays in {runs_dir / run_id}")
    history, verdicts = check_target_run(result.run_dir)
    result.fault_errors.extend(f"skipped: {x}" for x in skipped)
    _finish(s, result, history, verdicts, as_json, junit_path)


def _finish(s: Scenario, result: runner.LoadResult, history: list[dict], verdicts: list[inv.Verdict],
            as_json: bool, junit_path: Path | None = None) -> None:
    """Write verdicts.json and figures.json into the run (and the JUnit XML where asked), print
    them, exit 0 holds / 1 not."""
    write_junit_if_asked(junit_path, result.run_dir.name, verdicts)
    figs = figures(history)
    summary = runner.result_summary(result)
    (result.run_dir / "verdicts.json").write_text(json.dumps([v.to_dict() for v in verdicts], indent=1) + "\n")
    (result.run_dir / "figures.json").write_text(json.dumps({"run": summary, "figures": figs}, indent=1) + "\n")
    if as_json:
        click.echo(json.dumps({"scenario": s.name, "variant": s.variant, "valid": inv.overall(verdicts),
                               "run": summary, "figures": figs, "verdicts": [v.to_dict() for v in verdicts]},
                              indent=1, default=str))
    else:
        print_report(output_console(), s, result, verdicts, figs, len(history))
    sys.exit(0 if inv.overall(verdicts) is True else 1)


def print_report(console: Console, s: Scenario, result: runner.LoadResult, verdicts: list[inv.Verdict],
                 figs: dict[str, Any], events: int) -> None:
    p = s.make_policy()
    console.print(f"[bold]{s.name}[/] variant={s.variant} time_scale={p.time_scale:g}: {events} events in "
                  f"{result.run_dir}", highlight=False)
    table = Table(title=f"verdicts ({result_source(result)} history)")
    table.add_column("invariant")
    table.add_column("verdict")
    table.add_column("anomalies")
    for v in verdicts:
        counts = ", ".join(f"{k} x{n}" for k, n in v.figure.get("anomaly_counts", {}).items())
        style = {True: "green", False: "bold red", inv.NOT_OBSERVABLE: "dim"}.get(v.valid, "yellow")  # type: ignore
        table.add_row(v.name, f"[{style}]{inv.valid_label(v.valid)}[/]", counts)
    console.print(table)
    _print_verdicts(console, [v for v in verdicts if v.valid is not True])
    rpp, jobs, dls = figs["requests_per_playback"], figs["jobs_per_recording"], figs["downloads_per_recording"]
    console.print(f"requests per playback p50={rpp['p50']} p100={rpp['max']}; jobs per recording "
                  f"max={jobs['max']}; downloads per recording max={dls['max']} (recordings: {dls['n']}); "
                  f"sessions ended: {figs['session_outcomes']}", highlight=False)
    backoff = next(v for v in verdicts if v.name == "backoff-schedule").figure
    measured = backoff.get("measured_full_schedule_total_s")
    claim = backoff.get("claim_52_min", {})
    tolerance = (f"{backoff['rel_tol']:.0%} + {backoff['abs_tol_s']:g} s" if "abs_tol_s" in backoff else
                 f"{backoff.get('rel_tol', 0):.0%} - {backoff.get('early_tol_s', 0):g} s / "
                 f"+ {backoff.get('late_tol_s', 0):g} s")
    console.print(f"backoff: measured total {measured:.0f} s" if measured else "backoff: no job used every retry",
                  f"beside the configured {backoff.get('configured_total_s', 0):g} s "
                  f"and the seeds' claimed ~52 min ({claim.get('claimed_s', 3120)} s); tolerance {tolerance}",
                  highlight=False)
    console.print(f"load {result.load_wall_s:.1f} s + drain {result.drain_wall_s:.1f} s wall "
                  f"({'settled' if result.settled else 'drain limit reached'}); {result.requests} requests, "
                  f"{result.failures} failed in Locust's terms, {result.requests_per_s:.0f} req/s; "
                  f"locust exit code {result.locust_exit_code}", highlight=False)
    for err in result.fault_errors:
        console.print(f"[yellow]fault plan: {err}[/]", highlight=False)


def result_source(result: runner.LoadResult) -> str:
    info = history_mod.read_run_info(result.run_dir) or {}
    return str(info.get("source", "live"))


# --------------------------------------------------------------------------- stack up | down


@click.group("stack")
def stack_group() -> None:
    """Start or stop a seeded stack for running Locust by hand."""


@stack_group.command("up")
@click.argument("scenario", default="retry-storm")
@scenario_options
def stack_up(scenario, variant, time_scale, sets, users, profile, redis_url, runs_dir):
    """Start Redis, the stand-in, the app and the workers of SCENARIO, seeded, and leave them
    running; prints the locust command to drive them."""
    s = build_scenario(scenario, variant, sets, time_scale, None)
    if redis_url:
        require_redis(redis_url)
    opts = runner.LoadOptions(s, users=users or s.users, profile=profile, runs_root=runs_dir, redis_url=redis_url)
    run_dir = (runs_dir / runner.new_run_id(s)).resolve()
    run_dir.mkdir(parents=True)
    try:
        stack = runner.start_stack(opts, run_dir, time.time())
    except (RuntimeError, TimeoutError, OSError) as exc:
        raise BadInput(str(exc).splitlines()[0]) from None
    click.echo(f"stack up in {run_dir}: app {stack.app_url}, stand-in {stack.stub_url}, "
               f"redis {stack.config.redis_url}")
    click.echo(f"drive it:  {RUN_DIR_ENV}={run_dir} locust -f {runner.LOCUSTFILE} --host {stack.app_url}")
    click.echo(f"stop it:   loopfix stack down {run_dir}")


@stack_group.command("down")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def stack_down(run_dir: Path):
    """Stop the stack started by `loopfix stack up` in RUN_DIR (every process it started)."""
    info = history_mod.read_run_info(run_dir) if run_dir.is_dir() else None
    if not info or "stack_marker" not in info:
        raise BadInput(f"{run_dir}: not a run directory of `loopfix stack up` (no run.json with a stack marker)")
    for name, pid in sorted(info.get("pids", {}).items(), key=lambda kv: kv[0] == "redis"):
        _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while marked_pids(info["stack_marker"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in marked_pids(info["stack_marker"]):
        _kill(pid)
    click.echo(f"stack in {run_dir} stopped")


def register(cli: click.Group) -> None:
    cli.add_command(loadtest_command)
    cli.add_command(stack_group)
