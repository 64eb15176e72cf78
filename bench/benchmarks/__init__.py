"""Benchmark scripts (run with `python -m bench.benchmarks.NAME`); not part of the test suite."""
