"""Benchmarks: scripts that report numbers (not timed tests)."""
