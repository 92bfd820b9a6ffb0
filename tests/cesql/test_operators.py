"""Operators (CESQL v1, 3.4) with the implicit casts of 3.7."""

from __future__ import annotations

import pytest
from agentfn.brokers import cesql

from tests.cesql._harness import Case, check, params

MISSING = ("missingAttribute",)
CAST = ("cast",)
MATH = ("math",)


@pytest.mark.parametrize(
    "case",
    params(
        Case("NOT TRUE", False),
        Case("NOT FALSE", True),
        Case("NOT NOT TRUE", True),
        Case("not true", False),
        # String -> Boolean: "true"/"false" in any case.
        Case("NOT 'TRUE'", False),
        Case("NOT 'false'", True),
        # A failed cast gives false, and NOT computes with it (3.7, the TCK's "Invalid int cast").
        Case("NOT 'yes'", True, CAST),
        # No implicit Integer -> Boolean (BOOL() has one: test_functions).
        Case("NOT 10", True, CAST),
        Case("NOT 0", True, CAST),
        Case("NOT -1", True, CAST),
        # An operand that raised leaves NOT at its zero value: it does not compute.
        Case("NOT missing", False, MISSING),
        Case("NOT (missing = 1)", False, MISSING),
        Case("NOT (1 / 0 = 0)", False, MATH),
        Case("NOT NOT 10", False, CAST),
        Case("NOT mybool", False),
        Case("NOT myint", True, CAST),
        Case("NOT mystring", True, CAST),
        Case("NOT flag", True, CAST, event={"flag": 0}),
        Case("NOT flag", True, event={"flag": "False"}),
    ),
)
def test_not(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        Case("-10", -10),
        Case("--10", 10),
        Case("- -10", 10),
        Case("-(-10)", 10),
        Case("-'10'", -10),
        Case("--'10'", 10),
        Case("-TRUE", -1),
        Case("-FALSE", 0),
        Case("-'abc'", 0, CAST),
        Case("-missing", 0, MISSING),
        Case("-myint", -10),
        Case("-2147483647", -2147483647),
        # The one 32-bit integer without a 32-bit negation.
        Case("- -2147483648", 0, MATH),
        Case("-INT('-2147483648')", 0, MATH),
    ),
)
def test_unary_minus(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        Case("4 + 1", 5),
        Case("-4 + 1", -3),
        Case("-4 + -1", -5),
        Case("4 + -1", 3),
        Case("4 - 1", 3),
        Case("-4 - 1", -5),
        Case("4-1", 3),
        Case("4+1", 5),
        Case("3 * 4", 12),
        Case("-3 * 4", -12),
        Case("5 / 3", 1),
        Case("-5 / 3", -1),
        Case("5 / -3", -1),
        Case("-5 / -3", 1),
        Case("-7 / 2", -3),
        Case("5 % 2", 1),
        Case("5 % 3", 2),
        Case("-5 % 3", -2),
        Case("5 % -3", 2),
        Case("-5 % -3", -2),
        Case("0 / 5", 0),
        Case("5 / 0", 0, MATH),
        Case("5 % 0", 0, MATH),
        Case("0 / 0", 0, MATH),
        # The operand's error wins: the division never happens.
        Case("missing / 0", 0, MISSING),
        Case("missing % 0", 0, MISSING),
        Case("1 / missing", 0, MISSING),
        Case("missing * 5", 0, MISSING),
        Case("'5' + 3", 8),
        Case("5 + '3'", 8),
        Case("'5' + '3'", 8),
        Case("'-5' * '+2'", -10),
        Case("5 + TRUE", 6),
        Case("5 + FALSE", 5),
        Case("myint * 2", 20),
        # A failed cast gives 0, and the operator computes with it.
        Case("'a' + 1", 1, CAST),
        Case("1 - 'a'", 1, CAST),
        Case("'a' - 1", -1, CAST),
        Case("'a' * 3", 0, CAST),
        Case("'a' + 'b'", 0, ("cast", "cast")),
        Case("'1.5' + 1", 1, CAST),
        Case("' 1' + 1", 1, CAST),
        Case("6 / 'a'", 0, ("cast", "math")),
        Case("6 % 'a'", 0, ("cast", "math")),
        Case("'a' / 2", 0, CAST),
        Case("mystring + 2", 2, CAST),
        # An operand that raised (here the cast inside it) leaves the sum at 0.
        Case("('a' + 1) + 1", 0, CAST),
    ),
)
def test_arithmetic(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        Case("2147483647 + 1", 0, MATH),
        Case("-2147483648 - 1", 0, MATH),
        Case("-2147483648 + -1", 0, MATH),
        Case("65536 * 65536", 0, MATH),
        Case("-65536 * 32768", -2147483648),
        Case("2147483647 * -1", -2147483647),
        Case("-2147483648 / -1", 0, MATH),
        Case("-2147483648 % -1", 0),
        Case("2147483647 + 0", 2147483647),
        Case("(2147483647 + 1) - 1", 0, MATH),
    ),
)
def test_integer_overflow_is_a_math_error(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        Case("TRUE = FALSE", False),
        Case("FALSE = FALSE", True),
        Case("1 = 2", False),
        Case("2 = 2", True),
        Case("'abc' = '123'", False),
        Case("'abc' = 'abc'", True),
        Case("'abc' = 'ABC'", False),
        Case("TRUE != FALSE", True),
        Case("FALSE != FALSE", False),
        Case("1 != 2", True),
        Case("2 != 2", False),
        Case("'abc' != '123'", True),
        Case("'abc' != 'abc'", False),
        Case("TRUE <> FALSE", True),
        Case("2 <> 2", False),
        Case("'abc' <> '123'", True),
        Case("missing = 2", False, MISSING),
        Case("missing != 2", False, MISSING),
        Case("missing <> 2", False, MISSING),
        Case("2 = missing", False, MISSING),
        Case("missing = missing", False, ("missingAttribute", "missingAttribute")),
    ),
)
def test_equality(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        # The right operand's type picks the `=` to use; the left one is cast to it (3.7).
        Case("true = 'TRUE'", False),
        Case("'TRUE' = true", True),
        Case("TRUE = 'true'", True),
        Case("FALSE = 'false'", True),
        Case("'5' = 5", True),
        Case("'05' = 5", True),
        Case("5 = '05'", False),
        Case("5 = '5'", True),
        Case("TRUE = 1", True),
        Case("TRUE = 2", False),
        # No implicit Integer -> Boolean: the left operand becomes false, with a cast error.
        Case("2 = TRUE", False, CAST),
        Case("2 = FALSE", True, CAST),
        Case("0 = FALSE", True, CAST),
        Case("2 != FALSE", False, CAST),
        Case("myint = TRUE", False, CAST),
        Case("'abc' = 1", False, CAST),
        Case("'abc' = 0", True, CAST),
        Case("'abc' != 1", True, CAST),
        Case("'abc' <> 0", False, CAST),
        Case("'yes' = TRUE", False, CAST),
        Case("'yes' = FALSE", True, CAST),
        Case("myint = 10", True),
        Case("myint = '10'", True),
        Case("'10' = myint", True),
        Case("'010' = myint", True),
        Case("myint = mystring", False),
        Case("mystring = myint", False, CAST),
        Case("'TRUE' = mybool", True),
        Case("mybool = 'TRUE'", False),
        Case("mybool = 'true'", True),
        Case("sequence = 5", True, event={"sequence": "5"}),
        Case("sequence = 5", False, event={"sequence": "6"}),
    ),
)
def test_equality_casts_the_left_operand_to_the_right_type(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        Case("2 <= 2", True),
        Case("3 <= 2", False),
        Case("1 < 2", True),
        Case("2 < 2", False),
        Case("2 >= 2", True),
        Case("2 >= 3", False),
        Case("2 > 1", True),
        Case("2 > 2", False),
        Case("-5 < -4", True),
        Case("'10' > 9", True),
        Case("10 > '9'", True),
        Case("TRUE > FALSE", True),
        Case("myint >= 10", True),
        Case("hop < ttl", True, event={"hop": "5", "ttl": "10"}),
        # Comparisons are defined on integers only: strings are cast, not compared as text.
        # A failed cast gives 0, compared as such.
        Case("'b' > 'a'", False, ("cast", "cast")),
        Case("'abc' < 1", True, CAST),
        Case("'abc' <= 0", True, CAST),
        Case("'abc' > -1", True, CAST),
        Case("1 >= 'abc'", True, CAST),
        Case("'abc' > 0", False, CAST),
        Case("mystring < 1", True, CAST),
        Case("('a' + 1) > 0", False, CAST),
        Case("missing <= 2", False, MISSING),
        Case("missing > 2", False, MISSING),
        Case("2 < missing", False, MISSING),
    ),
)
def test_integer_comparisons(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        Case("FALSE AND FALSE", False),
        Case("FALSE AND TRUE", False),
        Case("TRUE AND FALSE", False),
        Case("TRUE AND TRUE", True),
        Case("FALSE OR FALSE", False),
        Case("FALSE OR TRUE", True),
        Case("TRUE OR FALSE", True),
        Case("TRUE OR TRUE", True),
        Case("FALSE XOR FALSE", False),
        Case("FALSE XOR TRUE", True),
        Case("TRUE XOR FALSE", True),
        Case("TRUE XOR TRUE", False),
        Case("TRUE XOR TRUE XOR TRUE", True),
        Case("true and true and true and false", False),
        Case("false or false or false or true", True),
        Case("'true' AND 'TRUE'", True),
        # No implicit Integer -> Boolean; a failed cast is a false operand, which also ends an
        # AND early and lets OR go on.
        Case("1 AND -1", False, CAST),
        Case("TRUE AND 1", False, CAST),
        Case("0 OR 0", False, ("cast", "cast")),
        Case("1 OR TRUE", True, CAST),
        Case("TRUE OR 1", True),
        Case("1 XOR TRUE", True, CAST),
        Case("TRUE XOR 1", True, CAST),
        Case("1 XOR 0", False, ("cast", "cast")),
        Case("mybool AND myint", False, CAST),
        Case("myint OR mybool", True, CAST),
        Case("'abc' AND TRUE", False, CAST),
        Case("TRUE AND 'abc'", False, CAST),
        Case("'abc' OR TRUE", True, CAST),
        Case("'abc' XOR TRUE", True, CAST),
        Case("mystring XOR mybool", True, CAST),
        # An operand that raised leaves the operator at false, even where it would be true.
        Case("(NOT 10) AND TRUE", False, CAST),
        Case("(NOT 10) OR TRUE", False, CAST),
        Case("(NOT 10) XOR FALSE", False, CAST),
    ),
)
def test_logical_operators(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        # 3.4.2: AND and OR must not evaluate their right operand when the left decides.
        Case("false and (1 != 1 / 0)", False),
        Case("true or (1 != 1 / 0)", True),
        Case("FALSE AND missing", False),
        Case("TRUE OR missing", True),
        Case("FALSE AND FALSE AND missing", False),
        Case("TRUE OR missing OR missing", True),
        # Without the short circuit the error surfaces, and the result is the zero value.
        Case("true and (1 != 1 / 0)", False, MATH),
        Case("false or (1 != 1 / 0)", False, MATH),
        Case("TRUE AND missing", False, MISSING),
        Case("FALSE OR missing", False, MISSING),
        Case("missing AND TRUE", False, MISSING),
        Case("missing OR TRUE", False, MISSING),
        Case("missing OR TRUE OR TRUE", False, MISSING),
        Case("missing XOR TRUE", False, MISSING),
        Case("TRUE XOR missing", False, MISSING),
        # XOR has no short circuit.
        Case("TRUE XOR (1 / 0 = 0)", False, MATH),
    ),
)
def test_and_or_short_circuit(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        Case("EXISTS id", True),
        Case("EXISTS specversion", True),
        Case("EXISTS source", True),
        Case("EXISTS type", True),
        Case("EXISTS subject", True),
        Case("EXISTS myint", True),
        Case("EXISTS missing", False),
        Case("exists id", True),
        Case("EXISTS ID", True),
        Case("NOT EXISTS missing", True),
        Case("EXISTS subject AND subject = 'mySubject'", True),
        Case("EXISTS nothing", False, event={"nothing": None}),
        Case("EXISTS flag", True, event={"flag": False}),
        Case("EXISTS empty", True, event={"empty": ""}),
    ),
)
def test_exists(case: Case) -> None:
    check(case)


@pytest.mark.parametrize("name", ["id", "source", "specversion", "type", "ID"])
def test_exists_is_true_for_required_attributes_even_where_the_mapping_lacks_them(
    name: str,
) -> None:
    # 3.4.4: the input is assumed to be a valid CloudEvent. Reading one still needs it there.
    assert cesql.evaluate(f"EXISTS {name}", {}) == (True, [])
    assert cesql.evaluate(name, {}) == (False, ["missingAttribute"])


@pytest.mark.parametrize(
    "case",
    params(
        Case("123 IN (1, 2, 3, 12, 13, 23, 123)", True),
        Case("123 NOT IN (1, 2, 3, 12, 13, 23, 123)", False),
        Case("'abc' IN ('abc', \"bcd\")", True),
        Case("'aaa' IN ('abc', \"bcd\")", False),
        Case("'aaa' NOT IN ('abc', \"bcd\")", True),
        Case("TRUE IN (TRUE, FALSE)", True),
        Case("TRUE IN (FALSE)", False),
        Case("source IN (mystring, 'abc')", True, event={"mystring": "http://localhost/source"}),
        Case("source IN (source)", True),
        Case('source IN (id, "http://localhost/source")', True),
        Case("source IN (id, 'xyz')", False),
        # Each element is cast to the type of the left operand (3.4.5, 3.7).
        Case("'true' IN (TRUE, 'false')", True),
        Case("'true' IN ('TRUE', 'false')", False),
        Case("TRUE IN ('true', 'false')", True),
        Case("'TRUE' IN (TRUE, 'false')", False),
        Case("1 IN ('1', '2')", True),
        Case("'1' IN (1, 2)", True),
        Case("myint IN ('10')", True),
        Case("myint IN (TRUE)", False),
        Case("1 IN (TRUE)", True),
        Case("x in (1, 2)", True, event={"x": "2"}),
        # Elements are compared in order and the first equal one decides.
        Case("1 IN (1, 'a')", True),
        # An element that fails its cast is compared as the zero value, with a cast error.
        Case("1 IN ('a', 1)", True, CAST),
        Case("1 IN ('a', 2)", False, CAST),
        Case("0 IN ('a', 2)", True, CAST),
        Case("1 NOT IN ('a', 2)", True, CAST),
        Case("1 IN ('a', 'b')", False, ("cast", "cast")),
        Case("1 IN ('a', x)", False, ("cast", "cast"), event={"x": "b"}),
        Case("1 IN ('a', x)", True, CAST, event={"x": "1"}),
        # No implicit Integer -> Boolean for the elements either.
        Case("TRUE IN (1)", False, CAST),
        Case("FALSE IN (1)", True, CAST),
        Case("TRUE IN (x)", False, CAST, event={"x": 1}),
        Case("mybool IN (1, TRUE)", True, CAST),
        Case("mybool NOT IN (0, 2)", True, ("cast", "cast")),
        Case("1 IN (1, missing)", True),
        Case("1 IN (missing, 1)", False, MISSING),
        Case("missing IN (1, 2, 3)", False, MISSING),
        Case("missing NOT IN (1, 2, 3)", False, MISSING),
        Case("1 IN (1 / 0, 1)", False, MATH),
        Case("2 IN (1 + 1)", True),
        Case("myint IN ('a', 10)", True, CAST),
        Case("myint IN (10, 'a')", True),
        Case("myint NOT IN ('9', '11')", True),
        Case("mybool IN ('TRUE')", True),
        Case("mybool IN ('yes', TRUE)", True, CAST),
        Case("mybool IN ('yes', FALSE)", False, CAST),
        Case("mystring IN (1, TRUE, 'my extension')", True),
        Case("big IN ('4294967296')", True, event={"big": 2**32}),
        Case("when IN ('2024-01-01T00:00:00Z')", True, event={"when": "2024-01-01T00:00:00Z"}),
    ),
)
def test_in(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        # 3.6, highest first: unary, LIKE, EXISTS, IN, * / %, + -, comparisons, AND OR XOR.
        Case("4 * 2 + 4 / 2", 10),
        Case("4 * (2 + 4) / 2", 12),
        Case("2 + 3 * 4", 14),
        Case("10 - 4 - 3", 3),
        Case("100 / 10 / 5", 2),
        Case("2 * 7 % 4", 2),
        Case("1 + 1 = 2", True),
        Case("2 = 1 + 1", True),
        Case("-2 * 3", -6),
        Case("-(2 + 3) * 2", -10),
        # AND, OR and XOR share one right-associative level (the spec's ANTLR grammar, as the
        # Go SDK in Knative's brokers evaluates it): not SQL's AND-before-OR.
        Case("TRUE OR FALSE AND FALSE", True),
        Case("(TRUE OR FALSE) AND FALSE", False),
        Case("FALSE AND FALSE OR TRUE", False),
        Case("(FALSE AND FALSE) OR TRUE", True),
        Case("TRUE XOR TRUE OR TRUE", False),
        Case("(TRUE XOR TRUE) OR TRUE", True),
        Case("TRUE OR TRUE XOR TRUE", True),
        Case("FALSE OR FALSE OR TRUE AND FALSE", False),
        Case("TRUE AND TRUE AND FALSE OR TRUE", True),
        # The right-hand group is skipped whole by a short-circuit: no error from inside it.
        Case("FALSE AND missing OR TRUE", False),
        # A unary operator takes only the next operand.
        Case("NOT TRUE = FALSE", True),
        # (NOT 1) = 2: NOT raised its cast error, so `=` is false.
        Case("NOT 1 = 2", False, CAST),
        Case("NOT (1 = 2)", True),
        Case("NOT 'abc' LIKE 'a%'", False, CAST),
        Case("NOT ('abc' LIKE 'a%')", False),
        # LIKE and IN bind tighter than arithmetic and comparison.
        Case("1 + 'ab' LIKE 'a%'", 2),
        Case("2 * 3 IN (3)", 2),
        Case("'abc' LIKE 'a%' = TRUE", True),
        # 1 = (1 IN (1)): 1 = TRUE, and 1 does not cast to Boolean implicitly.
        Case("1 = 1 IN (1)", False, CAST),
        Case("TRUE = 1 IN (1)", True),
        Case("'x' LIKE 'x' IN (TRUE)", True),
        Case("EXISTS id AND EXISTS source", True),
        Case("myint > 5 AND mystring LIKE 'my%' OR FALSE", True),
    ),
)
def test_precedence(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        Case("TRUE AND true And tRUE", True),
        Case("false Or FALSE oR true", True),
        Case("true xor TRUE", False),
        Case("'abc' like 'A%'", False),
        Case("'abc' Like 'a%'", True),
        Case("'abc' not like 'a%'", False),
        Case("1 in (1)", True),
        Case("1 not In (1)", False),
        Case("Exists ID", True),
        Case("ID = 'myId'", True),
        Case("Id = 'myId'", True),
        Case("length('abc')", 3),
    ),
)
def test_keywords_and_identifiers_are_case_insensitive(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        # 3.7 implicit casts, one row per operator: where the cast fails the operand becomes the
        # zero value of the operator's parameter type, with a cast error, and the operator
        # computes with it. Integer -> Boolean is never implicit (the TCK's `NOT 10`).
        Case("NOT 10", True, CAST),
        Case("10 AND TRUE", False, CAST),
        Case("10 OR TRUE", True, CAST),
        Case("10 XOR TRUE", True, CAST),
        Case("-'x'", 0, CAST),
        Case("-(NOT 10)", 0, CAST),
        Case("'x' + 2", 2, CAST),
        Case("2 - 'x'", 2, CAST),
        Case("'x' * 2", 0, CAST),
        Case("'x' / 2", 0, CAST),
        Case("'x' % 2", 0, CAST),
        Case("10 = FALSE", True, CAST),
        Case("10 != FALSE", False, CAST),
        Case("10 <> TRUE", True, CAST),
        Case("'x' < 1", True, CAST),
        Case("'x' <= -1", False, CAST),
        Case("'x' > -1", True, CAST),
        Case("'x' >= 1", False, CAST),
        # LIKE casts to String, which never fails; an operand that raised still leaves it false.
        Case("10 LIKE '1%'", True),
        Case("TRUE LIKE 'true'", True),
        Case("(NOT 10) LIKE 'true'", False, CAST),
        Case("FALSE IN (10)", True, CAST),
        Case("0 IN ('x')", True, CAST),
    ),
)
def test_each_implicit_cast_that_fails_gives_the_zero_value_and_a_cast_error(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    ("implicit", "explicit"),
    [
        (Case("NOT 10", True, CAST), Case("NOT BOOL(10)", False)),
        (Case("NOT 0", True, CAST), Case("NOT BOOL(0)", True)),
        (Case("10 AND TRUE", False, CAST), Case("BOOL(10) AND TRUE", True)),
        (Case("10 = TRUE", False, CAST), Case("BOOL(10) = TRUE", True)),
        (Case("TRUE IN (10)", False, CAST), Case("TRUE IN (BOOL(10))", True)),
        (Case("NOT myint", True, CAST), Case("NOT BOOL(myint)", False)),
    ],
    ids=lambda case: case.expression,
)
def test_integer_to_boolean_is_a_cast_only_bool_makes(implicit: Case, explicit: Case) -> None:
    check(implicit)
    check(explicit)
