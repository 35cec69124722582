"""The peers a capacity planner would otherwise pick, on the M/M/c queue loopfix's sweep checks
itself against (issue 18): Ciw (a queueing-network library, a dev dependency) and the textbook
SimPy model (a `simpy.Resource` with c servers, one process per customer).

Each runs Poisson arrivals at `lam` per second into c exponential servers of rate `mu` for
`horizon_s` simulated seconds and returns a `PeerRun`: how many customers were served, their
mean queue wait (customers arriving after `warmup_s`, as the sweep leaves out its empty start)
and the process CPU seconds the run took. The run is what each tool's user would write; nothing
here is loopfix's.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

import simpy


@dataclass(frozen=True)
class PeerRun:
    """One seeded run: customers served, their mean wait after the warm-up, CPU seconds."""

    customers: int
    mean_wait_s: float
    waits_n: int
    cpu_s: float


def ciw_mmc(c: int, lam: float, mu: float, horizon_s: float, seed: int, warmup_s: float = 0.0) -> PeerRun:
    """Ciw's M/M/c: one node, exponential arrivals and service, c servers, simulated to
    `horizon_s`; its records give the waits."""
    import ciw

    cpu = time.process_time()
    ciw.seed(seed)
    network = ciw.create_network(arrival_distributions=[ciw.dists.Exponential(rate=lam)],
                                 service_distributions=[ciw.dists.Exponential(rate=mu)],
                                 number_of_servers=[c])
    q = ciw.Simulation(network)
    q.simulate_until_max_time(horizon_s)
    records = q.get_all_records()
    waits = [r.waiting_time for r in records if r.arrival_date >= warmup_s]
    cpu = time.process_time() - cpu
    return PeerRun(len(records), sum(waits) / len(waits), len(waits), cpu)


def simpy_mmc(c: int, lam: float, mu: float, horizon_s: float, seed: int, warmup_s: float = 0.0) -> PeerRun:
    """The textbook SimPy M/M/c: a source process spawns one process per customer, which
    requests a `simpy.Resource(capacity=c)`, holds it for an exponential service and releases it."""
    cpu = time.process_time()
    rng = random.Random(seed)
    env = simpy.Environment()
    servers = simpy.Resource(env, capacity=c)
    waits: list[float] = []
    served = [0]

    def customer(arrived: float):
        with servers.request() as req:
            yield req
            if arrived >= warmup_s:
                waits.append(env.now - arrived)
            yield env.timeout(rng.expovariate(mu))
        served[0] += 1

    def source():
        while True:
            yield env.timeout(rng.expovariate(lam))
            env.process(customer(env.now))

    env.process(source())
    env.run(until=horizon_s)
    cpu = time.process_time() - cpu
    return PeerRun(served[0], sum(waits) / len(waits), len(waits), cpu)
