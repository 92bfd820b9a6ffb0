"""What the CESQL tests share: a valid event and one way to state an expected evaluation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
from agentfn.brokers import cesql

# A valid CloudEvent with every optional attribute and one extension of each CESQL type.
EVENT: Mapping[str, object] = {
    "specversion": "1.0",
    "id": "myId",
    "source": "http://localhost/source",
    "type": "com.example.event",
    "subject": "mySubject",
    "time": "2018-04-26T14:48:09+02:00",
    "datacontenttype": "application/json",
    "dataschema": "http://localhost/schema",
    "mystring": "my extension",
    "myint": 10,
    "mybool": True,
}


@dataclass(frozen=True)
class Case:
    """``expression`` evaluated against ``EVENT`` updated with ``event`` gives ``value`` and
    exactly the error kinds ``errors``, in that order."""

    expression: str
    value: bool | int | str | None
    errors: tuple[str, ...] = ()
    event: Mapping[str, object] = field(default_factory=dict)


def params(*cases: Case) -> list[object]:
    return [pytest.param(case, id=case.expression) for case in cases]


def check(case: Case) -> None:
    event = {**EVENT, **case.event}
    value, errors = cesql.evaluate(case.expression, event)
    assert (value, errors) == (case.value, list(case.errors))
    # Same types too: in Python 1 == True.
    assert type(value) is type(case.value)
    if case.errors != ("parse",):
        compiled = cesql.compile(case.expression)
        assert compiled.evaluate(event) == (case.value, list(case.errors))
        assert compiled.matches(event) is (case.value is True and not case.errors)
