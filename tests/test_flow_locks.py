"""flows.locks, driven with canned effect results: the Coordination steps and events of taking,
keeping and releasing the BulkGate lock."""
from __future__ import annotations

from loopfix.reference_app.flows.effects import Coord, Emit, drive_with
from loopfix.reference_app.flows.locks import keep_lock, release_lock, take_lock

OP = "delete_leads_bulk"
WHO = {"business_id": 1, "op": OP, "owner": "job1"}


def test_a_fresh_run_takes_the_lock_with_one_acquire():
    assert drive_with(take_lock(1, OP, "job1", resumed=False), [True, None]) == (
        [Coord("acquire_lock", (1, OP, "job1")), Emit("lock.acquire", {**WHO, "ok": True})], True)


def test_a_resumed_run_refreshes_the_lock_its_job_kept():
    effects, ok = drive_with(take_lock(1, OP, "job1", resumed=True), [True, None])
    assert effects == [Coord("refresh_lock", (1, OP, "job1")), Emit("lock.refresh", {**WHO, "ok": True})]
    assert ok is True


def test_a_lapsed_lock_is_taken_back_when_nobody_took_it():
    effects, ok = drive_with(keep_lock(1, OP, "job1"), [False, None, True, None])
    assert effects[2:] == [Coord("acquire_lock", (1, OP, "job1")), Emit("lock.acquire", {**WHO, "ok": True})]
    assert ok is True


def test_a_lock_another_job_took_is_lost():
    assert drive_with(keep_lock(1, OP, "job1"), [False, None, False, None])[1] is False


def test_release_records_whether_it_freed_the_lock_and_who_held_it():
    effects, freed = drive_with(release_lock(1, OP, "job1"), [(False, "job2"), None])
    assert effects[1] == Emit("lock.release", {**WHO, "freed": False, "holder": "job2"}) and freed is False
