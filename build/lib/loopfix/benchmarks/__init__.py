"""Benchmarks of loopfix and the reference app: each figure beside a baseline measured in the
same run, because the machines these run on are shared and noisy (`loopfix bench`).

`bench_sim.py` is the model's stand-alone script; the other modules measure one area each
(model, app under gunicorn, Redis round trips, storm capacity) and return `figures.Figure`s.
"""
