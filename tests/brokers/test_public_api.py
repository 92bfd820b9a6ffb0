"""``agentfn.brokers``: a curated public API, each name imported from its module when used."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from agentfn.brokers import log as log_module

from agentfn import brokers, functions

ROOT = Path(__file__).resolve().parents[2]


def test_all_and_the_lazy_table_list_the_same_names() -> None:
    # __all__ (what type checkers and star-imports read) and the lazy table (what runs).
    assert sorted(brokers.__all__) == sorted(brokers._EXPORTS)
    assert len(brokers.__all__) == len(set(brokers.__all__))
    assert set(brokers.__all__) <= set(dir(brokers))


@pytest.mark.parametrize("name", brokers.__all__)
def test_every_public_name_is_its_module_s_own_and_public_there(name: str) -> None:
    module = importlib.import_module(brokers._EXPORTS[name])
    assert getattr(brokers, name) is getattr(module, name)
    assert name in module.__all__


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="'NoSuchThing'"):
        _ = brokers.NoSuchThing  # type: ignore[attr-defined]


_PROBE = """
import json, sys
import agentfn.brokers
first = sorted(m for m in sys.modules if m.startswith("agentfn.brokers."))
import agentfn.brokers.config
config = sorted(m for m in sys.modules if m.startswith(("agentfn.brokers.", "kafka")))
from agentfn.brokers import BrokerServer, SqliteEventLog
served = sorted(m for m in sys.modules if m.startswith("kafka"))
print(json.dumps({"package": first, "config": config, "served": served}))
"""


def test_importing_the_package_or_one_module_loads_nothing_else() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    loaded = json.loads(result.stdout)
    assert loaded["package"] == []
    assert "agentfn.brokers.config" in loaded["config"]
    assert not any(m.startswith(("agentfn.brokers.kafka", "kafka")) for m in loaded["config"])
    assert loaded["served"] == []  # the embedded broker never loads kafka-python


def test_the_log_s_error_and_the_runtime_s_are_distinct_names_and_classes() -> None:
    # The broker's log and the agent's idempotency store fail for different reasons, and the
    # two packages share only agentfn.events: one error each, named by what is unavailable.
    assert brokers.LogUnavailableError is not functions.StoreUnavailableError
    assert not issubclass(brokers.LogUnavailableError, functions.RetryableError)
    assert issubclass(functions.StoreUnavailableError, functions.RetryableError)
    # One class bears the name StoreUnavailableError: the runtime's.
    assert "StoreUnavailableError" not in brokers.__all__
    assert not hasattr(log_module, "StoreUnavailableError")
