"""Literals (CESQL v1, 2.2): booleans, 32-bit integers, '' and "" strings."""

from __future__ import annotations

import pytest

from tests.cesql._harness import Case, check, params

PARSE = ("parse",)


@pytest.mark.parametrize(
    "case",
    params(
        Case("TRUE", True),
        Case("FALSE", False),
        Case("true", True),
        Case("false", False),
        Case("tRuE", True),
        Case("FaLsE", False),
    ),
)
def test_boolean_literals_are_case_insensitive(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        Case("0", 0),
        Case("1", 1),
        Case("123", 123),
        Case("-1", -1),
        Case("+5", 5),
        Case("007", 7),
        Case("2147483647", 2147483647),
        Case("-2147483648", -2147483648),
        Case("+2147483647", 2147483647),
        Case("- 5", -5),
    ),
)
def test_integer_literals(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "expression",
    ["2147483648", "-2147483649", "+2147483648", "99999999999999999999", "1" * 5000],
)
def test_integer_literals_outside_32_bits_do_not_parse(expression: str) -> None:
    check(Case(expression, None, PARSE))


@pytest.mark.parametrize(
    "case",
    params(
        Case("'abc'", "abc"),
        Case('"abc"', "abc"),
        Case("'aBc'", "aBc"),
        Case('"AbC"', "AbC"),
        Case("''", ""),
        Case('""', ""),
        Case("'héllo wörld ✓'", "héllo wörld ✓"),
        Case("'two\nlines'", "two\nlines"),
        # Each quote style holds the other freely and its own escaped.
        Case(r"""'a"b\'c'""", "a\"b'c"),
        Case(r'''"a'b\"c"''', "a'b\"c"),
        # SQL's doubled quote, which the upstream lexer accepts too.
        Case("'it''s'", "it's"),
        Case('"say ""hi"""', 'say "hi"'),
        Case(r"'a\\b'", "a\\b"),
        Case(r"'ends with \\'", "ends with \\"),
        # Other backslashes are kept, so LIKE sees \% and \_ (see test_like).
        Case(r"'a\nb'", "a\\nb"),
        Case(r"'a\%b'", "a\\%b"),
        Case(r"'\\\''", "\\'"),
    ),
)
def test_string_literals(case: Case) -> None:
    check(case)


@pytest.mark.parametrize("expression", ["'abc", '"abc', "'abc\\'", "'", "'it''s", "\"a' "])
def test_unterminated_strings_do_not_parse(expression: str) -> None:
    check(Case(expression, None, PARSE))


@pytest.mark.parametrize(
    "case",
    params(
        Case("(TRUE)", True),
        Case("((('x')))", "x"),
        Case("4 * (2 + 3)", 20),
        Case("(2 + 3) * 4", 20),
    ),
)
def test_sub_expressions(case: Case) -> None:
    check(case)
