"""reference_app/policy/core.py, faults.py, events.py: the Policy value, the variants, the event
schema — and the core importing nothing but the standard library."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loopfix.reference_app.policy import FAULTS, Policy, Variant, make_policy
from loopfix.reference_app.policy.events import dumps, event


def test_a_variant_given_as_the_enum_is_stored_as_its_plain_string():
    p = Policy(variant=Variant.SEED)
    assert p == Policy(variant="seed") and type(p.variant) is str and repr(p) == repr(Policy(variant="seed"))


def test_an_unknown_variant_or_fault_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="before, seed, fixed"):
        Policy(variant="broken")
    with pytest.raises(ValueError, match="known:"):
        Policy(extra_faults=frozenset({"no_such_fault"}))
    with pytest.raises(KeyError):
        Policy().has("no_such_fault")


@pytest.mark.parametrize("scale", [0, -1, float("inf"), float("nan")])
def test_a_time_scale_that_is_not_a_positive_number_is_refused(scale):
    with pytest.raises(ValueError):
        Policy(time_scale=scale)


def test_one_extra_fault_switches_on_exactly_that_fault():
    p = make_policy("fixed", "no_heartbeat")
    assert p.has("no_heartbeat") is True and p.faults == frozenset({"no_heartbeat"})


def test_every_fault_is_on_in_some_variant_or_only_by_name():
    on = set().union(*(make_policy(v).faults for v in Variant))
    assert set(FAULTS) - on == {"redirect_followed_anywhere", "tenant_unscoped_lookup"}
    assert make_policy("fixed").faults == frozenset()


def test_wall_time_scales_and_a_ttl_is_never_below_one_millisecond():
    p = Policy(time_scale=0.01)
    assert p.wall(60) == pytest.approx(0.6) and p.wall_ms(60) == 600 and p.wall_ms(0.00001) == 1
    assert p.policy_seconds(0.6) == pytest.approx(60)


def test_an_event_of_an_unknown_kind_fails_loudly():
    with pytest.raises(KeyError):
        event("job.strat", 0, "sim", "worker-0")


def test_an_event_is_dumped_canonically():
    record = event("fail_fast.trip", 1.23456789, "live", "web-1", call_sid="CA1", count=4)
    assert dumps(record) == ('{"call_sid":"CA1","count":4,"kind":"fail_fast.trip","proc":"web-1",'
                             '"source":"live","t":1.234568}')
    assert json.loads(dumps(record)) == record


def test_importing_the_core_imports_no_flask_redis_sqlalchemy_or_simpy():
    code = ("import sys, reference_app.policy, reference_app.policy.events; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'flask', 'redis', 'sqlalchemy', 'simpy', 'rq'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
