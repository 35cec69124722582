"""`loopfix sim`, `verify` and `demo`: the SimPy model and the invariant checker (issue 4).

Exit codes, for all three: 0 every invariant holds (demo: the fixed variant holds all ten in
every headline scenario), 1 one is broken or undecided ("unknown" is never a pass), 2 bad
input — a one-line message on stderr, never a traceback, 130 interrupted. Progress goes to
stderr: a bar on a terminal, a line per step in a log; output for logs: loopfix/output.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from loopfix.harness import history as history_mod
from loopfix.harness import invariants as inv
from loopfix.harness.scenario import Scenario, load_scenario, with_settings
from loopfix.reference_app import policy as policy_mod
from loopfix.reference_app.config import parse_assignments
from loopfix.exits import BadInput
from loopfix.junit import write_junit
from loopfix.output import chosen_format, console as output_console, format_options, plain_table

HEADLINE_SCENARIOS = ("steady", "retry-storm", "worker-outage", "slow-twilio", "missing-calllog", "worker-crash",
                      "delete-storm")
MARK = {True: "✓", False: "✗", inv.UNKNOWN: "?", inv.NOT_OBSERVABLE: "-"}
# Column labels of the demo table (the legend under it spells them out).
SHORT = {"loops-terminate": "loops", "no-duplicate-download": "dup-dl", "one-job-per-storm": "storm",
         "backoff-schedule": "backoff", "fail-fast": "ff", "status-semantics": "status",
         "idempotent-delete": "idem-del", "lock-exclusive": "lock", "nothing-lost": "lost",
         "worker-never-blocks": "no-block"}


def _assignments(items: Sequence[str]) -> dict[str, str]:
    try:
        return parse_assignments(items)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def read_history_warning_torn(path: Path) -> list[dict]:
    """The history at `path`, with one warning line on stderr per torn last line left out of
    it (a process killed mid-write); ValueError when it is not a history."""
    history, torn = history_mod.read_history_torn(path)
    for file, line in torn:
        click.echo(f"warning: {file} line {line}: torn last line (not JSON), left out; the lines before it "
                   f"were read", err=True)
    if not history:
        raise ValueError(f"{path}: no events in this history")
    return history


def junit_option(fn: Callable) -> Callable:
    """--junit-xml FILE: the verdicts as JUnit XML too, one testcase per invariant (for CI)."""
    return click.option("--junit-xml", "junit_path", type=click.Path(dir_okay=False, path_type=Path),
                        help="also write the verdicts to FILE as JUnit XML, one testcase per invariant (for CI)")(fn)


def write_junit_if_asked(path: Path | None, classname: str, verdicts: Sequence[inv.Verdict]) -> None:
    if path is None:
        return
    try:
        write_junit(path, classname, verdicts)
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None


def log_step(text: str) -> None:
    """One line on stderr when it is a log, not a terminal (where the progress bar shows it)."""
    if not sys.stderr.isatty():
        click.echo(text, err=True)


def _progress() -> Progress:
    """A progress bar on stderr; none when stderr is a log, not a terminal (it would draw
    nothing there but a blank line)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=True,
                    disable=not sys.stderr.isatty())


def verdicts_of_run(history: list[dict], info: dict[str, Any], p: policy_mod.Policy) -> list[inv.Verdict]:
    """The verdicts the command that made a run printed: a live run with the live backoff
    tolerance, a target run from outside with its recorded tolerances, a model run as is."""
    source = info.get("source")
    if source == "live":
        from loopfix.loadtests.verdicts import check_live

        return check_live(history, p)
    if source == "target":
        from loopfix.loadtests.target.run import check_target_history

        return check_target_history(history, info, p)
    return inv.check_all(history, p)


def _exit_code(verdicts: Iterable[inv.Verdict]) -> int:
    return 0 if inv.overall(verdicts) is True else 1


def _print_verdicts(console: Console, verdicts: Sequence[inv.Verdict], plain: bool = False) -> None:
    for v in verdicts:
        style = {True: "green", False: "bold red"}.get(v.valid, "yellow")  # type: ignore[arg-type]
        text = inv.render_verdict(v)
        head, _, rest = text.partition("\n")
        console.print(head if plain else f"[{style}]{MARK[v.valid]}[/] {head}", highlight=False,
                      markup=not plain)
        if rest:
            console.print(rest, highlight=False, markup=False)


def _summary_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "timeline"}


def _run(scenario: Scenario, progress: Progress, label: str = "", log: bool = True,
         history_path: Path | None = None) -> Any:
    """Simulate and check `scenario` as it runs (sim.simulate_checked: no history kept in
    memory; written to `history_path` as it happens when given), with its progress: the bar's
    task on a terminal, a line per tenth of the simulated time in a log (`log`)."""
    from loopfix.sim import simulate_checked  # the model is imported only by the commands that run it

    label = label or f"{scenario.name} [{scenario.variant}]"
    horizon = scenario.duration_s + scenario.drain_s
    task = progress.add_task(escape(label), total=1.0)  # "[fixed]" is text, not a style
    if log:
        log_step(f"sim: {label}: {scenario.duration_s:g} s simulated")
    tenths = [0]

    def step(fraction: float, events: int) -> None:
        progress.update(task, completed=fraction, description=escape(f"{label}: {events:,} events"))
        tenth = int(fraction * 10 + 1e-9)
        if log and tenth > tenths[0]:
            tenths[0] = tenth
            log_step(f"sim: {label}: {tenth * 10}% ({fraction * horizon:.0f} of {horizon:g} s simulated, "
                     f"{events:,} events checked)")

    result = simulate_checked(scenario, step, history_path)
    progress.remove_task(task)
    return result


# --------------------------------------------------------------------------- loopfix sim


@click.command("sim")
@click.argument("scenario")
@click.option("--variant", type=click.Choice(policy_mod.VARIANTS), help="before | seed | fixed (default: the file's)")
@click.option("--seed", type=int, help="random seed (default: the file's)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="write history.jsonl, run.json, verdicts.json and metrics.json here")
@format_options
@junit_option
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE",
              help="override a scenario field (workers.count=8) or a policy constant (stuck_timeout_s=900)")
def sim_command(scenario: str, variant: str | None, seed: int | None, out_dir: Path | None, fmt: str, as_json: bool,
                junit_path: Path | None, sets: tuple[str, ...]) -> None:
    """Simulate SCENARIO (a name under scenarios/ or a .toml path) and check every invariant."""
    fmt = chosen_format(fmt, as_json)
    try:
        s = with_settings(load_scenario(scenario), variant=variant, seed=seed, assignments=_assignments(sets))
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    history_path = out_dir / history_mod.HISTORY_FILE if out_dir is not None else None
    try:
        with _progress() as progress:  # json: stdout for machines, stderr quiet
            result = _run(s, progress, log=fmt != "json", history_path=history_path)
        verdicts = list(result.verdicts)
        if out_dir is not None:
            history_mod.write_run_info(out_dir, result.run_info())
            (out_dir / "verdicts.json").write_text(json.dumps([v.to_dict() for v in verdicts], indent=1) + "\n")
            (out_dir / "metrics.json").write_text(json.dumps(result.metrics, indent=1) + "\n")
    except OSError as exc:
        raise BadInput(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
    write_junit_if_asked(junit_path, f"{s.name}[{s.variant}]", verdicts)
    if fmt == "json":
        click.echo(json.dumps({"scenario": s.name, "variant": s.variant, "seed": s.seed,
                               "valid": inv.overall(verdicts), "verdicts": [v.to_dict() for v in verdicts],
                               "metrics": _summary_metrics(result.metrics)}, indent=1))
    else:
        console = output_console(fmt)
        console.print(f"[bold]{s.name}[/] variant={s.variant} seed={s.seed}: {result.events} events"
                      + (f", written to {out_dir}" if out_dir else ""), highlight=False)
        _print_verdicts(console, verdicts, plain=fmt == "plain")
        m = result.metrics
        ttp = m["time_to_playable_s"]
        console.print(f"time to playable p50={_fmt(ttp['p50'])} s p90={_fmt(ttp['p90'])} s; "
                      f"requests per playback mean={_fmt(m['requests_per_playback']['mean'])}; "
                      f"jobs per recording max={_fmt(m['jobs_per_recording']['max'])}; "
                      f"downloads per recording max={_fmt(m['downloads_per_recording']['max'])}; "
                      f"utilisation mean={_fmt(m['utilisation']['mean'])}", highlight=False)
    sys.exit(_exit_code(verdicts))


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)


# --------------------------------------------------------------------------- loopfix verify


@click.command("verify")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--variant", type=click.Choice(policy_mod.VARIANTS),
              help="the policy to check against when DIRECTORY has no run.json (default fixed)")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="override a policy constant")
@format_options
@junit_option
def verify_command(directory: Path, variant: str | None, sets: tuple[str, ...], fmt: str, as_json: bool,
                   junit_path: Path | None) -> None:
    """Check every invariant on a history: a run directory of *.jsonl files (live or sim,
    merged by time) or one .jsonl file. The bounds come from the directory's run.json, else
    from --variant/--set."""
    fmt = chosen_format(fmt, as_json)
    try:
        history = read_history_warning_torn(directory)
        problems = history_mod.validate(history)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ValueError(f"{directory}: malformed history: {problems[0]}{more}")
        info = history_mod.read_run_info(directory) if directory.is_dir() else None
        info = dict(info or {})
        if variant is not None:
            info["variant"] = variant
        overrides = _assignments(sets)
        if overrides:
            info["policy"] = {**(info.get("policy") or {}), **overrides}
        p = history_mod.policy_from_run_info(info)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    verdicts = verdicts_of_run(history, info, p)
    write_junit_if_asked(junit_path, directory.resolve().name, verdicts)
    if fmt == "json":
        click.echo(json.dumps({"directory": str(directory), "events": len(history), "variant": p.variant,
                               "valid": inv.overall(verdicts), "verdicts": [v.to_dict() for v in verdicts]},
                              indent=1))
    else:
        console = output_console(fmt)
        sources = sorted({str(e.get("source")) for e in history})
        console.print(f"[bold]{escape(str(directory))}[/]: {len(history)} events ({', '.join(sources) or 'none'}), "
                      f"checked against variant={p.variant}", highlight=False)
        _print_verdicts(console, verdicts, plain=fmt == "plain")
    sys.exit(_exit_code(verdicts))


# --------------------------------------------------------------------------- loopfix demo

# What each seed claims, which invariant tests it, and in which headline scenario.
SEED_CLAIMS: tuple[tuple[str, str, str], ...] = (
    ("000", "recording retries back off 60→960 s, at most 5", "backoff-schedule"),
    ("000", "duplicate delete requests return the same job_id", "idempotent-delete"),
    ("002", "no infinite polling: the player stops, stuck jobs are detected", "loops-terminate"),
    ("002", "worker down: 3 attempts in 10 min, then 500", "fail-fast"),
    ("002", "200 ready / 202 with Retry-After / 404 only without a URL", "status-semantics"),
    ("003", "PlaybackDedup: repeated clicks do not re-enqueue", "one-job-per-storm"),
    ("003", "the BulkGate lock is held through pause: no concurrent deletes", "lock-exclusive"),
    ("004", "no duplicate downloads (TTL 900 s, stuck detection)", "no-duplicate-download"),
    ("004", "the worker defers, it never blocks", "worker-never-blocks"),
    ("000", "nothing lost: every recording downloaded, every lead deleted once", "nothing-lost"),
)


def run_demo(scenarios: Sequence[str] = HEADLINE_SCENARIOS, variants: Sequence[str] = policy_mod.VARIANTS,
             on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every scenario under every variant and check every invariant: plain data."""
    from loopfix.sim import simulate_checked

    cells: list[dict[str, Any]] = []
    for name in scenarios:
        base = load_scenario(name)
        for variant in variants:
            if on_step:
                on_step(f"{name} [{variant}]")
            result = simulate_checked(with_settings(base, variant=variant))
            cells.append({"scenario": name, "variant": variant, "events": result.events,
                          "verdicts": list(result.verdicts), "metrics": result.metrics})
    return {"cells": cells, "claims": _claims(cells)}


def _claims(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for seed, text, name in SEED_CLAIMS:
        per_variant: dict[str, Any] = {}
        for variant in policy_mod.VARIANTS:
            broken = [(c["scenario"], v) for c in cells if c["variant"] == variant
                      for v in c["verdicts"] if v.name == name and v.valid is not True]
            first = broken[0] if broken else None
            example = None
            if first is not None and first[1].anomalies:
                a = next(iter(first[1].anomalies.values()))[0]
                example = {"scenario": first[0], "anomaly": inv.render_anomaly(a),
                           "witnesses": [inv.render_event(w) for w in a.witnesses[:3]]}
            per_variant[variant] = {"holds": not broken, "broken_in": sorted({s for s, _ in broken}),
                                    "example": example}
            if name == "fail-fast":  # the claim's second half: past the limit the answer is a 500
                per_variant[variant]["trips"] = sum(v.figure.get("trips", 0) for c in cells if c["variant"] == variant
                                                    for v in c["verdicts"] if v.name == name)
        out.append({"seed": seed, "claim": text, "invariant": name, "variants": per_variant})
    # the '~52 minutes' claim: configured schedule vs the claim vs what the model measured
    describe = policy_mod.describe(policy_mod.make_policy("fixed"))["claim_52_min"]
    measured = [v.figure.get("measured_full_schedule_total_s") for c in cells if c["variant"] == "fixed"
                for v in c["verdicts"] if v.name == "backoff-schedule"]
    measured = [m for m in measured if m is not None]
    out.append({"seed": "000", "claim": "~52 minutes before a recording fails for good",
                "invariant": "backoff-schedule",
                "variants": {"fixed": {"holds": bool(describe["holds"]), "broken_in": [], "example": None}},
                "explanation": describe["explanation"], "claimed_s": describe["claimed_s"],
                "configured_total_s": describe["configured_total_s"],
                "six_retries_total_s": describe["six_retries_total_s"],
                "measured_total_s": (sum(measured) / len(measured)) if measured else None})
    return out


@click.command("demo")
@format_options
@click.option("--scenario", "only", multiple=True, help="run only these headline scenarios")
def demo_command(fmt: str, as_json: bool, only: tuple[str, ...]) -> None:
    """Run the headline scenarios under before, seed and fixed with no services: one table of
    scenario x variant -> each invariant, with the witnesses of every break and which of the
    seeds' claims hold."""
    fmt = chosen_format(fmt, as_json)
    names = only or HEADLINE_SCENARIOS
    try:
        for n in names:
            load_scenario(n)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    with _progress() as progress:
        task = progress.add_task("demo", total=len(names) * len(policy_mod.VARIANTS))

        def step(label: str) -> None:
            progress.update(task, description=label, advance=1)
            if fmt != "json":
                log_step(f"demo: {label}")

        demo = run_demo(names, on_step=step)
    fixed_ok = all(inv.overall(c["verdicts"]) is True for c in demo["cells"] if c["variant"] == "fixed")
    if fmt == "json":
        click.echo(json.dumps({
            "fixed_holds_everywhere": fixed_ok,
            "cells": [{"scenario": c["scenario"], "variant": c["variant"], "events": c["events"],
                       "verdicts": [v.to_dict() for v in c["verdicts"]]} for c in demo["cells"]],
            "claims": demo["claims"]}, indent=1, default=str))
    else:
        _print_demo(output_console(fmt), demo, fixed_ok, plain=fmt == "plain")
    sys.exit(0 if fixed_ok else 1)


def _demo_plain_table(demo: dict[str, Any]) -> str:
    """The demo's table as aligned words with the invariants' full names: for logs."""
    rows = [(c["scenario"], c["variant"], *(inv.valid_label(v.valid) for v in c["verdicts"])) for c in demo["cells"]]
    return plain_table(("scenario", "variant", *inv.INVARIANTS), rows)


def _print_demo(console: Console, demo: dict[str, Any], fixed_ok: bool, plain: bool = False) -> None:
    if plain:
        console.print("loopfix demo: invariants per scenario and variant", markup=False)
        console.print(_demo_plain_table(demo), markup=False)
    else:
        console.print(_demo_table(demo))
        console.print("  " + ", ".join(f"{SHORT[n]} = {n}" for n in inv.INVARIANTS), highlight=False)
    _print_demo_witnesses(console, demo, fixed_ok)


def _demo_table(demo: dict[str, Any]) -> Table:
    table = Table(title="loopfix demo: invariants per scenario and variant (✓ holds, ✗ broken, ? unknown)")
    table.add_column("scenario", no_wrap=True)
    table.add_column("variant")
    for name in inv.INVARIANTS:
        table.add_column(SHORT.get(name, name), justify="center")
    style = {True: "green", False: "red", inv.UNKNOWN: "yellow"}
    previous = None
    for c in demo["cells"]:
        marks = [f"[{style[v.valid]}]{MARK[v.valid]}[/]" for v in c["verdicts"]]
        table.add_row(c["scenario"] if c["scenario"] != previous else "", c["variant"], *marks,
                      end_section=c["variant"] == policy_mod.VARIANTS[-1])
        previous = c["scenario"]
    return table


def _print_demo_witnesses(console: Console, demo: dict[str, Any], fixed_ok: bool) -> None:
    console.print("[bold]Witnesses[/] (first break of each invariant per variant):")
    seen: set[tuple[str, str]] = set()
    for c in demo["cells"]:
        for v in c["verdicts"]:
            if v.valid is True or (c["variant"], v.name) in seen or not v.anomalies:
                continue
            seen.add((c["variant"], v.name))
            a = next(iter(v.anomalies.values()))[0]
            console.print(f"  {c['variant']:6s} {v.name} in {c['scenario']}: {inv.render_anomaly(a)}",
                          highlight=False, markup=False)
            for w in a.witnesses[:2]:
                console.print(f"      {inv.render_event(w)}", highlight=False, markup=False)
    console.print("[bold]Seed claims[/]:")
    for claim in demo["claims"]:
        if "explanation" in claim:
            holds = claim["variants"]["fixed"]["holds"]
            measured = claim["measured_total_s"]
            console.print(
                f"  [{claim['seed']}] {claim['claim']}: {'holds' if holds else 'does NOT hold'} — "
                f"{claim['explanation']}"
                + (f"; measured in the model (fixed): {measured:.0f} s" if measured else ""),
                highlight=False, markup=False)
            continue
        seed_v, fixed_v = claim["variants"]["seed"], claim["variants"]["fixed"]
        verdict = "holds" if seed_v["holds"] else f"does NOT hold as written (broken in {', '.join(seed_v['broken_in'])})"
        fixed = "fixed holds" if fixed_v["holds"] else f"fixed broken in {', '.join(fixed_v['broken_in'])}"
        if "trips" in seed_v:
            verdict += f" but fail-fast tripped {seed_v['trips']} times (fixed: {fixed_v['trips']})"
        console.print(f"  [{claim['seed']}] {claim['claim']} ({claim['invariant']}): seed code {verdict}; {fixed}",
                      highlight=False, markup=False)
    console.print("fixed holds every invariant in every scenario" if fixed_ok
                  else "[red]fixed breaks an invariant: see the table[/]")


def register(cli: click.Group) -> None:
    """Attach the model's commands to the `loopfix` group."""
    cli.add_command(sim_command)
    cli.add_command(verify_command)
    cli.add_command(demo_command)
