"""Benchmarks, run from the project root as modules: ``python -m bench.bench_planner --help``."""
