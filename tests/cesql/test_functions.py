"""Built-in functions (CESQL v1, 3.5) and the casting functions INT, BOOL, STRING, IS_INT and
IS_BOOL."""

from __future__ import annotations

import pytest

from tests.cesql._harness import Case, check, params

FE = ("functionEvaluation",)
CAST = ("cast",)
MISSING = ("missingAttribute",)
NO_FUNCTION = ("missingFunction",)


@pytest.mark.parametrize(
    "case",
    params(
        Case("LENGTH('abc')", 3),
        Case("LENGTH('')", 0),
        Case("LENGTH('2')", 1),
        Case("LENGTH(TRUE)", 4),
        Case("LENGTH(-123)", 4),
        # Characters, not bytes.
        Case("LENGTH('héllo ✓')", 7),
        Case("LENGTH(mystring)", 12),
        Case("CONCAT('a', 'b', 'c')", "abc"),
        Case("CONCAT()", ""),
        Case("CONCAT('a')", "a"),
        Case("CONCAT('a', 1, TRUE)", "a1true"),
        Case("CONCAT(id, '-', myint)", "myId-10"),
        Case("CONCAT_WS(',', 'a', 'b', 'c')", "a,b,c"),
        Case("CONCAT_WS(',')", ""),
        Case("CONCAT_WS(',', 'a')", "a"),
        Case("CONCAT_WS('', 'a', 'b')", "ab"),
        Case("CONCAT_WS(0, 1, 2)", "102"),
        Case("LOWER('ABC')", "abc"),
        Case("LOWER('AbC')", "abc"),
        Case("LOWER('abc')", "abc"),
        Case("LOWER(TRUE)", "true"),
        Case("UPPER('ABC')", "ABC"),
        Case("UPPER('AbC')", "ABC"),
        Case("UPPER('abc')", "ABC"),
        Case("UPPER('straße')", "STRASSE"),
        Case("TRIM('   a b c   ')", "a b c"),
        Case("TRIM('   a b c')", "a b c"),
        Case("TRIM('a b c   ')", "a b c"),
        Case("TRIM('a b c')", "a b c"),
        Case("TRIM('\t\n a \r\n')", "a"),
        # Unicode whitespace goes; control characters that are not whitespace stay.
        Case("TRIM('\u3000\u00a0a\u2003')", "a"),
        Case("TRIM('\x1fa\x1f')", "\x1fa\x1f"),
        Case("LEFT('abc', 2)", "ab"),
        Case("LEFT('abc', 10)", "abc"),
        Case("LEFT('', 0)", ""),
        Case("LEFT('abc', 0)", ""),
        Case("LEFT('abc', -2)", "abc", FE),
        Case("LEFT('abc', '2')", "ab"),
        Case("LEFT('abc', 'x')", "", CAST),
        Case("RIGHT('abc', 2)", "bc"),
        Case("RIGHT('abc', 10)", "abc"),
        Case("RIGHT('', 0)", ""),
        Case("RIGHT('abc', 0)", ""),
        Case("RIGHT('abc', -2)", "abc", FE),
    ),
)
def test_string_functions(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        Case("SUBSTRING('abcdef', 1)", "abcdef"),
        Case("SUBSTRING('abcdef', 2)", "bcdef"),
        Case("SUBSTRING('Quadratically', 5)", "ratically"),
        Case("SUBSTRING('Sakila', -3)", "ila"),
        Case("SUBSTRING('abcdef', 1, 6)", "abcdef"),
        Case("SUBSTRING('abcdef', 2, 4)", "bcde"),
        Case("SUBSTRING('Sakila', -5, 3)", "aki"),
        Case("SUBSTRING('Quadratically', 0)", ""),
        Case("SUBSTRING('Quadratically', 0, 1)", ""),
        Case("SUBSTRING('abc', 3)", "c"),
        Case("SUBSTRING('abc', -3)", "abc"),
        Case("SUBSTRING('abcdef', 2, 100)", "bcdef"),
        Case("SUBSTRING('abcdef', 2, 0)", ""),
        Case("SUBSTRING('', 0)", ""),
        Case("SUBSTRING('abcdef', 10)", "", FE),
        Case("SUBSTRING('abcdef', -10)", "", FE),
        Case("SUBSTRING('abcdef', 10, 10)", "", FE),
        Case("SUBSTRING('abcdef', -10, 10)", "", FE),
        Case("SUBSTRING('abc', 4)", "", FE),
        Case("SUBSTRING('', 1)", "", FE),
        Case("SUBSTRING('abcdef', 2, -1)", "", FE),
        Case("SUBSTRING('abcdef', 0, -1)", "", FE),
    ),
)
def test_substring(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        Case("ABS(10)", 10),
        Case("ABS(-10)", 10),
        Case("ABS(0)", 0),
        Case("ABS(2147483647)", 2147483647),
        Case("ABS(-2147483647)", 2147483647),
        Case("ABS(-2147483648)", 2147483647, ("math",)),
        Case("ABS('-5')", 5),
        Case("ABS(TRUE)", 1),
        Case("ABS('x')", 0, CAST),
        Case("ABS(missing)", 0, MISSING),
    ),
)
def test_abs(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        Case("INT('1')", 1),
        Case("INT('-1')", -1),
        Case("INT('+7')", 7),
        Case("INT('007')", 7),
        Case("INT(1)", 1),
        Case("INT(-1)", -1),
        Case("INT(TRUE)", 1),
        Case("INT(FALSE)", 0),
        Case("INT(myint)", 10),
        Case("INT('2147483647')", 2147483647),
        Case("INT('-2147483648')", -2147483648),
        Case("INT('ABC')", 0, CAST),
        Case("INT('2147483648')", 0, CAST),
        Case("INT('')", 0, CAST),
        Case("INT(' 1')", 0, CAST),
        Case("INT('1_000')", 0, CAST),
        Case("INT('1.0')", 0, CAST),
        Case("INT('\u0661')", 0, CAST),  # an Arabic-Indic digit one
        Case("INT('" + "9" * 100 + "')", 0, CAST),
        Case("BOOL('TRUE')", True),
        Case("BOOL('true')", True),
        Case('BOOL("false")', False),
        Case("BOOL('FaLsE')", False),
        Case("BOOL(TRUE)", True),
        Case("BOOL(FALSE)", False),
        Case("BOOL('ABC')", False, CAST),
        Case("BOOL(' true')", False, CAST),
        Case("BOOL(1)", True),
        Case("BOOL(0)", False),
        Case("BOOL(100)", True),
        Case("BOOL(-50)", True),
        Case("STRING(TRUE)", "true"),
        Case("STRING(FALSE)", "false"),
        Case("STRING(1)", "1"),
        Case("STRING(-1)", "-1"),
        Case("STRING(-0)", "0"),
        Case("STRING(007)", "7"),
        Case('STRING("abc")', "abc"),
        Case("IS_INT('12')", True),
        Case("IS_INT('-12')", True),
        Case("IS_INT(12)", True),
        Case("IS_INT(TRUE)", True),
        Case("IS_INT('abc')", False),
        Case("IS_INT('2147483648')", False),
        Case("IS_INT(mystring)", False),
        Case("IS_INT(myint)", True),
        Case("IS_BOOL('TRUE')", True),
        Case("IS_BOOL('false')", True),
        Case("IS_BOOL(FALSE)", True),
        Case("IS_BOOL(0)", True),
        Case("IS_BOOL('yes')", False),
        Case("IS_BOOL(missing)", False, MISSING),
        Case("int(hop) < int(ttl) and int(hop) < 1000", True, event={"hop": "5", "ttl": "10"}),
        Case("INT(hop) < INT(ttl) AND INT(hop) < 1000", True, event={"hop": "5", "ttl": "10"}),
    ),
)
def test_casting_functions(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        Case("length('abc')", 3),
        Case("Length('abc')", 3),
        Case("concat_ws('-', 'a', 'b')", "a-b"),
        Case("Is_Int('1')", True),
    ),
)
def test_function_names_are_case_insensitive(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        Case("FOO()", False, NO_FUNCTION),
        Case("FOO(1, 2)", False, NO_FUNCTION),
        Case("CONCAT_WS()", False, NO_FUNCTION),
        Case("LENGTH()", False, NO_FUNCTION),
        Case("LENGTH('a', 'b')", False, NO_FUNCTION),
        Case("ABS(1, 2)", False, NO_FUNCTION),
        Case("SUBSTRING('abc')", False, NO_FUNCTION),
        Case("SUBSTRING('abc', 1, 2, 3)", False, NO_FUNCTION),
        Case("INT()", False, NO_FUNCTION),
        # The arguments of a call that cannot be dispatched are not evaluated.
        Case("FOO(missing, 1 / 0)", False, NO_FUNCTION),
        Case("FOO() + 1", 0, NO_FUNCTION),
        Case("NOT FOO()", False, NO_FUNCTION),
        Case("FOO() OR TRUE", False, NO_FUNCTION),
    ),
)
def test_an_unknown_function_or_arity_is_a_missing_function(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        # An argument that raised: the function is not called and returns its zero value.
        Case("LENGTH(missing)", 0, MISSING),
        Case("UPPER(missing)", "", MISSING),
        Case("BOOL(missing)", False, MISSING),
        Case("LEFT(missing, -1)", "", MISSING),
        Case("LEFT('abc', 1 / 0)", "", ("math",)),
        Case("CONCAT('a', missing, 1 % 0)", "", ("missingAttribute", "math")),
        # A function's own error also reaches the enclosing expression.
        Case("LENGTH(LEFT('abc', -1))", 0, FE),
        Case("ABS(-2147483648) + 0", 0, ("math",)),
        Case("ABS(-2147483648) = 2147483647", False, ("math",)),
        Case("UPPER(SUBSTRING('abc', 9))", "", FE),
    ),
)
def test_errors_in_and_around_calls(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "expression", ["my1func()", "_foo()", "1abc()", "LENGTH 'a'", "LENGTH('a'", "LENGTH(,)"]
)
def test_invalid_calls_do_not_parse(expression: str) -> None:
    check(Case(expression, None, ("parse",)))
