"""Benchmarks of sympozium-schedule against the issue's targets: ``python -m bench --help``.

Each benchmark module measures one figure family against a floor measured in the
same run (what the hardware and dependencies allow); :mod:`bench.common` holds
what they share. See docs/benchmarks.md for the method and the latest figures.
"""
