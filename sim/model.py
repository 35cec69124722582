"""The SimPy model of the recording service, by its usual name: `Model` and `simulate_model`
(sim/engine.py) and the world's types (sim/world.py). The model is in parts — world (state),
draws (named random streams), actors (web, workers, clients, deleters, driving the app's flows)
and engine (build, run, outages) — and this module only gathers what callers import."""
from __future__ import annotations

from loopfix.sim.engine import Model, simulate_model
from loopfix.sim.world import (
    DB_COMMIT_S,
    LOCK_OP,
    ODD_RECORDING_URL,
    RECORDING_URL,
    REDIS_RTT_S,
    Call,
    EnqueueError,
    Entry,
    JobQueue,
    LeadJob,
    RedisUnavailable,
    Run,
    Sample,
    twilio_serves,
)

__all__ = ["DB_COMMIT_S", "LOCK_OP", "ODD_RECORDING_URL", "RECORDING_URL", "REDIS_RTT_S", "Call", "EnqueueError",
           "Entry", "JobQueue", "LeadJob", "Model", "RedisUnavailable", "Run", "Sample", "simulate_model",
           "twilio_serves"]
