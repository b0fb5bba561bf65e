"""Benchmarks: `python -m benchmarks [name ...]` runs them; every figure is a ratio measured in the same run."""
