"""The scenario format: every named scenario parses, and a bad field says what to fix."""
from __future__ import annotations

import pytest

from harness.scenario import list_scenarios, load_scenario, parse_scenario, with_settings

REQUIRED = {"steady", "retry-storm", "worker-outage", "slow-twilio", "missing-calllog", "worker-crash", "delete-storm"}


def test_every_required_scenario_exists_and_parses():
    assert REQUIRED <= set(list_scenarios())
    for name in list_scenarios():
        s = load_scenario(name)
        assert s.name == name
        assert s.make_policy().variant == s.variant


def test_scenarios_carry_what_a_load_test_needs():
    s = load_scenario("worker-outage")
    assert s.users >= 1 and s.duration_s > 0 and s.time_scale > 0 and s.variant in ("before", "seed", "fixed")
    outage = s.outages[0]
    assert (outage.target, outage.how, outage.at_s, outage.duration_s) == ("workers", "stop", 600, 1200)


def test_unknown_field_names_its_table_and_the_known_fields():
    with pytest.raises(ValueError, match=r"unknown field 'latency' in \[twilio\]; known: .*latency_median_s"):
        parse_scenario({"twilio": {"latency": 3}})


def test_fraction_out_of_range_says_what_it_must_be():
    with pytest.raises(ValueError, match=r"twilio.fault_rate must be a number between 0 and 1, got 1.5"):
        parse_scenario({"twilio": {"fault_rate": 1.5}})


def test_worker_count_must_be_a_whole_number():
    with pytest.raises(ValueError, match=r"workers.count must be a whole number >= 1, got 2.5"):
        parse_scenario({"workers": {"count": 2.5}})


def test_range_must_be_ordered():
    with pytest.raises(ValueError, match=r"twilio.slow_range_s must be a pair \[low, high\]"):
        parse_scenario({"twilio": {"slow_range_s": [600, 300]}})


def test_redis_outage_must_be_a_pause():
    with pytest.raises(ValueError, match=r"outages\[0\]: a redis outage must have how = 'redis_pause'"):
        parse_scenario({"outages": [{"target": "redis", "how": "crash", "at_s": 1, "duration_s": 1}]})


def test_outage_cannot_take_more_workers_than_exist():
    with pytest.raises(ValueError, match=r"outages\[0\].workers is 9 but \[workers\] count is 4"):
        parse_scenario({"outages": [{"target": "workers", "how": "stop", "workers": 9}]})


def test_unknown_variant_lists_the_variants():
    with pytest.raises(ValueError, match=r"variant must be one of before, seed, fixed"):
        parse_scenario({"variant": "after"})


def test_bad_policy_constant_is_reported_under_policy():
    with pytest.raises(ValueError, match=r"\[policy\]: unknown policy constant 'stuck_s'"):
        parse_scenario({"policy": {"stuck_s": 1}})


def test_policy_table_reaches_the_policy():
    s = parse_scenario({"policy": {"stuck_timeout_s": 900, "max_retries": 6}, "faults": ["stuck_by_age"]})
    p = s.make_policy()
    assert p.stuck_timeout_s == 900 and p.max_recording_retries == 6 and p.has("stuck_by_age")


def test_set_changes_a_scenario_field_or_a_policy_constant():
    s = with_settings(load_scenario("steady"), variant="seed", seed=9,
                      assignments={"workers.count": "8", "duration_s": "60", "stuck_timeout_s": "900"})
    assert (s.variant, s.seed, s.workers.count, s.duration_s) == ("seed", 9, 8, 60.0)
    assert s.make_policy().stuck_timeout_s == 900


def test_set_of_an_unknown_name_says_what_names_are_accepted():
    with pytest.raises(ValueError, match=r"--set nope: not a scenario field"):
        with_settings(load_scenario("steady"), assignments={"nope": "1"})


def test_missing_scenario_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"no scenario 'nosuch'.*steady"):
        load_scenario("nosuch")


def test_arrival_profile_steps_the_rate():
    s = parse_scenario({"arrivals": {"calls_per_hour": 100, "profile": [[600, 300], [1200, 0]]}})
    assert [s.arrivals.rate_at(t) for t in (0, 599, 600, 1300)] == [100, 100, 300, 0]


def test_scenario_round_trips_through_plain_data():
    s = load_scenario("worker-crash")
    assert parse_scenario(s.to_dict(), name=s.name) == s
