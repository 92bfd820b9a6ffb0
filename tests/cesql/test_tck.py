"""The CloudEvents SQL TCK (cloudevents/spec ``cesql/cesql_tck``), every case, as data.

The files under ``tck/`` are the upstream ones with a license header; ``tck/LICENSE`` is theirs.
Each case gives an expression, an optional event (or overrides of any valid event), the expected
value and at most one expected error kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentfn.brokers import cesql

TCK = Path(__file__).parent / "tck"

# The TCK lets a case run against "any valid event" where it names none.
ANY_EVENT: Mapping[str, object] = {
    "specversion": "1.0",
    "id": "myId",
    "source": "localhost.localdomain",
    "type": "myType",
}


class _Loader(yaml.SafeLoader):
    """YAML without timestamps: an event's ``time`` is the text the JSON format carries."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _cases() -> list[Any]:
    cases = []
    for path in sorted(TCK.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        suite = yaml.load(text, Loader=_Loader)  # a SafeLoader: no arbitrary objects
        # The expression exactly as written: YAML would read `TRUE` as a bool and `-10` as an int.
        root = yaml.compose(text, Loader=_Loader)
        assert isinstance(root, yaml.MappingNode)
        tests = next(value for key, value in root.value if key.value == "tests")
        for test, node in zip(suite["tests"], tests.value, strict=True):
            expression = next(value.value for key, value in node.value if key.value == "expression")
            case = {**test, "expression": expression}
            cases.append(pytest.param(case, id=f"{path.stem}: {test['name']}"))
    return cases


CASES = _cases()


def test_the_whole_tck_is_here() -> None:
    # 18 suites upstream at the vendored commit; a lost file would otherwise pass silently.
    assert len(list(TCK.glob("*.yaml"))) == 18
    assert len(CASES) == 275


@pytest.mark.parametrize("case", CASES)
def test_tck(case: dict[str, Any]) -> None:
    event = dict(case.get("event") or ANY_EVENT)
    event.update(case.get("eventOverrides") or {})
    value, errors = cesql.evaluate(case["expression"], event)
    expected_errors = [case["error"]] if "error" in case else []
    assert errors == expected_errors
    if errors == ["parse"]:
        with pytest.raises(cesql.CesqlParseError):
            cesql.compile(case["expression"])
        return
    assert value == case["result"]
    # 1 == True in Python: the type must match too.
    assert type(value) is type(case["result"])
