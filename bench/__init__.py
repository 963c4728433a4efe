"""Benchmarks: every figure is a ratio measured in the same run (see BENCHMARKS.md)."""
