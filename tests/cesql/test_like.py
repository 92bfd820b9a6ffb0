"""LIKE (CESQL v1, 3.4.3): % is any run, _ one character, \\% and \\_ literal; case-sensitive."""

from __future__ import annotations

import pytest

from tests.cesql._harness import Case, check, params


@pytest.mark.parametrize(
    "case",
    params(
        Case("'abc' LIKE 'abc'", True),
        Case(r"'ab\c' LIKE 'ab\c'", True),
        Case("'abc' NOT LIKE 'abc'", False),
        Case("'abc' LIKE 'ABC'", False),
        Case("'' LIKE ''", True),
        Case("'a' LIKE ''", False),
        Case("'abc' LIKE 'a%b%c'", True),
        Case("'azbc' LIKE 'a%b%c'", True),
        Case("'azzzbzzzc' LIKE 'a%b%c'", True),
        Case("'a%b%c' LIKE 'a%b%c'", True),
        Case("'ac' LIKE 'abc'", False),
        Case("'' LIKE 'abc'", False),
        Case("'.ab.cde.' LIKE '.%.%.'", True),
        Case("'ab.cde' LIKE '.%.%.'", False),
        Case("'abc' LIKE 'a_b_c'", False),
        Case("'a_b_c' LIKE 'a_b_c'", True),
        Case("'abzc' LIKE 'a_b_c'", False),
        Case("'azbc' LIKE 'a_b_c'", False),
        Case("'azbzc' LIKE 'a_b_c'", True),
        Case("'.a.b.' LIKE '._._.'", True),
        Case("'abcd.' LIKE '._._.'", False),
        Case("'' LIKE '%'", True),
        Case("'' LIKE '_'", False),
        Case("'abc' LIKE '%%'", True),
        Case("'abc' LIKE '%'", True),
        Case("'abc' LIKE '___'", True),
        Case("'abcd' LIKE '___'", False),
        Case("'abc' LIKE 'ab%'", True),
        Case("'xabc' LIKE 'ab%'", False),
        Case("'xab' LIKE '%ab'", True),
        Case("'abx' LIKE '%ab'", False),
        Case("'xaby' LIKE '%ab%'", True),
        Case("'xay' LIKE '%ab%'", False),
        Case("'multi\nline' LIKE 'multi_line'", True),
        Case("'multi\nline' LIKE 'multi%'", True),
        Case("'a.c' LIKE 'a.c'", True),
        Case("'abc' LIKE 'a.c'", False),
        Case("'a+b(c)[d]$' LIKE 'a+b(c)[d]$'", True),
        # The spec's example, with % for its typo'd *: one character, then b, then anything.
        Case("'ab' LIKE '_b%'", True),
        Case("'abc' LIKE '_b%'", True),
        Case("'abcd1' LIKE '_b%'", True),
        Case("'b' LIKE '_b%'", False),
        Case("'acd' LIKE '_b%'", False),
        Case("'aBc' LIKE '_b%'", False),
        Case("'ab*' LIKE '_b*'", True),
        Case("'ab' LIKE '_b*'", False),
    ),
)
def test_wildcards(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        Case(r"'a_b_c' LIKE 'a\_b\_c'", True),
        Case(r"'a_b_c' NOT LIKE 'a\_b\_c'", False),
        Case(r"'azbzc' LIKE 'a\_b\_c'", False),
        Case(r"'abc' LIKE 'a\_b\_c'", False),
        Case(r"'abc' LIKE 'a\%b\%c'", False),
        Case(r"'a%b%c' LIKE 'a\%b\%c'", True),
        Case(r"'azbzc' LIKE 'a\%b\%c'", False),
        Case(r"'abc%' LIKE 'abc\%'", True),
        Case(r"'abcd' LIKE 'abc\%'", False),
        Case(r"'100%' LIKE '%\%'", True),
        Case(r"'100' LIKE '%\%'", False),
        # In the pattern a doubled backslash is one literal backslash.
        Case(r"'a\\b' LIKE 'a\\\\b'", True),
        Case(r"'a\\%' LIKE 'a\\\\%'", True),
        Case(r"'a\\xyz' LIKE 'a\\\\%'", True),
        Case(r"'a\\' LIKE 'a\\'", True),
        Case(r"myext LIKE 'abc%123\%456\_d_f'", True, event={"myext": "abc123123%456_dzf"}),
        Case(r"myext NOT LIKE 'abc%123\%456\_d_f'", False, event={"myext": "abc123123%456_dzf"}),
    ),
)
def test_escapes(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        Case("234 LIKE '23_'", True),
        Case("2344 LIKE '23%'", True),
        Case("2344 LIKE '23_'", False),
        Case("-5 LIKE '-%'", True),
        Case("TRUE LIKE 'tr%'", True),
        Case("TRUE LIKE '%ue'", True),
        Case("FALSE LIKE 'tr%'", False),
        Case("FALSE LIKE 'fal%'", True),
        Case("myint LIKE '1_'", True),
        Case("mybool LIKE 'true'", True),
        Case("(1 + 1) LIKE '2'", True),
        Case("missing LIKE 'a%'", False, ("missingAttribute",)),
        Case("missing NOT LIKE 'a%'", False, ("missingAttribute",)),
        Case("(1 / 0) LIKE '0'", False, ("math",)),
        Case("source LIKE 'https://%'", True, event={"source": "https://example.com"}),
        Case("source LIKE 'https://%'", False, event={"source": "http://example.com"}),
        Case("type like '%.error'", True, event={"type": "com.github.error"}),
        Case("type like '%.error'", False, event={"type": "com.github.success"}),
    ),
)
def test_operand_is_cast_to_string(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "expression",
    ["x LIKE 123", "x LIKE y", "x LIKE ('a')", "x LIKE", "x NOT LIKE TRUE", "x LIKE -1"],
)
def test_pattern_must_be_a_string_literal(expression: str) -> None:
    check(Case(expression, None, ("parse",)))
