"""The functional core, driven directly: the CLI's account of the backoff schedule, URL
normalisation, the media-host allowlist, and bad settings refused with a message."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from loopfix.cli import cli
from loopfix.reference_app.media import media_host_allowed
from loopfix.reference_app.policy import make_policy, normalise_recording_url


def policy_json(*args):
    result = CliRunner().invoke(cli, ["policy", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_policy_json_prints_the_schedule_its_sum_and_the_52_minute_claim():
    info = policy_json()
    schedule = info["backoff_schedule_s"]
    assert schedule == [60, 120, 240, 480, 960] and info["backoff_total_s"] == sum(schedule) == 1860
    claim = info["claim_52_min"]
    assert claim["holds"] is False and claim["six_retries_total_s"] == 3060
    assert "3060" in claim["explanation"]


def test_six_retries_reach_the_cap_and_total_3060_seconds():
    info = policy_json("--set", "max_retries=6")
    assert info["backoff_schedule_s"][-1] == 1200 and info["backoff_total_s"] == 3060


@pytest.mark.parametrize("args", [["--variant", "nope"], ["--set", "max_retries=x"], ["--set", "bogus=1"],
                                  ["--faults", "not_a_fault"], ["--time-scale", "-1"], ["--set", "novalue"]])
def test_bad_settings_exit_2_with_a_message_not_a_traceback(args):
    result = CliRunner().invoke(cli, ["policy", *args])
    assert result.exit_code == 2 and "Traceback" not in result.output and "Error" in result.output


@pytest.mark.parametrize("url,fixed", [
    ("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1.json", "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1.mp3"),
    ("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1", "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1.mp3"),
    ("https://api.twilio.com/a.json/Recordings/RE1.json?x=.json", "https://api.twilio.com/a.json/Recordings/RE1.mp3?x=.json"),
    ("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1.wav", "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1.wav"),
])
def test_only_a_json_suffix_becomes_mp3_and_bare_urls_get_mp3(url, fixed):
    assert normalise_recording_url(url, make_policy("fixed")) == fixed


def test_seed_rewrites_every_json_and_before_keeps_json():
    url = "https://api.twilio.com/a.json/RE1.json"
    assert normalise_recording_url(url, make_policy("seed")) == "https://api.twilio.com/a.mp3/RE1.mp3"
    assert normalise_recording_url(url, make_policy("before")) == url


@pytest.mark.parametrize("url,ok", [
    ("https://api.twilio.com/x.mp3", True),
    ("http://api.twilio.com/x.mp3", False),
    ("https://api.twilio.com:8443/x.mp3", False),
    ("https://api.twilio.com@evil.example/x.mp3", False),
    ("https://evil.example/x.mp3", False),
    ("http://127.0.0.1:8010/x.mp3", True),
    ("http://127.0.0.1:8011/x.mp3", False),
    ("ftp://api.twilio.com/x.mp3", False),
    ("https://api.twilio.com.evil.example/x.mp3", False),
])
def test_media_host_allowlist(url, ok):
    assert media_host_allowed(url, ["api.twilio.com", "127.0.0.1:8010"]) is ok


def test_a_child_process_rebuilds_every_overridden_constant_from_the_environment():
    from loopfix.reference_app.config import Config

    p = make_policy("seed", "no_heartbeat", 0.01, {"max_retries": 6, "slot_defer_s": "1,2,3",
                                                  "lock_ttl_s": "delete_leads_bulk:2,default:5"})
    assert Config.from_env(Config(policy=p).to_env()).policy == p


def test_lock_ttls_are_set_per_operation_and_the_rest_keep_the_seed_table():
    ttl = policy_json("--set", "lock_ttl_s=delete_leads_bulk:2")["constants"]["lock_ttl_s"]
    assert ttl["delete_leads_bulk"] == 2 and ttl["broadcast_whatsapp"] == policy_json()["constants"]["lock_ttl_s"]["broadcast_whatsapp"]


def test_backoff_stays_at_the_cap_however_many_times_a_job_was_retried():
    """`before` retries forever: attempt numbers pass 1,000, where 2^(n-1) leaves a float's range."""
    from loopfix.reference_app.policy import backoff_delay

    p = make_policy("before")
    assert [backoff_delay(n, p) for n in (1, 5, 6, 1000, 1025, 10**6)] == [60, 960, 1200, 1200, 1200, 1200]


def _spend(p, phases):
    """Drive recording_retry_decision as a job does: each empty attempt in `phases` order,
    storing the attempt in the counter of the budget the decision says it spent."""
    from loopfix.reference_app.policy import recording_retry_decision

    counts, out = {"calllog": 0, "fetch": 0}, []
    for phase in phases:
        d = recording_retry_decision(counts["calllog"], p, phase, counts["fetch"])
        out.append((d.action, d.phase, d.attempt, d.delay_s))
        if d.action != "fail":
            counts[d.phase] = d.attempt
    return out


def test_a_fetch_failure_after_the_whole_calllog_wait_retries_on_its_own_budget_and_schedule():
    p = make_policy("fixed")
    steps = _spend(p, ["calllog"] * p.max_recording_retries + ["fetch"] * (p.max_fetch_retries + 1))
    calllog, fetch = steps[:p.max_recording_retries], steps[p.max_recording_retries:]
    assert [s[:3] for s in calllog] == [("retry", "calllog", n) for n in range(1, p.max_recording_retries + 1)]
    assert [s[:3] for s in fetch[:-1]] == [("retry", "fetch", n) for n in range(1, p.max_fetch_retries + 1)]
    assert [s[3] for s in fetch[:-1]] == [s[3] for s in calllog]  # the same backoff schedule, from 60 s again
    assert fetch[-1][0] == "fail"  # its own budget spent: failed for good, the loop ends
    assert _spend(p, ["calllog"] * (p.max_recording_retries + 1))[-1][0] == "fail"  # CallLog never comes


def test_with_the_seeds_shared_budget_one_fetch_failure_after_the_calllog_wait_fails_the_run():
    p = make_policy("fixed", "shared_retry_budget")
    steps = _spend(p, ["calllog"] * p.max_recording_retries + ["fetch"])
    assert steps[-1][:2] == ("fail", "calllog")
    for variant in ("seed", "before"):  # the seeds' one retry_count: both variants spend one budget
        assert _spend(make_policy(variant), ["fetch"])[0][1] == "calllog"


def test_the_stuck_sweep_fails_a_run_once_its_calllog_budget_is_spent_and_before_never_does():
    from loopfix.reference_app.policy import stuck_run_over_budget

    p = make_policy("fixed")
    assert [stuck_run_over_budget(n, p) for n in (0, p.max_recording_retries - 1, p.max_recording_retries)] == [
        False, False, True]
    assert stuck_run_over_budget(10**6, make_policy("before")) is False


def test_policy_shows_the_bound_of_both_retry_budgets():
    info = policy_json("--set", "max_fetch_retries=2")
    bound = info["retry_bound"]
    assert bound["budgets"] == {"calllog": 5, "fetch": 2} and bound["max_runs"] == 1 + 5 + 2
    assert bound["max_backoff_wait_s"] == 1860 + 60 + 120 and info["fetch_backoff_schedule_s"] == [60, 120]
    assert policy_json("--variant", "seed")["retry_bound"]["budgets"] == {"calllog": 5}
    assert policy_json("--variant", "before")["retry_bound"]["bounded"] is False
    text = CliRunner().invoke(cli, ["policy", "--set", "max_fetch_retries=2"]).output
    assert "retry bound: 5 retries waiting for the CallLog + 2 fetching the audio" in text and "at most 8 runs" in text


def test_a_poll_that_trips_fail_fast_on_a_stuck_run_leaves_it_on_fixed_and_fails_it_on_seed():
    """After the gate: the poll without the mark waits; the tripped poll answers 500 and enqueues
    nothing — fixed leaves the stuck run for its own job or the sweep, seed (002's order:
    mark failed, then check attempts) fails it, and no job replaces it."""
    from loopfix.reference_app.policy import PlaybackDecision, playback_action

    start = PlaybackDecision("start", 202, 60.0, "stuck: queued 400 s without worker pickup")
    for variant, fails in (("fixed", False), ("seed", True)):
        p = make_policy(variant)
        unmarked = playback_action(start, True, False, 0, p)
        assert (unmarked.enqueue, unmarked.status) == (False, 202)
        tripped = playback_action(start, True, True, p.fail_fast_max_attempts + 1, p)
        assert (tripped.enqueue, tripped.status, tripped.trip, tripped.fail_stuck) == (False, 500, True, fails)
        through = playback_action(start, True, True, 1, p)
        assert (through.enqueue, through.fail_stuck) == (True, True)  # replaced, so failed, either way
