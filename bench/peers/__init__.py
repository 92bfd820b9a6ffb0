"""Systems under test, one file per peer: each exposes ``SYSTEMS`` (see bench/_harness/core.py)."""
