"""`loopfix target init | check`: write a target file, and check one against the running service
(issue 15). The storms themselves run with `loopfix loadtest SCENARIO --target TARGET.toml`.

Exit codes: 0 every check passed, 1 one failed, 2 bad input (a target file with mistakes: one
line each on stderr, never a traceback), 130 interrupted.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from loopfix.loadtests.target import doctor
from loopfix.loadtests.target.config import INIT_TEXT, TargetFileError, load_target
from loopfix.sim_commands import BadInput

INTERRUPTED = 130


@click.group("target")
def target_group() -> None:
    """Point loopfix at your own service.

    \b
    1. loopfix target init              write target.toml, every setting explained
    2. edit it: url, time_scale, fixtures (your businesses' tokens), [media], [hooks]
    3. loopfix target check target.toml  does loopfix reach the service as a run needs?
    4. loopfix loadtest conformance --target target.toml
    """


@target_group.command("init", short_help="Write a commented example target file.")
@click.argument("path", default="target.toml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def init_command(path: Path, force: bool) -> None:
    """Write a commented example target file to PATH (default target.toml).

    Every setting is explained in a comment; the defaults point at reference_app served on
    127.0.0.1:8000 at time_scale 0.01. An existing file is kept unless --force.
    """
    if path.exists() and not force:
        raise BadInput(f"{path} exists; pass --force to overwrite it")
    try:
        path.write_text(INIT_TEXT)
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None
    fixtures = path.parent / "fixtures.json"
    click.echo(f"wrote {path}. Next:")
    click.echo(f"  1. set url, time_scale and [media] in {path} to match your service")
    click.echo(f"  2. write {fixtures} (your businesses' api_token, account_sid, auth_token); "
               f"for reference_app: loopfix seed --businesses 2 --calls 0 --leads 200 --json > {fixtures}")
    click.echo(f"  3. loopfix target check {path}")


@target_group.command("check", short_help="Check a target file and the service it names.")
@click.argument("target_file", metavar="TARGET.toml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON instead of lines.")
@click.pass_context
def check_command(ctx: click.Context, target_file: Path, as_json: bool) -> None:
    """Check a target file, then check the service it names, as a load run would use it.

    \b
    The file: every mistake is one line on stderr (exit 2). The service:
      - it answers at `url` (GET healthz)
      - each business's api_token lists its leads
      - a signed call-status webhook is accepted, an unsigned one refused
      - a recording on loopfix's media stand-in ([media] host:port, served here while the
        check runs) is accepted, fetched by the service's workers and played back whole
      - the [hooks] run, and the workers fetch again after workers_start
    Prints `ok`, `FAIL ... — fix` or `skip` per check. It creates a few calls and two
    recordings in the service, all with fresh sids. Exit 0 all ok, 1 any failed.
    """
    try:
        config = load_target(target_file)
    except TargetFileError as exc:
        for line in exc.problems:
            click.echo(f"error: {line}", err=True)
        ctx.exit(2)
    show = None if as_json else (lambda finding: click.echo(finding.line()))
    try:
        findings = doctor.check(config, on_finding=show)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        ctx.exit(INTERRUPTED)
    failed = [f for f in findings if not f.ok]
    if as_json:
        click.echo(json.dumps({"target": str(config.source), "ok": not failed,
                               "findings": [f.as_dict() for f in findings]}, indent=2))
    else:
        click.echo(f"{len(failed)} of {len(findings)} checks failed" if failed else
                   f"all {len(findings)} checks passed", err=True)
    sys.stdout.flush()
    ctx.exit(1 if failed else 0)


def register(cli: click.Group) -> None:
    cli.add_command(target_group)
