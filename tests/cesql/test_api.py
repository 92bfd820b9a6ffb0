"""The public API: ``compile``, ``evaluate``, ``CompiledExpression`` and the filter view."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from agentfn.brokers import cesql

from tests.cesql._harness import EVENT


def test_public_names() -> None:
    assert sorted(cesql.__all__) == [
        "CesqlParseError",
        "CompiledExpression",
        "ErrorKind",
        "EvaluationResult",
        "compile",
        "evaluate",
    ]


def test_a_compiled_expression_is_reused_across_events() -> None:
    compiled = cesql.compile("type = 'order.created' AND INT(amount) > 100")
    assert compiled.expression == "type = 'order.created' AND INT(amount) > 100"
    assert compiled.evaluate({"type": "order.created", "amount": "250"}) == (True, [])
    assert compiled.evaluate({"type": "order.created", "amount": 50}) == (False, [])
    assert compiled.evaluate({"type": "order.deleted", "amount": "250"}) == (False, [])
    assert compiled.evaluate({"type": "order.created"}) == (False, ["missingAttribute"])
    assert compiled.evaluate({"type": "order.created", "amount": "lots"}) == (False, ["cast"])
    assert compiled.evaluate({"type": "order.created", "amount": "250"}) == (True, [])


def test_evaluation_result_is_a_value_errors_pair() -> None:
    result = cesql.evaluate("1 / 0", {})
    value, errors = result
    assert (value, errors) == (0, ["math"])
    assert result.value == 0
    assert result.errors == ["math"]
    assert result == (0, ["math"])
    assert isinstance(result, tuple)


@pytest.mark.parametrize(
    ("expression", "matches"),
    [
        ("TRUE", True),
        ("type = 'com.example.event'", True),
        ("myint > 5 AND mybool", True),
        ("FALSE", False),
        # A value that is not a Boolean never passes, whatever it is.
        ("1", False),
        ("myint", False),
        ("'true'", False),
        ("mystring", False),
        ("STRING(TRUE)", False),
        # Nor does anything that raised an error.
        ("missing = 'x'", False),
        ("missing != 'x'", False),
        ("NOT (missing = 'x')", False),
        ("missing IS_BOOL", False),
        ("BOOL('maybe')", False),
        ("TRUE OR missing", True),
        ("missing OR TRUE", False),
        ("myext NOT LIKE 'a%'", False),
        ("FOO()", False),
        ("ABS(-2147483648) > 0", False),
    ],
)
def test_matches_is_true_only_for_boolean_true_without_errors(
    expression: str, matches: bool
) -> None:
    try:
        compiled = cesql.compile(expression)
    except cesql.CesqlParseError:
        assert not matches
        return
    assert compiled.matches(EVENT) is matches
    value, errors = compiled.evaluate(EVENT)
    assert matches == (value is True and not errors)


def test_compile_rejects_an_invalid_filter_with_its_position() -> None:
    with pytest.raises(cesql.CesqlParseError) as caught:
        cesql.compile("type = 'x' AND source LIKE 42")
    assert caught.value.column == 28
    assert "LIKE needs a string literal pattern" in str(caught.value)


def test_evaluate_caches_compilation_but_not_results() -> None:
    expression = "counter = 1"
    assert cesql.evaluate(expression, {"counter": 1}) == (True, [])
    assert cesql.evaluate(expression, {"counter": 2}) == (False, [])
    assert cesql.evaluate(expression, {}) == (False, ["missingAttribute"])
    assert cesql.evaluate("a b", {}) == (None, ["parse"])
    assert cesql.evaluate("a b", {}) == (None, ["parse"])


def test_evaluate_wants_a_string() -> None:
    with pytest.raises(TypeError, match="expression must be a str"):
        cesql.evaluate(b"TRUE", {})  # type: ignore[arg-type]


def test_compiled_expressions_compare_by_source() -> None:
    first, second = cesql.compile("a = 1"), cesql.compile("a = 1")
    assert first == second
    assert hash(first) == hash(second)
    assert first != cesql.compile("a = 2")
    assert repr(first) == "CompiledExpression('a = 1')"


def test_a_compiled_expression_is_safe_to_share_between_threads() -> None:
    compiled = cesql.compile("INT(n) % 2 = 0 AND missing IN (1) OR n LIKE '%0'")

    def run(n: int) -> tuple[object, list[str]]:
        value, errors = compiled.evaluate({"n": str(n)})
        return value, errors

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, range(2000)))
    for n, (value, errors) in enumerate(results):
        if n % 2 == 0:
            # `missing IN (1)` raised; OR still tries its right operand, but the whole is false.
            assert (value, errors) == (False, ["missingAttribute"])
        else:
            assert (value, errors) == (False, [])
