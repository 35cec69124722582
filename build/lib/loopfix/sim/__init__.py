"""The SimPy model of the recording service's environment; every decision is policy.py's.

`simulate(scenario)` runs one scenario and returns its history, metrics and policy.
"""
from loopfix.sim.run import SimResult, simulate

__all__ = ["SimResult", "simulate"]
