"""The SimPy model of the recording service's environment; every decision is policy.py's.

`simulate(scenario)` runs one scenario and returns its history, metrics and policy;
`simulate_checked(scenario)` checks and measures it as it runs, keeping no history.
"""
from loopfix.sim.run import CheckedRun, SimResult, simulate, simulate_checked

__all__ = ["CheckedRun", "SimResult", "simulate", "simulate_checked"]
