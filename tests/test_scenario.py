"""The scenario format: every named scenario parses, and a bad field says what to fix."""
from __future__ import annotations

import pytest

from loopfix.harness.scenario import list_scenarios, load_scenario, parse_scenario, with_settings

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


def test_redis_outage_must_be_a_pause_or_a_restart():
    with pytest.raises(ValueError, match=r"outages\[0\]: a redis outage must have how = 'redis_pause' or "
                                         r"'redis_restart', got 'crash'"):
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


def test_a_redis_restart_and_a_twilio_degrade_window_parse():
    s = parse_scenario({"outages": [
        {"target": "redis", "how": "redis_restart", "at_s": 300, "duration_s": 20},
        {"target": "twilio", "at_s": 100, "duration_s": 200, "fault_rate": 0.5, "latency_median_s": 12},
    ]})
    restart, window = s.outages
    assert (restart.target, restart.how, restart.end_s) == ("redis", "redis_restart", 320)
    assert (window.how, window.fault_rate, window.latency_median_s) == ("degrade", 0.5, 12.0)  # how defaults
    assert with_settings(s, assignments={"duration_s": "600"}).outages == s.outages  # survives --set


def test_a_twilio_window_must_say_what_changes():
    with pytest.raises(ValueError, match=r"outages\[0\]: a twilio degrade window needs latency_median_s and/or "
                                         r"fault_rate"):
        parse_scenario({"outages": [{"target": "twilio", "how": "degrade", "at_s": 10}]})


def test_a_twilio_window_fault_rate_must_be_a_probability():
    with pytest.raises(ValueError, match=r"outages\[0\].fault_rate must be a number between 0 and 1, got 1.5"):
        parse_scenario({"outages": [{"target": "twilio", "fault_rate": 1.5}]})


def test_a_twilio_window_latency_must_be_positive():
    with pytest.raises(ValueError, match=r"outages\[1\].latency_median_s must be a number > 0, got 0"):
        parse_scenario({"outages": [{"target": "twilio", "fault_rate": 0.5},
                                    {"target": "twilio", "latency_median_s": 0}]})


def test_window_fields_belong_to_twilio_outages_only():
    with pytest.raises(ValueError, match=r"outages\[0\]: fault_rate applies only to target = 'twilio'"):
        parse_scenario({"outages": [{"target": "redis", "how": "redis_restart", "fault_rate": 0.2}]})


def test_how_must_fit_the_target():
    with pytest.raises(ValueError, match=r"outages\[0\]: a workers outage must have how = 'stop' or 'crash', "
                                         r"got 'redis_restart'"):
        parse_scenario({"outages": [{"target": "workers", "how": "redis_restart"}]})
    with pytest.raises(ValueError, match=r"outages\[0\]: a twilio outage must have how = 'degrade', got 'crash'"):
        parse_scenario({"outages": [{"target": "twilio", "how": "crash", "fault_rate": 0.5}]})
    with pytest.raises(ValueError, match=r"outages\[0\].target must be one of workers, redis, scheduler, twilio"):
        parse_scenario({"outages": [{"target": "database"}]})
