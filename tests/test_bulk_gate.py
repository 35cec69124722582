"""BulkGate lock safety (seed 003; DESIGN.md latent faults 1 and 2) on a real Redis server.

The delete job holds its business's lock by owner token. `fixed` releases and refreshes only
the owner's lock (one script each); `seed` releases with a plain DEL and refreshes with EXISTS
then EXPIRE, so a job whose lock lapsed frees — or keeps alive — the next holder's lock.
Each test drives the Coordinator the delete job uses and looks at the key Redis holds.
"""
from __future__ import annotations

import threading
import time

import pytest
import redis

from loopfix.reference_app.coordination import LOCK_KEY, Coordinator
from loopfix.reference_app.policy import make_policy

OP = "delete_leads_bulk"
BUSINESS = 7


@pytest.fixture
def gate(private_redis):
    """gate(variant) -> Coordinator on a flushed Redis, real time (time_scale 1)."""
    conn = redis.Redis.from_url(private_redis)
    conn.flushdb()
    return lambda variant="fixed": Coordinator(conn, make_policy(variant))


def c_key(business: int = BUSINESS) -> str:
    return LOCK_KEY.format(business_id=business, operation=OP)


def lapse(c: Coordinator, owner: str, ttl_s: float = 0.05) -> None:
    """`owner` takes the lock with a short TTL and lets it expire (a job stalled past its TTL)."""
    assert c.acquire_lock(BUSINESS, OP, owner, ttl_s=ttl_s)
    deadline = time.monotonic() + 5
    while c.lock_holder(BUSINESS, OP) is not None:
        assert time.monotonic() < deadline, "lock did not expire"
        time.sleep(0.01)


def test_a_late_release_by_an_expired_owner_leaves_the_new_holders_lock(gate):
    c = gate("fixed")
    lapse(c, "job-A")
    assert c.acquire_lock(BUSINESS, OP, "job-B")

    freed, holder = c.release_lock(BUSINESS, OP, "job-A")

    assert (freed, holder) == (False, "job-B")
    assert c.lock_holder(BUSINESS, OP) == "job-B"
    assert not c.acquire_lock(BUSINESS, OP, "job-C")


def test_seed_a_late_release_by_an_expired_owner_frees_the_new_holders_lock(gate):
    c = gate("seed")
    lapse(c, "job-A")
    assert c.acquire_lock(BUSINESS, OP, "job-B")

    freed, holder = c.release_lock(BUSINESS, OP, "job-A")

    assert (freed, holder) == (True, "job-B")
    assert c.lock_holder(BUSINESS, OP) is None
    assert c.acquire_lock(BUSINESS, OP, "job-C")  # a second job now runs beside job-B


def test_a_refresh_by_a_non_owner_does_not_extend_the_lock(gate):
    c = gate("fixed")
    assert c.acquire_lock(BUSINESS, OP, "job-A", ttl_s=0.5)

    assert c.refresh_lock(BUSINESS, OP, "job-B", ttl_s=60) is False

    assert 0 < c.r.pttl(c_key()) <= 500
    assert c.lock_holder(BUSINESS, OP) == "job-A"


def test_seed_a_refresh_by_a_non_owner_extends_whoever_holds_the_lock(gate):
    c = gate("seed")
    assert c.acquire_lock(BUSINESS, OP, "job-A", ttl_s=0.5)

    assert c.refresh_lock(BUSINESS, OP, "job-B", ttl_s=60) is True

    assert c.r.pttl(c_key()) > 50_000
    assert c.lock_holder(BUSINESS, OP) == "job-A"


def test_the_owner_refreshes_and_releases_its_own_lock(gate):
    c = gate("fixed")
    assert c.acquire_lock(BUSINESS, OP, "job-A", ttl_s=0.5)
    assert c.refresh_lock(BUSINESS, OP, "job-A", ttl_s=60) is True
    assert c.r.pttl(c_key()) > 50_000

    assert c.release_lock(BUSINESS, OP, "job-A") == (True, "job-A")
    assert c.lock_holder(BUSINESS, OP) is None


def test_the_default_ttl_follows_the_time_scale(gate, private_redis):
    slow = Coordinator(redis.Redis.from_url(private_redis), make_policy("fixed", time_scale=1.0))
    fast = Coordinator(redis.Redis.from_url(private_redis), make_policy("fixed", time_scale=0.001))
    assert slow.acquire_lock(1, OP, "a") and fast.acquire_lock(2, OP, "b")
    full, scaled = slow.r.pttl(c_key(1)), fast.r.pttl(c_key(2))
    assert 0 < scaled and abs(scaled - full * 0.001) <= 5


@pytest.mark.parametrize("variant", ["fixed", "seed"])
def test_one_of_many_concurrent_acquirers_gets_the_lock(gate, variant):
    c = gate(variant)
    barrier, won = threading.Barrier(20), []

    def take(owner: str) -> None:
        barrier.wait()
        if c.acquire_lock(BUSINESS, OP, owner):
            won.append(owner)

    threads = [threading.Thread(target=take, args=(f"job-{i}",)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and c.lock_holder(BUSINESS, OP) == won[0]
