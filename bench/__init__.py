"""Benchmarks: scripts that print figures and write JSON to bench/results/<name>.json (no timed assertions)."""
