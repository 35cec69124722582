"""`loopfix sim`, `verify` and `demo`: the SimPy model and the invariant checker (issue 4)."""
from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Attach the model's commands to the `loopfix` group (none yet)."""
