from __future__ import annotations

import importlib.util
import sys

import pytest
from agentfn.inference import EXTRAS, MissingExtraError, import_optional


@pytest.mark.parametrize("module", ["kserve", "torch", "sentence_transformers"])
def test_a_missing_extra_names_what_to_install(
    module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hide the module even where it happens to be installed: the message is what is tested.
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError, match=rf"pip install 'agentfn\[{EXTRAS[module]}\]'"):
        import_optional(module)


def test_missing_extra_is_an_import_error() -> None:
    assert issubclass(MissingExtraError, ImportError)


def test_an_installed_optional_module_is_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setitem(EXTRAS, "json", "none-needed")
    assert import_optional("json") is json


def test_only_declared_extras_are_optional() -> None:
    with pytest.raises(ValueError, match="not an optional dependency"):
        import_optional("pandas")


def test_the_extras_exist_in_the_distribution_metadata() -> None:
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    declared = pyproject["project"]["optional-dependencies"]
    for extra in EXTRAS.values():
        assert extra in declared
    assert importlib.util.find_spec("inference") is not None
