"""The error model (CESQL v1, 3.3 and 4.1): every error is collected, in the order raised, and
the failing part of the expression takes the zero value of its type."""

from __future__ import annotations

import pytest
from agentfn.brokers import cesql

from tests.cesql._harness import Case, check, params


@pytest.mark.parametrize(
    "case",
    params(
        Case("INT('a') + INT('b')", 0, ("cast", "cast")),
        Case("missing1 = missing2", False, ("missingAttribute", "missingAttribute")),
        Case("LENGTH(missing) + ABS(-2147483648)", 0, ("missingAttribute", "math")),
        Case("ABS(-2147483648) + LENGTH(missing)", 0, ("math", "missingAttribute")),
        Case("1 / 0 = 1 % 0", False, ("math", "math")),
        Case("BOOL('x') XOR INT('y') = 1", False, ("cast", "cast")),
        Case(
            "missing OR 1 / 0 = 0 OR FOO()", False, ("missingAttribute", "math", "missingFunction")
        ),
        Case("missing IN (1 / 0, x)", False, ("missingAttribute", "math", "missingAttribute")),
    ),
)
def test_evaluation_completes_and_collects_every_error(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        # The operator around a failure returns its own zero value, not a computed one.
        Case("NOT (missing = 2)", False, ("missingAttribute",)),
        Case("NOT (1 / 0 = 1)", False, ("math",)),
        Case("(missing = 2) = FALSE", False, ("missingAttribute",)),
        Case("-(1 / 0)", 0, ("math",)),
        Case("LENGTH(CONCAT(missing, 'abc'))", 0, ("missingAttribute",)),
        Case("1 != 1 / 0", False, ("math",)),
        Case("(5 / 0) + 5", 0, ("math",)),
        # ...except where the failing node is the whole expression and has a value of its own.
        Case("LEFT('abc', -1)", "abc", ("functionEvaluation",)),
        Case("ABS(-2147483648)", 2147483647, ("math",)),
    ),
)
def test_a_failure_gives_the_zero_value_of_the_enclosing_type(case: Case) -> None:
    check(case)


def test_error_kinds_are_the_tck_spellings() -> None:
    assert [kind.value for kind in cesql.ErrorKind] == [
        "parse",
        "math",
        "cast",
        "missingAttribute",
        "missingFunction",
        "functionEvaluation",
        "generic",
    ]
    kind: str = cesql.ErrorKind.MISSING_ATTRIBUTE
    assert kind == "missingAttribute"


def test_errors_are_plain_strings() -> None:
    _, errors = cesql.evaluate("missing + INT('x') + 1 / 0 + FOO() + LENGTH(LEFT('a', -1))", {})
    assert errors == ["missingAttribute", "cast", "math", "missingFunction", "functionEvaluation"]
    assert all(type(kind) is str for kind in errors)


def test_each_evaluation_gets_its_own_error_list() -> None:
    first = cesql.evaluate("missing", {})
    first.errors.append("tampered")
    assert cesql.evaluate("missing", {}) == (False, ["missingAttribute"])
    compiled = cesql.compile("missing")
    result = compiled.evaluate({})
    result.errors.clear()
    assert compiled.evaluate({}).errors == ["missingAttribute"]
