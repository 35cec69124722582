"""The contract tests' fixture: `make(...)` builds the adapter of the test's parameter
(adapters.ADAPTERS: `redis`, `model`) with a clock the test moves (adapters.py)."""
from __future__ import annotations

import pytest

from adapters import ADAPTERS, Subject, build
from loopfix.reference_app.policy import make_policy


@pytest.fixture(params=ADAPTERS)
def make(request):
    """make(variant='fixed', faults='', **policy overrides) -> Subject for this adapter."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None

    def factory(variant: str = "fixed", faults: str = "", **overrides) -> Subject:
        return build(request.param, make_policy(variant, faults, 1.0, overrides), url)

    return factory
