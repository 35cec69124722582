"""Exit codes of every `loopfix` command, and how an interrupt becomes one.

    0    holds: every invariant holds / the command did what was asked
    1    broken: an invariant is broken or undecided ("unknown" is never a pass)
    2    usage or bad input: a one-line message on stderr, never a traceback
    130  interrupted (Ctrl-C): one line on stderr naming what partial results were kept

A command that keeps partial results raises `Interrupted("...")` naming them; any other
KeyboardInterrupt is turned into the bare "interrupted" line by the `loopfix` group
(`LoopfixGroup`), so that Ctrl-C never exits 1, the code of a broken invariant.
"""
from __future__ import annotations

from typing import Any

import click

HOLDS = 0
BROKEN = 1
BAD_INPUT = 2
INTERRUPTED = 130


class BadInput(click.ClickException):
    """Exit 2 with a one-line message."""

    exit_code = BAD_INPUT

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class Interrupted(click.ClickException):
    """Exit 130 with one line: "interrupted" and, when there are any, what was kept."""

    exit_code = INTERRUPTED

    def __init__(self, kept: str = "") -> None:
        super().__init__(kept)

    def format_message(self) -> str:
        return f"interrupted: {self.message}" if self.message else "interrupted"

    def show(self, file: Any = None) -> None:
        click.echo(self.format_message(), err=True)


class LoopfixGroup(click.Group):
    """A group whose commands exit 130 on Ctrl-C (click's default is "Aborted!" and exit 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted() from None
