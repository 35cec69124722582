"""The `loopfix` command line: the only place that imports sim/, loadtests/ and reports/.

Each area registers its commands from its own module (`loopfix/app_commands.py` for the
reference app, `loopfix/sim_commands.py` for the model and the checker); this module only
builds the group, turns user mistakes into exit code 2 with a message, never a traceback, and
Ctrl-C into exit code 130 (loopfix/exits.py).
"""
from __future__ import annotations

from importlib import metadata

import click

from loopfix import app_commands, bench_commands, loadtest_commands, report_commands, sim_commands, target_commands
from loopfix import status_commands
from loopfix.exits import LoopfixGroup


def installed_version() -> str:
    """The version of the installed distribution (its metadata, not a constant in the code)."""
    try:
        return metadata.version("loopfix")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


@click.group(cls=LoopfixGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(installed_version(), "--version", "-V", prog_name="loopfix", message="%(prog)s %(version)s")
def cli() -> None:
    """loopfix: reproduce the recording service's retry loops, and show their fixes end them.

    Start with `loopfix demo` (no services needed). Run the real app with `loopfix serve`,
    `loopfix worker` and `loopfix twilio-stub`; see every constant and known fault with
    `loopfix policy`.

    \b
    Exit codes, for every command:
      0    holds: every invariant holds, or the command did what was asked
      1    broken: an invariant is broken or undecided ("unknown" is never a pass)
      2    usage or bad input: one line on stderr, never a traceback
      130  interrupted (Ctrl-C): one line naming the partial results kept
    """


app_commands.register(cli)
sim_commands.register(cli)
loadtest_commands.register(cli)
report_commands.register(cli)
bench_commands.register(cli)
target_commands.register(cli)
status_commands.register(cli)


def main() -> None:
    cli(prog_name="loopfix")


if __name__ == "__main__":
    main()
