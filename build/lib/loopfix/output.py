"""Where the commands' tables and verdict lines go: a terminal, or a log.

On a terminal the output is rich's: tables with box drawing and colour, at the terminal's
width. Piped into a file or a CI log, rich would assume 80 columns and cut table cells to
"be…"; there the console is wide enough that nothing is cut or wrapped. `--format plain` drops
box drawing, colour and the one-letter marks for aligned columns of words; `--format json` is
for machines (each command prints its own JSON).
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

import click
from rich.console import Console

FORMATS = ("rich", "plain", "json")
LOG_WIDTH = 10_000  # columns when stdout is not a terminal: no table cut, no line wrapped


def console(fmt: str = "rich") -> Console:
    """A console on stdout for `fmt`: rich on a terminal at its width; wide when stdout is a
    file or a pipe; and for plain, wide with no colour, no markup styles and no emoji."""
    if fmt == "plain":
        return Console(width=LOG_WIDTH, no_color=True, emoji=False, highlight=False, force_terminal=False)
    if sys.stdout.isatty():
        return Console()
    return Console(width=LOG_WIDTH)


def plain_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns of words aligned with two spaces, a header line first: for logs and grep."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def format_options(fn: Callable) -> Callable:
    """--format rich|plain|json, and --json (the same as --format json): the command gets
    `fmt` (use `chosen_format(fmt, as_json)`)."""
    fn = click.option("--json", "as_json", is_flag=True, help="the same as --format json")(fn)
    fn = click.option("--format", "fmt", type=click.Choice(FORMATS), default="rich", show_default=True,
                      help="rich: tables (full width when stdout is not a terminal); plain: aligned words, no "
                           "colour or box drawing, for logs; json: for machines")(fn)
    return fn


def chosen_format(fmt: str, as_json: bool) -> str:
    return "json" if as_json else fmt
