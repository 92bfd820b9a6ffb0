"""Trigger filters: Knative's legacy ``filter.attributes`` and the ``filters`` dialects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from agentfn.brokers.filters import TriggerFilter, compile_filter, match_all
from hypothesis import given
from hypothesis import strategies as st

#: A binary-mode CloudEvent from an upload service, with a boolean and an integer extension.
UPLOADED: Mapping[str, object] = {
    "specversion": "1.0",
    "id": "8f1c1d2e-5b7a-4c55-9a3e-0d6b1f0e2a91",
    "source": "/storage/buckets/invoices",
    "type": "dev.agentfn.document.uploaded",
    "subject": "2025/03/invoice-0042.pdf",
    "datacontenttype": "application/pdf",
    "time": "2025-03-14T12:00:00Z",
    "priority": 5,
    "urgent": True,
    "tenant": "acme",
}

#: A structured-mode order event without ``subject`` or extensions.
ORDER_CREATED: Mapping[str, object] = {
    "specversion": "1.0",
    "id": "A234-1234-1234",
    "source": "https://shop.example.com/orders",
    "type": "com.example.order.created",
    "datacontenttype": "application/json",
}


def event(**changes: object) -> dict[str, object]:
    """``UPLOADED`` with some attributes changed; a value of None removes the attribute."""
    attributes = dict(UPLOADED)
    for name, value in changes.items():
        if value is None:
            attributes.pop(name, None)
        else:
            attributes[name] = value
    return attributes


class RecordingCompiler:
    """A CESQL compiler double: records each expression, answers with a canned predicate."""

    def __init__(self, answer: bool = True) -> None:
        self.expressions: list[str] = []
        self.seen: list[Mapping[str, object]] = []
        self.answer = answer

    def __call__(self, expression: str) -> TriggerFilter:
        self.expressions.append(expression)

        def predicate(attributes: Mapping[str, object]) -> bool:
            self.seen.append(attributes)
            return self.answer

        return predicate


def refusing_compiler(expression: str) -> TriggerFilter:
    raise ValueError(f"filters.cesql: syntax error in {expression!r}")


def unused_compiler(expression: str) -> TriggerFilter:
    raise AssertionError(f"the CESQL compiler was called for {expression!r}")


def dialects(*filters: dict[str, Any]) -> TriggerFilter:
    return compile_filter(None, list(filters), cesql=unused_compiler)


# --- no filter ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("legacy", "filters"),
    [
        (None, None),
        (None, []),
        ({}, None),  # a filter without attributes
        ({"attributes": None}, None),
        ({"attributes": {}}, None),  # an empty attributes map matches everything
        ({"attributes": {}}, []),
    ],
)
def test_absent_or_empty_filters_match_every_event(legacy: Any, filters: Any) -> None:
    trigger_filter = compile_filter(legacy, filters)

    assert trigger_filter is match_all
    assert trigger_filter(UPLOADED)
    assert trigger_filter(ORDER_CREATED)
    assert trigger_filter({})


# --- legacy filter.attributes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "event_attributes", "matches"),
    [
        ({"type": "dev.agentfn.document.uploaded"}, UPLOADED, True),
        ({"type": "dev.agentfn.document.uploaded"}, ORDER_CREATED, False),
        # Exact and case-sensitive: no prefix, no case folding.
        ({"type": "dev.agentfn.document"}, UPLOADED, False),
        ({"type": "Dev.AgentFn.Document.Uploaded"}, UPLOADED, False),
        ({"source": "/storage/buckets/invoices/"}, UPLOADED, False),
        # Every listed attribute must match.
        (
            {"type": "dev.agentfn.document.uploaded", "source": "/storage/buckets/invoices"},
            UPLOADED,
            True,
        ),
        ({"type": "dev.agentfn.document.uploaded", "source": "/other"}, UPLOADED, False),
        # An empty value matches any value, but the attribute must exist.
        ({"subject": ""}, UPLOADED, True),
        ({"subject": ""}, ORDER_CREATED, False),
        ({"type": "com.example.order.created", "subject": ""}, ORDER_CREATED, False),
        ({"tenant": ""}, event(tenant=""), True),
        # Extensions.
        ({"tenant": "acme"}, UPLOADED, True),
        ({"tenant": "acme"}, ORDER_CREATED, False),
    ],
)
def test_attributes_filter(
    attributes: dict[str, str], event_attributes: Mapping[str, object], matches: bool
) -> None:
    assert compile_filter({"attributes": attributes}, None)(event_attributes) is matches


@pytest.mark.parametrize(
    ("expected", "actual", "matches"),
    [
        ("true", True, True),
        ("false", False, True),
        ("True", True, False),  # canonical form is lowercase
        (True, True, True),  # YAML `urgent: true` in the filter
        (True, "true", True),  # string extension on the wire
        (False, True, False),
        ("5", 5, True),
        (5, 5, True),  # YAML `priority: 5` in the filter
        (5, "5", True),
        ("05", 5, False),
        ("5", 6, False),
    ],
)
def test_attributes_filter_compares_canonical_strings(
    expected: object, actual: object, matches: bool
) -> None:
    trigger_filter = compile_filter({"attributes": {"ext": expected}}, None)

    assert trigger_filter({**ORDER_CREATED, "ext": actual}) is matches


def test_attribute_names_are_case_sensitive() -> None:
    trigger_filter = compile_filter({"attributes": {"Type": "dev.agentfn.document.uploaded"}}, None)

    assert not trigger_filter(UPLOADED)


def test_attribute_whose_value_is_none_counts_as_absent() -> None:
    trigger_filter = compile_filter({"attributes": {"subject": ""}}, None)

    assert not trigger_filter({**ORDER_CREATED, "subject": None})


@pytest.mark.parametrize(
    ("legacy", "message"),
    [
        ("type=x", "filter: must be an object"),
        (["type"], "filter: must be an object"),
        ({"attributes": ["type"]}, "filter.attributes: must be a map"),
        ({"attributes": "type"}, "filter.attributes: must be a map"),
    ],
)
def test_malformed_legacy_filter(legacy: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_filter(legacy, None)


# --- filters dialects -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "body", "event_attributes", "matches"),
    [
        ("exact", {"type": "dev.agentfn.document.uploaded"}, UPLOADED, True),
        ("exact", {"type": "dev.agentfn.document"}, UPLOADED, False),
        ("exact", {"type": "DEV.AGENTFN.DOCUMENT.UPLOADED"}, UPLOADED, False),
        ("exact", {"subject": ""}, UPLOADED, False),  # no wildcard in the new dialect
        ("exact", {"subject": ""}, event(subject=""), True),
        ("exact", {"subject": "x"}, ORDER_CREATED, False),
        ("exact", {"urgent": "true"}, UPLOADED, True),
        ("exact", {"urgent": True}, UPLOADED, True),
        ("exact", {"priority": 5}, UPLOADED, True),
        ("exact", {"priority": "5"}, UPLOADED, True),
        ("prefix", {"type": "dev.agentfn."}, UPLOADED, True),
        ("prefix", {"type": "dev.agentfn."}, ORDER_CREATED, False),
        ("prefix", {"type": "Dev."}, UPLOADED, False),
        ("prefix", {"source": "https://"}, ORDER_CREATED, True),
        ("prefix", {"subject": "2025/"}, ORDER_CREATED, False),  # absent never matches
        ("prefix", {"subject": ""}, ORDER_CREATED, False),
        ("prefix", {"subject": ""}, UPLOADED, True),
        ("prefix", {"urgent": "tr"}, UPLOADED, True),
        ("suffix", {"type": ".uploaded"}, UPLOADED, True),
        ("suffix", {"type": ".created"}, UPLOADED, False),
        ("suffix", {"subject": ".pdf"}, UPLOADED, True),
        ("suffix", {"subject": ".PDF"}, UPLOADED, False),
        ("suffix", {"subject": ".pdf"}, ORDER_CREATED, False),
        ("suffix", {"priority": "5"}, UPLOADED, True),
    ],
)
def test_single_attribute_dialects(
    dialect: str, body: dict[str, object], event_attributes: Mapping[str, object], matches: bool
) -> None:
    assert dialects({dialect: body})(event_attributes) is matches


@pytest.mark.parametrize("dialect", ["exact", "prefix", "suffix"])
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"type": "dev.agentfn.document.uploaded", "source": "/storage/buckets/invoices"},
        "type",
        ["type", "x"],
        None,
    ],
)
def test_single_attribute_dialects_need_exactly_one_attribute(dialect: str, body: Any) -> None:
    with pytest.raises(
        ValueError, match=rf"^filters\.{dialect}: must hold exactly one attribute: value pair$"
    ):
        dialects({dialect: body})


@pytest.mark.parametrize("value", [None, ["a"], {"nested": "x"}, 1.5])
def test_single_attribute_dialect_value_must_be_a_string(value: object) -> None:
    with pytest.raises(ValueError, match=r"^filters\.exact\.type: value must be a string$"):
        dialects({"exact": {"type": value}})


@pytest.mark.parametrize(
    ("event_attributes", "matches"),
    [
        (UPLOADED, True),
        (event(type="dev.agentfn.document.deleted"), False),
        (event(source="/storage/buckets/receipts"), False),
        (
            event(subject="2025/03/invoice-0042.PDF", urgent=False),
            False,
        ),  # suffix is case-sensitive
        (event(subject="2025/03/invoice-0042.txt", urgent=False), False),
        (event(subject="2025/03/invoice-0042.txt"), True),
        (event(urgent=False), True),
        (ORDER_CREATED, False),
    ],
)
def test_nested_all_any_not(event_attributes: Mapping[str, object], matches: bool) -> None:
    # An invoice upload that is a PDF or urgent, from any bucket but receipts.
    trigger_filter = dialects(
        {
            "all": [
                {"exact": {"type": "dev.agentfn.document.uploaded"}},
                {"not": {"suffix": {"source": "/receipts"}}},
                {"any": [{"suffix": {"subject": ".pdf"}}, {"exact": {"urgent": "true"}}]},
            ]
        }
    )

    assert trigger_filter(event_attributes) is matches


@pytest.mark.parametrize(
    ("dialect", "matches"),
    [("all", True), ("any", False)],  # all([]) is True, any([]) is False
)
def test_empty_all_and_any(dialect: str, matches: bool) -> None:
    assert dialects({dialect: []})(UPLOADED) is matches


def test_not_of_an_absent_attribute_matches() -> None:
    trigger_filter = dialects({"not": {"exact": {"subject": "x"}}})

    assert trigger_filter(ORDER_CREATED)
    assert not trigger_filter(event(subject="x"))


def test_double_negation() -> None:
    trigger_filter = dialects({"not": {"not": {"prefix": {"type": "com.example."}}}})

    assert trigger_filter(ORDER_CREATED)
    assert not trigger_filter(UPLOADED)


def test_top_level_filters_must_all_match() -> None:
    trigger_filter = dialects(
        {"prefix": {"type": "dev.agentfn."}},
        {"exact": {"tenant": "acme"}},
    )

    assert trigger_filter(UPLOADED)
    assert not trigger_filter(event(tenant="globex"))
    assert not trigger_filter(event(type="com.example.document.uploaded"))


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"exact": {"type": "x"}}, r"^filters: must be a list$"),
        ("exact", r"^filters: must be a list$"),
        ([{"regex": {"type": ".*"}}], r"^filters: unknown dialect 'regex'$"),
        ([{"Exact": {"type": "x"}}], r"^filters: unknown dialect 'Exact'$"),
        ([{"all": [{"sql": "true"}]}], r"^filters: unknown dialect 'sql'$"),
        ([{}], r"^filters: each filter is an object with one dialect key"),
        ([{"exact": {"type": "x"}, "prefix": {"type": "y"}}], r"one dialect key"),
        (["exact"], r"one dialect key"),
        ([{"all": {"exact": {"type": "x"}}}], r"^filters\.all: must be a list of filters$"),
        ([{"any": "exact"}], r"^filters\.any: must be a list of filters$"),
        ([{"not": [{"exact": {"type": "x"}}]}], r"one dialect key"),
        ([{"any": [{"exact": {}}]}], r"^filters\.exact: must hold exactly one"),
    ],
)
def test_malformed_filters(filters: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_filter(None, filters, cesql=unused_compiler)


@pytest.mark.parametrize(
    "legacy",
    [
        {"attributes": {"type": "com.example.order.created"}},
        {"attributes": {"type": "no-such-type"}},
        "not even an object",  # not validated: filters win
    ],
)
def test_filters_win_over_filter(legacy: Any) -> None:
    trigger_filter = compile_filter(
        legacy, [{"exact": {"type": "dev.agentfn.document.uploaded"}}], cesql=unused_compiler
    )

    assert trigger_filter(UPLOADED)
    assert not trigger_filter(ORDER_CREATED)


def test_empty_filters_fall_back_to_filter() -> None:
    trigger_filter = compile_filter({"attributes": {"type": "com.example.order.created"}}, [])

    assert trigger_filter(ORDER_CREATED)
    assert not trigger_filter(UPLOADED)


# --- cesql ----------------------------------------------------------------------------------


def test_cesql_expression_goes_to_the_injected_compiler() -> None:
    compiler = RecordingCompiler(answer=True)
    expression = "type LIKE 'dev.agentfn.%' AND priority > 3"

    trigger_filter = compile_filter(None, [{"cesql": expression}], cesql=compiler)

    assert compiler.expressions == [expression]
    assert trigger_filter(UPLOADED) is True
    assert compiler.seen == [UPLOADED]


@pytest.mark.parametrize("answer", [True, False])
def test_cesql_answer_is_the_filters_answer(answer: bool) -> None:
    trigger_filter = compile_filter(
        None, [{"cesql": "EXISTS subject"}], cesql=RecordingCompiler(answer)
    )

    assert trigger_filter(ORDER_CREATED) is answer


def test_cesql_is_compiled_once_not_per_event() -> None:
    compiler = RecordingCompiler()
    trigger_filter = compile_filter(None, [{"cesql": "tenant = 'acme'"}], cesql=compiler)

    for _ in range(3):
        trigger_filter(UPLOADED)

    assert compiler.expressions == ["tenant = 'acme'"]
    assert len(compiler.seen) == 3


def test_cesql_nested_in_other_dialects() -> None:
    compiler = RecordingCompiler(answer=False)
    trigger_filter = compile_filter(
        None,
        [
            {"prefix": {"type": "dev.agentfn."}},
            {"not": {"cesql": "urgent"}},
            {"any": [{"cesql": "priority > 9"}, {"exact": {"tenant": "acme"}}]},
        ],
        cesql=compiler,
    )

    assert compiler.expressions == ["urgent", "priority > 9"]
    assert trigger_filter(UPLOADED)
    assert not trigger_filter(event(tenant="globex"))


def test_cesql_short_circuits_after_a_failing_attribute_filter() -> None:
    compiler = RecordingCompiler()
    trigger_filter = compile_filter(
        None, [{"exact": {"type": "nope"}}, {"cesql": "true"}], cesql=compiler
    )

    assert not trigger_filter(UPLOADED)
    assert compiler.seen == []


def test_cesql_compile_error_propagates() -> None:
    with pytest.raises(ValueError, match=r"^filters\.cesql: syntax error in 'type ==== x'$"):
        compile_filter(None, [{"cesql": "type ==== x"}], cesql=refusing_compiler)


def test_cesql_compile_error_inside_all_propagates() -> None:
    with pytest.raises(ValueError, match="syntax error"):
        compile_filter(
            None, [{"all": [{"exact": {"type": "x"}}, {"cesql": "("}]}], cesql=refusing_compiler
        )


@pytest.mark.parametrize("body", ["", "   ", None, 42, ["type = 'x'"]])
def test_cesql_needs_a_non_empty_expression(body: Any) -> None:
    compiler = RecordingCompiler()

    with pytest.raises(ValueError, match=r"^filters\.cesql: must be a non-empty expression$"):
        compile_filter(None, [{"cesql": body}], cesql=compiler)
    assert compiler.expressions == []


# --- properties -----------------------------------------------------------------------------

_text = st.text(max_size=20)


@given(value=_text, prefix=_text)
def test_prefix_agrees_with_str_startswith(value: str, prefix: str) -> None:
    trigger_filter = dialects({"prefix": {"subject": prefix}})

    assert trigger_filter({"subject": value}) is value.startswith(prefix)


@given(value=_text, suffix=_text)
def test_suffix_agrees_with_str_endswith(value: str, suffix: str) -> None:
    trigger_filter = dialects({"suffix": {"subject": suffix}})

    assert trigger_filter({"subject": value}) is value.endswith(suffix)


@given(value=_text, expected=_text)
def test_exact_and_legacy_attributes_agree_with_equality(value: str, expected: str) -> None:
    exact = dialects({"exact": {"subject": expected}})
    legacy = compile_filter({"attributes": {"subject": expected}}, None)

    assert exact({"subject": value}) is (value == expected)
    assert legacy({"subject": value}) is (expected in {value, ""})


@given(prefix=_text)
def test_prefix_never_matches_an_absent_attribute(prefix: str) -> None:
    assert dialects({"prefix": {"subject": prefix}})(ORDER_CREATED) is False


@given(value=_text, prefix=_text)
def test_not_inverts(value: str, prefix: str) -> None:
    plain = dialects({"prefix": {"subject": prefix}})
    negated = dialects({"not": {"prefix": {"subject": prefix}}})

    assert negated({"subject": value}) is not plain({"subject": value})


def test_a_null_legacy_value_matches_any_value_of_an_existing_attribute() -> None:
    # `source:` with nothing after it in YAML is null; Knative treats it as "".
    predicate = compile_filter({"attributes": {"source": None}}, None)
    assert predicate({"type": "t", "source": "/anything"})
    assert not predicate({"type": "t"})
