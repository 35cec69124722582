"""Queueing theory the model is validated against (and issue 6's capacity planning reuses).

Pure functions, no SimPy: Erlang C for an M/M/c queue — Poisson arrivals at rate `lam`, c
servers each serving at rate `mu` (exponential). `mmc_wait_experiment` runs the model's own
queue-and-workers machinery (`loopfix.sim.model.JobQueue`) on M/M/c input, for the test that the two
agree.
"""
from __future__ import annotations

import random
from dataclasses import dataclass


def erlang_c(c: int, lam: float, mu: float) -> float:
    """Probability an arrival has to wait, P(W > 0), in an M/M/c queue. Needs lam < c * mu."""
    if c < 1 or lam < 0 or mu <= 0:
        raise ValueError("erlang_c needs c >= 1, lam >= 0, mu > 0")
    a = lam / mu  # offered load in Erlangs
    rho = a / c
    if rho >= 1:
        raise ValueError(f"unstable queue: utilisation {rho:.3f} >= 1")
    # sum_{k<c} a^k/k! computed iteratively to stay finite for large c
    term, total = 1.0, 1.0
    for k in range(1, c):
        term *= a / k
        total += term
    last = term * a / c  # a^c / c!
    tail = last / (1 - rho)
    return tail / (total + tail)


def mmc_mean_wait(c: int, lam: float, mu: float) -> float:
    """Mean time in queue (before service) of an M/M/c queue: C(c, a) / (c*mu - lam)."""
    return erlang_c(c, lam, mu) / (c * mu - lam)


def mmc_utilisation(c: int, lam: float, mu: float) -> float:
    return lam / (c * mu)


@dataclass(frozen=True)
class WaitSample:
    """Mean queue wait measured on one seeded run, with how many jobs it averaged."""

    mean_wait_s: float
    jobs: int
    utilisation: float


def mmc_wait_experiment(c: int, lam: float, mu: float, jobs: int, seed: int, warmup: int = 1000) -> WaitSample:
    """Run the model's queue (sim.model.JobQueue + workers) with Poisson arrivals and
    exponential service; mean wait of `jobs` jobs after `warmup` jobs."""
    import simpy

    from loopfix.sim.model import JobQueue

    env = simpy.Environment()
    rng = random.Random(seed)
    queue = JobQueue(env)
    waits: list[float] = []
    busy = [0.0]

    def worker():
        while True:
            item = yield from queue.take()
            enqueued_at = item
            waits.append(env.now - enqueued_at)
            service = rng.expovariate(mu)
            busy[0] += service
            yield env.timeout(service)

    def arrivals():
        for _ in range(jobs + warmup):
            yield env.timeout(rng.expovariate(lam))
            queue.put(env.now)

    for _ in range(c):
        env.process(worker())
    done = env.process(arrivals())
    env.run(until=done)
    measured = waits[warmup:]
    return WaitSample(sum(measured) / len(measured), len(measured), busy[0] / (c * env.now))
