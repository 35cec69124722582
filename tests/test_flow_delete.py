"""flows.delete, driven with canned effect results: the bulk-delete request's dedup per
variant, and one run of the delete job (lock, claim, batches, retries, pause, end recorded
once with the lock released before the commit) as the app and the model both run them."""
from __future__ import annotations

import pytest

from loopfix.reference_app.flows.delete import delete_run, request_bulk_delete
from loopfix.reference_app.flows.effects import ActiveLeadJob, Commit, Coord, EndJob, Gap, NewLeadJob, drive
from loopfix.reference_app.policy import make_policy

FIXED = make_policy("fixed")


def names(effects):
    return [e[1] if type(e) is tuple else type(e).__name__ for e in effects]  # a Coord's op, an Emit's kind


class Canned:
    """Answers a delete run's effects: Coord ops by name, batches from a list, the clock."""

    def __init__(self, batches, coord=None, clock=(0.0,)):
        self.batches, self.clock, self.done = list(batches), list(clock), []
        self.coord = {"acquire_lock": True, "refresh_lock": True, "release_lock": (True, None),
                      "lock_holder": "other", **(coord or {})}

    def __call__(self, effect):
        self.done.append(effect)
        kind = type(effect).__name__
        if type(effect) is tuple and effect[0] is Coord:
            return self.coord[effect[1]]
        if kind == "DeleteBatch":
            return self.batches.pop(0)
        if kind == "Clock":
            return self.clock.pop(0) if len(self.clock) > 1 else self.clock[0]
        if kind == "ClaimJob":
            return True
        if kind == "EndJob":
            return 7
        return None


def test_a_run_deletes_batch_by_batch_then_releases_the_lock_before_its_commit():
    canned = Canned([("batch", 2, [1, 2], 1), ("batch", 1, [3], 0), ("done",)])
    assert drive(delete_run(1, "9", False, FIXED), canned) == ("completed", None)
    got = names(canned.done)
    assert got[:5] == ["acquire_lock", "lock.acquire", "ClaimJob", "lead_job.start", "Clock"]
    assert got.count("lead.delete") == 3 and got.count("Sleep") == 1  # no throttle after the last batch
    assert got[-5:] == ["EndJob", "release_lock", "lock.release", "Commit", "lead_job.end"]


def test_a_lock_held_by_another_job_fails_the_run_and_still_releases_on_the_failure_path():
    canned = Canned([], coord={"acquire_lock": False})
    outcome, reason = drive(delete_run(1, "9", False, FIXED), canned)
    assert outcome == "failed" and "held by job other" in reason
    assert "ClaimJob" not in names(canned.done) and EndJob("failed", reason) in canned.done


def test_failed_batches_are_retried_until_the_policy_stops_the_job():
    n = FIXED.bulk_max_batch_failures
    canned = Canned([("error", "OperationalError: gone")] * n)
    outcome, reason = drive(delete_run(1, "9", False, FIXED), canned)
    assert outcome == "failed" and reason.startswith(f"{n} batches failed in a row")
    assert names(canned.done).count("Sleep") == n - 1


def test_before_fails_a_batch_whose_leads_are_already_gone_and_rolls_it_back():
    before = make_policy("before")
    canned = Canned([("batch", 3, [1], 0)])
    outcome, _ = drive(delete_run(1, "9", False, before), canned)
    assert outcome == "failed" and "lead.delete" not in names(canned.done)
    assert [e for e in canned.done if type(e) is Commit] == [Commit(False), Commit(True)]  # the batch, the end
    fixed = Canned([("batch", 3, [1], 0), ("done",)])
    assert drive(delete_run(1, "9", False, FIXED), fixed)[0] == "completed"


def test_a_run_past_its_runtime_budget_pauses_keeping_its_lock():
    canned = Canned([("batch", 1, [1], 5)], clock=(0.0, FIXED.bulk_max_runtime_s + 1))
    assert drive(delete_run(1, "9", False, FIXED), canned)[0] == "paused"
    got = names(canned.done)
    assert got[-2:] == ["EndJob", "lead_job.pause"] and "release_lock" not in got


def test_a_superseded_run_records_no_end():
    canned = Canned([("superseded",)])
    assert drive(delete_run(1, "9", True, FIXED), canned) == ("superseded", None)
    assert "EndJob" not in names(canned.done) and names(canned.done)[0] == "refresh_lock"


def test_an_unexpected_error_ends_the_run_failed_once_and_goes_on():
    def handle(effect):
        if type(effect).__name__ == "DeleteBatch":
            raise RuntimeError("boom")
        return Canned([])(effect)

    ended = []
    with pytest.raises(RuntimeError):
        drive(delete_run(1, "9", False, FIXED), lambda e: ended.append(e) or handle(e))
    assert [e for e in ended if isinstance(e, EndJob)] == [EndJob("failed", "RuntimeError: boom")]


@pytest.mark.parametrize("variant, first", [("fixed", NewLeadJob(True)), ("seed", ActiveLeadJob()),
                                            ("before", NewLeadJob(False))])
def test_each_variant_finds_or_makes_the_job_its_own_way(variant, first):
    p = make_policy(variant)
    answers = {"NewLeadJob": ("5", False), "ActiveLeadJob": None, "OwnedLeads": [1, 2]}
    done = []
    found = drive(request_bulk_delete(1, "c", p), lambda e: done.append(e) or answers.get(type(e).__name__))
    assert type(done[0]) is type(first) and done[0] == first and found == ("5", False)
    assert any(type(e) is Gap for e in done) is (variant == "seed")  # only the seed's check and insert stand apart
    assert names(done).count("lead.requested") == 2 and names(done)[-1] == "EnqueueLeadJob"


def test_a_request_that_joins_the_active_job_records_no_leads_and_enqueues_nothing():
    done = []
    found = drive(request_bulk_delete(1, "c", FIXED), lambda e: done.append(e) or ("5", True))
    assert found == ("5", True) and names(done) == ["NewLeadJob", "lead_job.request"]
