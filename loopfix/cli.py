"""The `loopfix` command line: the only place that imports sim/, loadtests/ and reports/.

Each area registers its commands from its own module (`loopfix/app_commands.py` for the
reference app, `loopfix/sim_commands.py` for the model and the checker); this module only
builds the group and turns user mistakes into exit code 2 with a message, never a traceback.
"""
from __future__ import annotations

import click

from loopfix import app_commands, bench_commands, loadtest_commands, report_commands, sim_commands, target_commands


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """loopfix: reproduce the recording service's retry loops, and show their fixes end them.

    Start with `loopfix demo` (no services needed). Run the real app with `loopfix serve`,
    `loopfix worker` and `loopfix twilio-stub`; see every constant with `loopfix policy`.
    """


app_commands.register(cli)
sim_commands.register(cli)
loadtest_commands.register(cli)
report_commands.register(cli)
bench_commands.register(cli)
target_commands.register(cli)


def main() -> None:
    cli(prog_name="loopfix")


if __name__ == "__main__":
    main()
