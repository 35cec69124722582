"""reference_app/policy/enqueue.py: enqueue statuses and dedup, play-click dedup, the recording
callback — each with the fault that changes its answer."""
from __future__ import annotations

import pytest

from loopfix.reference_app.policy import (
    enqueue_dedup_ttl,
    enqueue_retry_is_int,
    enqueue_status,
    make_policy,
    playback_dedups,
    recording_callback_enqueues,
    reported_enqueue_reason,
)

FIXED, SEED, BEFORE = make_policy("fixed"), make_policy("seed"), make_policy("before")


@pytest.mark.parametrize("reason,status", [("enqueued", 202), ("cached", 200), ("duplicate", 200), ("error", 500)])
def test_each_enqueue_reason_has_its_status_and_an_error_is_never_200(reason, status):
    assert enqueue_status(reason) == status


def test_a_failed_enqueue_is_reported_as_an_error_but_before_hides_it_as_a_duplicate():
    assert reported_enqueue_reason("error", FIXED) == "error"
    assert reported_enqueue_reason("error", BEFORE) == "duplicate"
    assert enqueue_status(reported_enqueue_reason("error", BEFORE)) == 200  # 001's loop
    assert reported_enqueue_reason("enqueued", BEFORE) == "enqueued"


def test_the_dedup_window_is_120_s_but_30_min_with_long_dedup_ttl():
    assert enqueue_dedup_ttl(FIXED) == 120 and enqueue_dedup_ttl(make_policy("fixed", "long_dedup_ttl")) == 1800


def test_only_the_enqueue_apis_path_passes_retry_as_an_int_and_only_before_does():
    assert enqueue_retry_is_int("enqueue_api", BEFORE) is True
    assert enqueue_retry_is_int("webhook", BEFORE) is False
    assert enqueue_retry_is_int("enqueue_api", FIXED) is False


def test_a_play_click_is_deduplicated_except_with_enqueue_every_click():
    assert playback_dedups(FIXED) is True and playback_dedups(SEED) is True
    assert playback_dedups(BEFORE) is False


def test_a_replayed_callback_of_a_known_recording_enqueues_only_with_webhook_replay_enqueues():
    assert recording_callback_enqueues(False, FIXED) is True
    assert recording_callback_enqueues(True, FIXED) is False
    assert recording_callback_enqueues(True, SEED) is True
