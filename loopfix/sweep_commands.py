"""`loopfix sweep`: capacity planning over a grid of scenarios (issues 6, 17, 18).

`sweep` runs the model over a grid (sim/sweep.py) — on this machine's cores, on a Dask
LocalCluster or on a running Dask cluster (loopfix/sweep_executors.py), the whole grid or one
shard of it — measures each run with reports/measures.py, writes one row per point (JSON Lines
or CSV) and answers the planning questions with reports/capacity.py, counting every session
(played, gave up, errored); `sweep merge` joins the shards' files. `run_sweep` is also what
`loopfix report` and `loopfix bench` run.

Exit codes: 0 done, 1 a question has no answer in the grid or a point failed (the others'
rows are written), 2 bad input — a one-line message, never a traceback, 130 interrupted (the
rows finished by then in <out>.partial.jsonl).
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import CancelledError, Executor, Future, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import click

from loopfix.harness import invariants as inv
from loopfix import exits, parallel
from loopfix.sim_commands import BadInput, _progress
from loopfix.reports import capacity, measures

WARMUP_S = 3600.0  # M/M/c: queue waits of the first simulated hour are left out (empty start)
# The record kinds a row's figures read (reports/measures.py's summary, queue_waits, backlog and
# recovery_s, and _erlang_c_for below): a point run without the checker keeps only these (the model's
# fast lane, sim.sweep.run_point) or, an M/M/c one, measures them online. tests/test_sim_speed.py: rows equal.
MMC_ROW_KINDS = frozenset(measures.Scan.KINDS)
ROW_KINDS = MMC_ROW_KINDS | {"job.end", "job.stuck", "outage.start", "outage.end"}


# --------------------------------------------------------------------------- one sweep point


def sweep_row(point: Mapping[str, Any]) -> dict[str, Any]:
    """Run the model at one point and measure it: the point's settings plus its figures."""
    started = time.perf_counter()
    row = measure_point(point, run_for_row(point))
    row["wall_s"] = round(time.perf_counter() - started, 3)
    return row


def run_for_row(point: Mapping[str, Any]) -> Any:
    """The model's run at one point, keeping only what its row reads (sim.sweep.run_point)."""
    from loopfix.sim import sweep

    if row_kinds(point) is MMC_ROW_KINDS:  # measured as the model makes its records (a Scan), none kept
        return sweep.run_point(point, keep=(), fed=measures.Scan(after_t=WARMUP_S))
    return sweep.run_point(point, keep=row_kinds(point))


def row_kinds(point: Mapping[str, Any]) -> frozenset[str] | None:
    """The record kinds `measure_point` reads at this point; None (all) when it runs the checker."""
    if point.get("check"):
        return None
    return MMC_ROW_KINDS if point["mmc"] else ROW_KINDS


def measure_point(point: Mapping[str, Any], run: Any) -> dict[str, Any]:
    """The row of one point from its run (`run_for_row`'s): its settings and figures, wall time aside."""
    from loopfix.sim.process import gc_paused

    with gc_paused():  # the figures' sets and dicts live to the end: nothing for the collector
        return _measure(point, run)


def _measure(point: Mapping[str, Any], run: Any) -> dict[str, Any]:
    from loopfix.sim.queueing import mmc_mean_wait

    scenario, history = run.scenario, run.history
    row: dict[str, Any] = dict(point)
    summary, waits = (run.fed or measures.scan(history, WARMUP_S if point["mmc"] else 0.0)).summary_and_queue_waits()
    row.update({k: v for k, v in summary.items() if k != "outcomes"})
    # every ending a column, 0 when none ended so: rows of one grid have the same columns (CSV too)
    row.update({f"sessions_{k}": 0 for k in inv.TERMINAL_OUTCOMES})
    row.update({f"sessions_{k}": v for k, v in summary["outcomes"].items()})
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
        # Observation ends with the history (arrivals stop at duration_s, then drain_s to empty
        # the queue): jobs still waiting then mean the point is overloaded.
        row["backlog_end"] = series[-1][1] if series else 0
        row["drained"] = row["backlog_end"] == 0
        if scenario.outages:
            row["recovery_s"] = measures.recovery_s(history, until_s=scenario.duration_s, series=series)
        else:  # nothing to recover from but the load itself: recovered when it drained
            row["recovery_s"] = 0.0 if row["drained"] else None
        row["max_backlog"] = max((w for _, w, _ in series), default=0)
        if point.get("check"):  # the checker is a third of a point's time: only when asked
            verdicts = inv.check_all(history, scenario.make_policy())
            if not row["drained"]:
                verdicts = [_queued_is_not_lost(v, history) for v in verdicts]
            row["invariants_hold"] = inv.overall(verdicts)
            row["broken"] = ",".join(v.name for v in verdicts if v.valid is False)
            row["undecided"] = ",".join(v.name for v in verdicts if v.valid == inv.UNKNOWN)
    row["events"] = run.events
    return row


def _queued_is_not_lost(verdict: inv.Verdict, history: Sequence[Mapping[str, Any]]) -> inv.Verdict:
    """nothing-lost on a point that had not drained: a recording not downloaded while its job
    is still queued (or running, or waiting for a retry) is work not done yet, not work lost —
    undecided, like a history that ends during an outage. A recording whose call has no job in
    flight is lost all the same, and any other anomaly stands."""
    if verdict.name != "nothing-lost" or verdict.valid is not False \
            or set(verdict.figure.get("anomaly_counts", {})) != {"recording-not-downloaded"}:
        return verdict
    completed = {e.get("recording_sid") for e in history
                 if e.get("kind") == "download.end" and e.get("ok") and not e.get("skipped")}
    waiting = {e.get("call_sid") for e in history if e.get("kind") == "recording.created" and e.get("has_url")
               and e.get("recording_sid") not in completed}
    if not waiting <= measures.calls_with_pending_jobs(history):
        return verdict
    reason = f"{capacity.NOT_DRAINED}: {len(waiting)} recordings still queued when observation ended"
    return inv.Verdict(verdict.name, inv.UNKNOWN, {"undecided": (inv.Anomaly("undecided", {"reason": reason}),)},
                       verdict.figure)


def _erlang_c_for(events: Sequence[tuple[str, float]], workers: int, duration_s: float,
                  overhead_s: float) -> float | None:
    """Erlang C's mean wait for the job rate and mean run time the model showed (None when
    that load would be unstable): the prediction the capacity figure overlays."""
    from loopfix.sim.queueing import mmc_mean_wait

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


@dataclass(frozen=True)
class PointFailure:
    """A point that raised where it ran (or that its executor lost): its settings and the error."""

    point: Mapping[str, Any]
    error: str  # "ExceptionType: message", as the executor reported it

    def describe(self) -> str:
        keys = ("workers", "calls_per_hour", "latency_median_s", "outage_s", "variant", "seed", "utilisation_target")
        where = ", ".join(f"{k}={self.point[k]:g}" if isinstance(self.point[k], float) else f"{k}={self.point[k]}"
                          for k in keys if k in self.point)
        return f"point {where} failed: {self.error}"


class SweepFailed(RuntimeError):
    """Some points failed. `rows`: the others' rows, in the points' order; `failures`: one
    PointFailure per failed point."""

    def __init__(self, rows: list[dict[str, Any]], failures: list[PointFailure]) -> None:
        super().__init__(f"{len(failures)} of {len(rows) + len(failures)} sweep points failed; "
                         + "; ".join(f.describe() for f in failures[:3]))
        self.rows, self.failures = rows, failures


def run_sweep(points: Sequence[Mapping[str, Any]], jobs: int | None = None,
              on_done: Callable[[int], None] | None = None, executor: Executor | None = None) -> list[dict[str, Any]]:
    """Every point through `sweep_row`; rows in the points' order, the same rows on every
    executor for the same points. `executor`: any `concurrent.futures.Executor` the caller owns
    (a process pool, Dask's `Client.get_executor()`); without one, `jobs` processes (default one
    per core, stopped at once on Ctrl-C: `parallel.Interrupted` with the rows finished), or this
    process when `jobs` is 1 or there is one point. `on_done(1)` as each point completes. A
    point that fails does not stop the others: SweepFailed at the end carries their rows and
    names each failed point."""
    if executor is not None:
        return _run_on(executor, points, on_done)
    jobs = max(1, jobs or os.cpu_count() or 1)
    # Longest first, so that no long point starts last and runs alone on one core at the end.
    order = sorted(range(len(points)), key=lambda i: -_expected_cost(points[i]))
    outcomes = parallel.run_all(_row_or_failure, points, jobs, order, on_done)  # Ctrl-C: parallel.Interrupted
    return _finish([row for row, _ in outcomes],
                   [PointFailure(points[i], error) for i, (_, error) in enumerate(outcomes) if error is not None])


def _row_or_failure(point: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(row, None), or (None, the error) for a point that raised: one failed point must not stop
    the others' (in a worker process of `parallel.run_all`)."""
    try:
        return sweep_row(point), None
    except Exception as exc:  # noqa: BLE001 - reported with its point, the others kept
        return None, _error_text(exc)


# ---------------------------------------------------------------- submission to an Executor
# Points go to an executor in chunks (issue 18): each task a Dask cluster runs costs its
# scheduler and client about 15 ms of CPU on this machine (3 s for 200 one-point tasks, CPU the
# points' processes share), so consecutive points of the longest-first order travel together
# until a chunk is worth 1/CHUNKS_PER_SWEEP of the grid's expected cost: the long points still
# go alone and first, the many short ones in a few tasks at the end.

CHUNKS_PER_SWEEP = 48
CHUNK_MAX_POINTS = 16  # the progress bar still moves in small steps


def chunked(order: Sequence[int], points: Sequence[Mapping[str, Any]],
            chunks: int | None = None, most: int = CHUNK_MAX_POINTS) -> list[list[int]]:
    """`order` (indices) cut into runs of consecutive indices, each closed once its expected
    cost reaches 1/`chunks` (default CHUNKS_PER_SWEEP) of the total or it holds `most` points."""
    costs = [_expected_cost(points[i]) for i in order]
    share = sum(costs) / max(1, chunks or CHUNKS_PER_SWEEP)
    out: list[list[int]] = []
    cost = 0.0
    for i, c in zip(order, costs):
        if not out or cost >= share or len(out[-1]) >= most:
            out.append([])
            cost = 0.0
        out[-1].append(i)
        cost += c
    return out


def rows_or_failures(points: Sequence[Mapping[str, Any]]) -> list[tuple[dict[str, Any] | None, str | None]]:
    """One chunk, where the executor runs it: each point's (row, None) or (None, its error)."""
    return [_row_or_failure(p) for p in points]


def _run_on(executor: Executor, points: Sequence[Mapping[str, Any]],
            on_done: Callable[[int], None] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any] | None] = [None] * len(points)
    failed: dict[int, PointFailure] = {}
    # Longest first, so that no long point starts last and runs alone on one worker at the end.
    order = sorted(range(len(points)), key=lambda i: -_expected_cost(points[i]))
    futures: dict[Future, list[int]] = {}
    try:
        for chunk in chunked(order, points):
            futures[executor.submit(rows_or_failures, [points[i] for i in chunk])] = chunk
        for f in as_completed(futures):
            chunk = futures[f]
            exc = f.exception() if not f.cancelled() else CancelledError("cancelled by the executor")
            results = f.result() if exc is None else [(None, _error_text(exc))] * len(chunk)
            for i, (row, error) in zip(chunk, results):
                if error is None:
                    out[i] = row
                else:
                    failed[i] = PointFailure(points[i], error)
            if on_done:
                on_done(len(chunk))
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    return _finish(out, [failed[i] for i in sorted(failed)])


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def _finish(rows: Sequence[dict[str, Any] | None], failures: list[PointFailure]) -> list[dict[str, Any]]:
    kept = [r for r in rows if r is not None]
    if failures:
        raise SweepFailed(kept, failures)
    return kept


def run_sweep_with_progress(points: Sequence[Mapping[str, Any]], jobs: int | None, label: str,
                            executor: Executor | None = None) -> list[dict[str, Any]]:
    """`run_sweep` under a progress bar that moves as points complete, wherever they run; when
    stderr is a log, not a terminal, one line per point finished instead (a bar draws nothing
    there)."""
    finished = [0]

    def log_line(n: int) -> None:
        finished[0] += n
        click.echo(f"{label}: {finished[0]} of {len(points)} points", err=True)

    if not sys.stderr.isatty():
        return run_sweep(points, jobs, log_line, executor=executor)
    with _progress() as progress:
        task = progress.add_task(f"{label}: {len(points)} points", total=len(points))
        return run_sweep(points, jobs, lambda n: progress.update(task, advance=n), executor=executor)


def partial_path(path: Path) -> Path:
    """Where the rows of an interrupted sweep go: sweep.jsonl -> sweep.partial.jsonl."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def keep_partial_rows(interrupted: parallel.Interrupted, total: int, path: Path) -> exits.Interrupted:
    """Write the rows an interrupted sweep finished to `path`; the exit naming them."""
    rows = [interrupted.done[i][0] for i in sorted(interrupted.done) if interrupted.done[i][0] is not None]
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


@click.group("sweep", invoke_without_command=True)
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
@click.option("--jobs", type=int, help="processes, or LocalCluster workers with --executor dask (default: one per core)")
@click.option("--executor", type=click.Choice(["process", "dask"]),
              help="where the points run: this machine's process pool (default) or a Dask LocalCluster "
              "(needs pip install 'loopfix[distributed]')")
@click.option("--scheduler", metavar="tcp://HOST:PORT", help="run the points on a running Dask cluster")
@click.option("--shard", metavar="K/N", help="run only shard K of N of the grid (a CI matrix); join the shards' "
              "files with `loopfix sweep merge`")
@click.option("--check", is_flag=True, help="also run the invariant checker on every point (columns "
              "invariants_hold, broken, undecided; about a third slower)")
@click.option("--p95-target", type=float, help="answer: the workers that hold p95 time to playable <= this (s), "
              "with fewer than --max-failed of the sessions given up or errored, and the loads they hold...")
@click.option("--at-load", type=float, help="...and the fewest workers at this many calls per hour")
@click.option("--max-failed", type=click.FloatRange(0, 1, min_open=True), default=capacity.MAX_FAILED,
              show_default=True, help="the service level's bound on the gave-up and on the error rate "
              "(a fraction of all sessions)")
@click.option("--recover-within", type=float, help="answer: longest outage after which the backlog recovers "
              "within this many seconds")
@click.pass_context
def sweep_command(ctx: click.Context, base: str, workers: tuple, calls: tuple, latency: tuple, outage: tuple,
                  variants: str, seeds: tuple, outage_at: float, observe: float, mmc: bool, utilisation: tuple,
                  hours: float, out_path: Path, from_path: Path | None, jobs: int | None, executor: str | None,
                  scheduler: str | None, shard: str | None, check: bool, p95_target: float | None,
                  at_load: float | None, max_failed: float, recover_within: float | None) -> None:
    """Run the model over a grid of workers x calls per hour x Twilio latency x outage length x
    variant (x seed), in parallel (this machine's cores, or a Dask cluster), into a results
    table; answer "which workers hold p95 time to playable <= X, and up to which load"
    (--p95-target X, and the fewest at load Y with --at-load Y) and "how long an outage
    recovers within Z" (--recover-within Z). Every session counts: a point meets the level only
    when fewer than --max-failed of its sessions gave up and fewer errored, and its backlog
    drained; one that had not drained when observation ended is reported as not drained
    (overloaded)."""
    from loopfix.sweep_executors import placement
    from loopfix.sim import sweep

    if ctx.invoked_subcommand is not None:
        return
    if at_load is not None and p95_target is None:
        raise BadInput("--at-load needs --p95-target")
    if out_path.suffix not in (".jsonl", ".csv"):
        raise BadInput(f"--out must end in .jsonl or .csv, got {out_path.name}")
    code = 0
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
            points = [{**p, "check": check} for p in sweep.numbered(points)]
            if shard is not None:
                points = sweep.shard(points, *sweep.parse_shard(shard))
            started = time.perf_counter()
            with placement(executor, scheduler, jobs) as where:
                try:
                    rows = run_sweep_with_progress(points, jobs, "sweep", executor=where.executor)
                except SweepFailed as failed:
                    rows, code = failed.rows, 1
                    for f in failed.failures:
                        click.echo(f"error: {f.describe()}", err=True)
                except parallel.Interrupted as stop:
                    raise keep_partial_rows(stop, len(points), partial_path(out_path)) from None
            elapsed = time.perf_counter() - started
            capacity.write_rows(out_path, rows)
            part = f" (shard {shard} of {points[0]['grid_size'] if points else 0} points)" if shard else ""
            click.echo(f"{len(rows)} points{part} in {elapsed:.1f} s on {where.where} -> {out_path}", err=True)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise BadInput(f"cannot write {out_path}: {exc.strerror or exc}") from None
    sys.exit(_print_answers(rows, p95_target, at_load, recover_within, max_failed) or code)


@sweep_command.command("merge")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("sweep.jsonl"),
              show_default=True, help="the joined results: .jsonl or .csv")
def merge_command(files: tuple[Path, ...], out_path: Path) -> None:
    """Join the results of a grid's shards (`loopfix sweep --shard K/N --out FILE`, one per
    shard) into one table: the same rows as one run of the whole grid, in grid order. Answer
    from it with `loopfix sweep --from OUT ...`."""
    if out_path.suffix not in (".jsonl", ".csv"):
        raise BadInput(f"--out must end in .jsonl or .csv, got {out_path.name}")
    try:
        rows = capacity.merge_shards([(str(f), capacity.read_rows(f)) for f in files])
        capacity.write_rows(out_path, rows)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise BadInput(f"cannot write {out_path}: {exc.strerror or exc}") from None
    click.echo(f"{len(rows)} points from {len(files)} files -> {out_path}")


def _print_answers(rows: Sequence[Mapping[str, Any]], p95_target: float | None, at_load: float | None,
                   recover_within: float | None, max_failed: float = capacity.MAX_FAILED) -> int:
    code = 0
    for a in capacity.mmc_agreement(rows):
        click.echo(f"M/M/c c={a['workers']} rho={a['utilisation']:.2f}: mean wait {a['measured_wait_s']:.3f} s, "
                   f"Erlang C {a['erlang_c_wait_s']:.3f} s ({a['relative_error']:+.1%}, {a['jobs']} jobs)")
    overloaded = capacity.not_drained(rows)
    if overloaded:
        shown = "; ".join(f"{r['workers']} workers at {float(r['calls_per_hour']):g} calls/h [{r['variant']}, "
                          f"outage {float(r['outage_s']):g} s, {r.get('backlog_end')} jobs waiting]"
                          for r in overloaded[:5])
        more = f"; and {len(overloaded) - 5} more" if len(overloaded) > 5 else ""
        click.echo(f"{capacity.NOT_DRAINED} when observation ended: {shown}{more}")
    if p95_target is not None:
        lines = capacity.recommendation_lines(rows, p95_target, max_failed)
        if not lines:
            click.echo("no fixed-variant rows in the results to recommend from", err=True)
            code = 1
        for line in lines:
            click.echo(line)
    if p95_target is not None and at_load is not None:
        answers = capacity.min_workers(rows, p95_target, at_load, max_failed=max_failed)
        if not answers:
            click.echo(f"no fixed-variant rows at {at_load:g} calls/hour in the results", err=True)
            code = 1
        level = f"p95 <= {p95_target:g} s, < {max_failed * 100:g} % gave up or errored"
        for a in answers:
            where = f"latency {a['latency_median_s']:g} s, outage {a['outage_s']:g} s"
            if a["workers"] is None:
                code = 1
                why = "; ".join(f"{w} workers: {', '.join(j.reasons)}" for w, j in a["judgement_by_workers"].items())
                click.echo(f"{level} at {at_load:g} calls/h ({where}): no swept worker count "
                           f"({', '.join(map(str, a['swept_workers']))}) is enough — {why}")
            else:
                j = a["judgement_by_workers"][a["workers"]]
                click.echo(f"{level} at {at_load:g} calls/h ({where}): {a['workers']} workers "
                           f"(p95 {j.ttp_p95_s:.1f} s, {j.gave_up_rate * 100:.1f} % gave up, {j.error_rate * 100:.1f} % errors "
                           f"of {j.sessions} sessions)")
    if recover_within is not None:
        for a in capacity.longest_outage(rows, recover_within):
            what = ("none of the swept outages" if a["longest_outage_s"] is None
                    else f"{a['longest_outage_s']:g} s")
            code = code or (1 if a["longest_outage_s"] is None else 0)
            click.echo(f"recovers within {recover_within:g} s [{a['variant']}, {a['workers']} workers, "
                       f"{a['calls_per_hour']:g} calls/h]: longest outage {what}")
    return code


# --------------------------------------------------------------------------- loopfix report
