"""Expressions that do not parse: ``evaluate`` gives ``(None, ["parse"])``, ``compile`` raises
``CesqlParseError`` saying where."""

from __future__ import annotations

import pickle

import pytest
from agentfn.brokers import cesql
from agentfn.brokers.cesql import CesqlParseError


@pytest.mark.parametrize(
    ("expression", "offset", "reason"),
    [
        ("", 0, "empty expression"),
        ("   ", 3, "empty expression"),
        ("ABC(", 4, "expected a value, found end of expression"),
        ("(ABC()", 6, "expected ')' to close the parenthesis"),
        ("(1 + 2))", 7, "unexpected ')'"),
        ("1 +", 3, "expected a value"),
        ("a b", 2, "unexpected 'b'"),
        ("1 2", 2, "unexpected '2'"),
        ("1 == 1", 3, "expected a value, found '='"),
        ("TRUE(1)", 4, "unexpected '('"),
        ("x LIKE 123", 7, "LIKE needs a string literal pattern, found '123'"),
        ("x NOT 5", 6, "expected LIKE or IN after NOT, found '5'"),
        ("x NOT", 5, "expected LIKE or IN after NOT, found end of expression"),
        ("x IN ()", 2, "the IN set needs at least one element"),
        ("x IN 1", 5, "expected '(' to open the IN set"),
        ("x IN (1, 2", 10, "expected ',' or ')' in the IN set"),
        ("x IN (1 2)", 8, "expected ',' or ')' in the IN set, found '2'"),
        ("'abc", 0, "unterminated string literal"),
        ("a = 'x' AND b = \"y", 16, "unterminated string literal"),
        ("2147483648", 0, "integer literal 2147483648 is outside the 32-bit range"),
        ("1 + -2147483649", 4, "integer literal -2147483649 is outside the 32-bit range"),
        ("a # b", 2, "unexpected character '#'"),
        ("a = 'x' && b", 8, "unexpected character '&'"),
        ("a ! b", 2, "unexpected character '!'"),
        ("attr.name = 1", 4, "unexpected character '.'"),
        ("my_ext = 1", 0, "invalid attribute name 'my_ext'"),
        ("é = 1", 0, "unexpected character 'é'"),
        ("EXISTS", 6, "EXISTS needs an attribute name, found end of expression"),
        ("EXISTS 'id'", 7, "EXISTS needs an attribute name"),
        ("EXISTS TRUE", 7, "EXISTS needs an attribute name"),
        ("NOT", 3, "expected a value"),
        ("+x", 1, "expected an integer after '+', found 'x'"),
        ("1 + +", 5, "expected an integer after '+'"),
        ("f1(2)", 0, "invalid function name 'f1'"),
        ("LENGTH('a' 'b')", 11, "expected ',' or ')' in the arguments of LENGTH"),
        ("AND TRUE", 0, "expected a value, found 'AND'"),
        ("TRUE AND", 8, "expected a value, found end of expression"),
        ("(", 1, "expected a value"),
        (")", 0, "expected a value, found ')'"),
        (",", 0, "expected a value, found ','"),
    ],
)
def test_position_and_reason(expression: str, offset: int, reason: str) -> None:
    assert cesql.evaluate(expression, {}) == (None, ["parse"])
    with pytest.raises(CesqlParseError) as caught:
        cesql.compile(expression)
    error = caught.value
    assert error.offset == offset
    assert error.reason.startswith(reason)
    assert error.expression == expression
    assert str(error.kind) == "parse"
    assert f"column {offset + 1}" in str(error)


def test_line_and_column_count_from_one() -> None:
    expression = "type = 'x'\n  AND source LIKE 5"
    with pytest.raises(CesqlParseError) as caught:
        cesql.compile(expression)
    error = caught.value
    assert (error.offset, error.line, error.column) == (29, 2, 19)
    assert str(error) == (
        "LIKE needs a string literal pattern, found '5' at line 2, column 19 (offset 29)"
    )


def test_a_parse_error_survives_pickling() -> None:
    # Trigger validation may run in a worker process and report back.
    with pytest.raises(CesqlParseError) as caught:
        cesql.compile("a = 'x' AND")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.reason, copy.offset, copy.line, copy.column) == (
        caught.value.reason,
        11,
        1,
        12,
    )
    assert str(copy) == str(caught.value)


def test_a_parse_error_is_a_value_error() -> None:
    # So that loading a Trigger can treat every bad field alike.
    with pytest.raises(ValueError, match="column 3"):
        cesql.compile("a b")


def test_depth_is_bounded_instead_of_exhausting_the_stack() -> None:
    fine = "(" * 90 + "1" + ")" * 90
    assert cesql.evaluate(fine, {}) == (1, [])
    for deep in (
        "(" * 101 + "1" + ")" * 101,
        "NOT " * 101 + "TRUE",
        "-" * 101 + "1",
        "1" + " + 1" * 101,
        "LENGTH(" * 101 + "'a'" + ")" * 101,
        "(" * 100_000,
    ):
        with pytest.raises(CesqlParseError, match="nested more than 100 levels"):
            cesql.compile(deep)
        assert cesql.evaluate(deep, {}) == (None, ["parse"])


def test_long_flat_chains_are_not_deep() -> None:
    # A filter listing many alternatives stays one level deep however long it is.
    names = [f"t{i}" for i in range(2000)]
    expression = " OR ".join(f"type = '{name}'" for name in names)
    compiled = cesql.compile(expression)
    assert compiled.matches({"type": "t1999"})
    assert not compiled.matches({"type": "other"})
    assert cesql.compile(" AND ".join(["TRUE"] * 2000)).matches({})
    assert cesql.compile("x IN (" + ", ".join(f"'{name}'" for name in names) + ")").matches(
        {"x": "t7"}
    )
