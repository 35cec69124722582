"""The procedures the app and the model both perform, written once (DESIGN: "Procedures too:
flows with two drivers").

A flow is a generator that yields effects (`effects.py`: a Coordination call, an enqueue, an
event to record, a gap where a concurrent request may slip in) and is sent each effect's result;
the policy decisions sit inside it. It imports no Redis, RQ, SQLAlchemy, Flask or SimPy:
reference_app drives a flow with Redis and the database, sim drives the same flow with SimPy
and its in-memory world, and a test drives it with canned results. The shared state behind
the flows is the `Coordination` protocol (`coordination.py`), with a Redis adapter
(reference_app/coordination.py) and the model's (sim/coordination.py).
"""
