"""Benchmark scenarios, one file each: each exposes ``SCENARIO`` (see bench/_harness/core.py)."""
