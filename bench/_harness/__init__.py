"""The peer benchmark harness: scenarios x systems, alternated, repeated, reported.

``bench/harness.py`` is the entry point; ``bench/scenarios/*.py`` (one file per scenario) and
``bench/peers/*.py`` (one file per system under test) plug in through the protocols of
:mod:`bench._harness.core`.
"""
