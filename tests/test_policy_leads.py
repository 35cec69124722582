"""reference_app/policy/leads.py: the bulk-delete request's ids, job dedup, batches, pause/stop,
resume and lock TTLs (000, 003) — each with the variant that changes its answer."""
from __future__ import annotations

import pytest

from loopfix.reference_app.policy import (
    LEAD_ID_MAX,
    BadLeadIds,
    BulkDedupMode,
    batches,
    bulk_batch_fails,
    bulk_dedup_mode,
    bulk_job_timeout_s,
    bulk_resume_decision,
    bulk_should_pause,
    bulk_should_stop,
    lock_ttl,
    make_policy,
    parse_lead_ids,
)

FIXED = make_policy("fixed")


def test_lead_ids_keep_request_order_and_drop_duplicates():
    assert parse_lead_ids([3, 1, 3, 2, 1]) == [3, 1, 2]


@pytest.mark.parametrize("raw,code", [
    ({"ids": [1]}, "lead_ids_not_a_list"),
    ("1,2", "lead_ids_not_a_list"),
    ([], "lead_ids_empty"),
    ([True], "lead_ids_not_integers"),
    ([3.0], "lead_ids_not_integers"),
    (["3"], "lead_ids_not_integers"),
    ([0], "lead_ids_not_integers"),
    ([LEAD_ID_MAX + 1], "lead_ids_not_integers"),
])
def test_a_body_that_is_not_a_list_of_lead_ids_is_refused_with_its_code(raw, code):
    with pytest.raises(BadLeadIds) as err:
        parse_lead_ids(raw)
    assert err.value.code == code


def test_the_largest_id_is_accepted():
    assert parse_lead_ids([1, LEAD_ID_MAX]) == [1, LEAD_ID_MAX]


def test_the_id_limit_counts_distinct_ids():
    assert parse_lead_ids([7, 7, 7], max_ids=1) == [7]
    with pytest.raises(BadLeadIds) as err:
        parse_lead_ids([1, 2, 3], max_ids=2)
    assert err.value.code == "too_many_lead_ids"


def test_each_variant_finds_an_active_job_its_own_way():
    assert bulk_dedup_mode(FIXED) is BulkDedupMode.CONSTRAINT
    assert bulk_dedup_mode(make_policy("seed")) is BulkDedupMode.CHECK_THEN_INSERT
    assert bulk_dedup_mode(make_policy("before")) is BulkDedupMode.NEW_JOB
    assert bulk_dedup_mode(FIXED) == "constraint"  # the mode is its string too


def test_a_batch_missing_leads_fails_the_job_only_before_the_fix():
    assert bulk_batch_fails(50, 49, FIXED) is False
    assert bulk_batch_fails(50, 49, make_policy("before")) is True
    assert bulk_batch_fails(50, 50, make_policy("before")) is False


def test_a_run_pauses_past_its_runtime_budget_not_at_it():
    assert bulk_should_pause(300, FIXED) is False and bulk_should_pause(300.1, FIXED) is True
    assert bulk_job_timeout_s(FIXED) == 600


def test_a_job_stops_at_the_tenth_failed_batch_in_a_row():
    assert bulk_should_stop(9, FIXED) is False and bulk_should_stop(10, FIXED) is True


def test_ids_are_cut_into_batches_in_order():
    assert [len(b) for b in batches(list(range(120)), FIXED)] == [50, 50, 20]
    assert sum(batches(list(range(120)), FIXED), []) == list(range(120))
    assert batches([], FIXED) == []
    assert batches([1, 2, 3], make_policy("fixed", overrides={"bulk_batch_size": 2})) == [[1, 2], [3]]


def test_lock_ttls_follow_the_table_and_unknown_operations_get_the_default():
    assert lock_ttl("delete_leads_bulk", FIXED) == 3600 and lock_ttl("broadcast_whatsapp", FIXED) == 7200
    assert lock_ttl("no_such_operation", FIXED) == 1800
    assert lock_ttl("delete_leads_bulk", make_policy("fixed", overrides={"lock_ttl_s": "delete_leads_bulk:2"})) == 2


def resume(status, now=1000.0, heartbeat_at=None, queued_at=None, lock_held=True, p=FIXED):
    d = bulk_resume_decision(status, now, heartbeat_at, queued_at, lock_held, p)
    return d.kind, d.status


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_a_finished_job_cannot_be_resumed(status):
    assert resume(status) == ("finished", 409)


def test_a_paused_job_always_resumes():
    assert resume("paused") == ("resume", 202)


def test_a_running_job_resumes_only_once_evidently_dead():
    assert resume("running", heartbeat_at=1000 - 60) == ("running", 409)
    assert resume("running", heartbeat_at=1000 - 61) == ("resume", 202)
    assert resume("running", heartbeat_at=None) == ("resume", 202)
    assert resume("running", heartbeat_at=1000 - 1, lock_held=False) == ("resume", 202)


def test_the_heartbeat_timeout_that_declares_a_run_dead_is_the_policys():
    patient = make_policy("fixed", overrides={"heartbeat_timeout_s": 120})
    assert resume("running", heartbeat_at=1000 - 61, p=patient) == ("running", 409)


def test_a_queued_job_resumes_once_it_waited_the_stuck_timeout():
    assert resume("queued", queued_at=1000 - 300) == ("queued", 202)
    assert resume("queued", queued_at=1000 - 301) == ("resume", 202)
    assert resume("queued", queued_at=None) == ("resume", 202)


def test_an_unknown_status_is_an_error():
    with pytest.raises(ValueError):
        resume("exploded")
