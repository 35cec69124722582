"""The `loopfix` command line: the only place that imports sim/, loadtests/ and reports/.

Each area registers its commands from its own module (`loopfix/app_commands.py` for the
reference app, `loopfix/sim_commands.py` for the model and the checker), imported when one of
its commands is asked for (COMMANDS); this module only builds the group, turns user mistakes
into exit code 2 with a message, never a traceback, and Ctrl-C into exit code 130
(loopfix/exits.py).
"""
from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

import click

from loopfix.exits import LoopfixGroup

# every command -> the module whose register() attaches it: a command's module (and what it
# imports: the model, SQLAlchemy, Redis, Flask...) is imported only when that command runs or
# the help lists it — `loopfix sim` does not pay for the load tests' imports (0.6 CPU s)
COMMANDS = {
    "serve": "app_commands", "worker": "app_commands", "twilio-stub": "app_commands", "seed": "app_commands",
    "policy": "app_commands", "sim": "sim_commands", "verify": "sim_commands", "demo": "sim_commands",
    "loadtest": "loadtest_commands", "stack": "loadtest_commands", "sweep": "report_commands",
    "report": "report_commands", "bench": "bench_commands", "target": "target_commands", "status": "status_commands",
}


def installed_version() -> str:
    """The version of the installed distribution (its metadata, not a constant in the code)."""
    try:
        return metadata.version("loopfix")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


class Commands(LoopfixGroup):
    """The `loopfix` group: its commands' modules imported on first use (COMMANDS)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> Any:
        if name not in self.commands and name in COMMANDS:
            importlib.import_module(f"loopfix.{COMMANDS[name]}").register(self)
        return super().get_command(ctx, name)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


def main() -> None:
    cli(prog_name="loopfix")


if __name__ == "__main__":
    main()
