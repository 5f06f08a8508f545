"""Benchmarks behind `sop bench NAME`: each prints a table and can write the same figures as JSON."""
