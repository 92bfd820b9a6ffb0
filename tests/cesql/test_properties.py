"""Properties over generated input: totality, 32-bit arithmetic, literals and LIKE."""

from __future__ import annotations

from functools import cache

from agentfn.brokers import cesql
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.cesql._harness import EVENT

INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
KINDS = {kind.value for kind in cesql.ErrorKind}

# Words, operators and literals of CESQL, so that generated text often parses.
_VOCABULARY = [
    "TRUE", "FALSE", "NOT", "AND", "OR", "XOR", "LIKE", "IN", "EXISTS", "(", ")", ",",
    "=", "!=", "<>", "<", "<=", ">", ">=", "+", "-", "*", "/", "%",
    "0", "1", "-1", "2147483647", "-2147483648", "'a%'", "'abc'", "''", '"x"', "'\\_'",
    "id", "type", "myint", "mybool", "mystring", "missing",
    "LENGTH", "CONCAT", "CONCAT_WS", "LOWER", "UPPER", "TRIM", "LEFT", "RIGHT", "SUBSTRING",
    "ABS", "INT", "BOOL", "STRING", "IS_INT", "IS_BOOL", "FOO",
]  # fmt: skip


def _check_total(expression: str) -> None:
    value, errors = cesql.evaluate(expression, EVENT)
    if value is None:
        assert errors == ["parse"]
        return
    assert type(value) in (bool, int, str)
    if type(value) is int:
        assert -(2**31) <= value < 2**31
    assert set(errors) <= KINDS - {"parse"}
    compiled = cesql.compile(expression)
    assert compiled.evaluate(EVENT) == (value, errors)
    assert compiled.matches(EVENT) is (value is True and not errors)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
@example("(" * 5000)
@example("'" * 3)
@example("\\")
def test_any_text_evaluates_or_fails_to_parse(expression: str) -> None:
    _check_total(expression)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_VOCABULARY), max_size=14))
def test_any_token_soup_evaluates_or_fails_to_parse(words: list[str]) -> None:
    _check_total(" ".join(words))


def _reference(op: str, x: int, y: int) -> tuple[int, list[str]]:
    """32-bit arithmetic as the spec defines it: truncated division, remainder with the sign of
    the dividend, a math error (and 0) for division by zero and for a result out of range."""
    if op in "/%" and y == 0:
        return 0, ["math"]
    if op == "+":
        result = x + y
    elif op == "-":
        result = x - y
    elif op == "*":
        result = x * y
    elif op == "/":
        result = abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1)
    else:
        result = abs(x) % abs(y) * (1 if x >= 0 else -1)
    if not -(2**31) <= result < 2**31:
        return 0, ["math"]
    return result, []


@settings(max_examples=400, deadline=None)
@given(st.sampled_from("+-*/%"), INT32 | st.integers(-3, 3), INT32 | st.integers(-3, 3))
@example("/", -(2**31), -1)
@example("%", -(2**31), -1)
@example("*", -(2**31), -1)
@example("-", 0, -(2**31))
def test_arithmetic_matches_a_32_bit_model(op: str, x: int, y: int) -> None:
    expected = _reference(op, x, y)
    assert cesql.evaluate(f"{x} {op} {y}", {}) == expected
    # The same through attributes, which arrive as ints or as strings.
    assert cesql.evaluate(f"x {op} y", {"x": x, "y": str(y)}) == expected


@settings(max_examples=200, deadline=None)
@given(INT32, INT32)
def test_comparisons_match_python(x: int, y: int) -> None:
    for op, python in (("<", x < y), ("<=", x <= y), (">", x > y), (">=", x >= y),
                       ("=", x == y), ("!=", x != y), ("<>", x != y)):  # fmt: skip
        assert cesql.evaluate(f"{x} {op} {y}", {}) == (python, [])
        assert cesql.evaluate(f"x {op} '{y}'", {"x": x}) == (python, [])


@settings(max_examples=200, deadline=None)
@given(INT32)
def test_integer_text_round_trips(number: int) -> None:
    assert cesql.evaluate(f"INT(STRING({number}))", {}) == (number, [])
    assert cesql.evaluate("INT(x)", {"x": str(number)}) == (number, [])
    assert cesql.evaluate(f"-({number})", {}) == (
        (-number, []) if number != -(2**31) else (0, ["math"])
    )


def _quote(text: str, quote: str) -> str:
    escaped = text.replace("\\", "\\\\").replace(quote, "\\" + quote)
    return quote + escaped + quote


@settings(max_examples=300, deadline=None)
@given(st.text(), st.sampled_from(["'", '"']))
def test_string_literals_round_trip(text: str, quote: str) -> None:
    assert cesql.evaluate(_quote(text, quote), {}) == (text, [])
    doubled = quote + text.replace(quote, quote * 2) + quote
    if "\\" not in text:
        assert cesql.evaluate(doubled, {}) == (text, [])
    assert cesql.evaluate(f"x = {_quote(text, quote)}", {"x": text}) == (True, [])


def _like_reference(value: str, pattern: str) -> bool:
    """LIKE by dynamic programming over (value index, pattern index), independent of regex."""
    tokens: list[str | None] = []  # None for %, "" for _, else a literal character
    pos = 0
    while pos < len(pattern):
        char = pattern[pos]
        if char == "\\" and pos + 1 < len(pattern) and pattern[pos + 1] in "%_\\":
            tokens.append(pattern[pos + 1])
            pos += 2
            continue
        tokens.append(None if char == "%" else "" if char == "_" else char)
        pos += 1

    @cache
    def match(i: int, j: int) -> bool:
        if j == len(tokens):
            return i == len(value)
        token = tokens[j]
        if token is None:
            return match(i, j + 1) or (i < len(value) and match(i + 1, j))
        if i == len(value):
            return False
        return (token == "" or token == value[i]) and match(i + 1, j + 1)

    return match(0, 0)


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet="ab%_\\.\n", max_size=8), st.text(alphabet="ab%_\\.\n", max_size=8))
@example("a%", "a\\%")
@example("a\\", "a\\")
@example("", "%%")
def test_like_matches_a_reference_matcher(value: str, pattern: str) -> None:
    expected = _like_reference(value, pattern)
    # Pattern and value pass through string literals, so escape them for the lexer.
    expression = f"x LIKE {_quote(pattern, chr(39))}"
    assert cesql.evaluate(expression, {"x": value}) == (expected, [])
    assert cesql.evaluate(f"x NOT LIKE {_quote(pattern, chr(39))}", {"x": value}) == (
        not expected,
        [],
    )
