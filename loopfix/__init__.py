"""loopfix: simulation and load-test harness for a Flask + RQ + Redis recording service."""
