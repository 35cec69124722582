"""loadtests/shapes.py: the storm profiles as tables and the pure tick, Locust's -u/-r/-t in it."""
from __future__ import annotations

from loopfix.loadtests.shapes import PROFILES, Given, shape_tick, users_at

STORM = PROFILES["storm"]


def tick(t_wall_s: float, given: Given = Given()):
    # 300 policy s of load + 100 of drain at time scale 0.1: 30 + 10 wall s; 12 users, 2 fixed
    return shape_tick(STORM, t_wall_s, 0.1, 300.0, 100.0, 12, 2, given)


def test_the_storm_surges_in_its_middle_third_and_ends_after_the_drain():
    assert [users_at(STORM, t, 300.0, 100.0, 12) for t in (0, 99, 100, 199, 200, 350, 400)] == [3, 3, 12, 12, 3, 3, None]
    assert [tick(t) for t in (0.0, 15.0, 39.9, 40.0)] == [(5, 12.0), (14, 12.0), (5, 12.0), None]


def test_given_users_and_spawn_rate_take_the_place_of_the_runs():
    assert tick(15.0, Given(users=40)) == (42, 40.0)  # the surge: every one of -u, the fixed users on top
    assert tick(0.0, Given(users=40, spawn_rate=2.5)) == (12, 2.5)


def test_a_given_run_time_ends_the_shape_then_whatever_the_profile_says():
    assert tick(4.9, Given(run_time_s=5)) == (5, 12.0)
    assert tick(5.0, Given(run_time_s=5)) is None
    assert tick(50.0, Given(run_time_s=500)) is None  # the drain is over first


def test_the_line_the_locustfile_logs_names_where_each_figure_comes_from():
    assert Given().describe("storm", 12) == "profile storm: 12 users at the peak (the run's); spawn rate 12/s; " \
                                            "runs the scenario's duration and drain"
    assert Given(3, 3.0, 4.0).describe("steady", 12) == \
        "profile steady: 3 users at the peak (-u); spawn rate 3/s (-r); stops after 4 s (-t)"


def test_given_is_read_from_locusts_parsed_options_none_or_zero_meaning_not_given():
    class Options:
        num_users, spawn_rate, run_time = 20, 0, None

    assert Given.of(Options()) == Given(users=20)
    assert Given.of(object()) == Given()
