"""Context attributes and extensions (CESQL v1, 3.2) and how event values become CESQL values."""

from __future__ import annotations

import datetime as dt

import pytest
from agentfn.brokers import cesql

from tests.cesql._harness import EVENT, Case, check, params

MISSING = ("missingAttribute",)


@pytest.mark.parametrize(
    "case",
    params(
        Case("id", "myId"),
        Case("subject", "mySubject"),
        Case("mybool", True),
        Case("myint", 10),
        Case("mystring", "my extension"),
        Case("source", "http://localhost/source"),
        Case("time", "2018-04-26T14:48:09+02:00"),
        Case("ID", "myId"),
        Case("MyInt", 10),
        Case("ext1", "x", event={"ext1": "x"}),
        Case("1ext", "y", event={"1ext": "y"}),
    ),
)
def test_attributes_keep_their_type(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "case",
    params(
        # 3.2: the zero value of the type the enclosing expression needs, Boolean when unknown.
        Case("missing", False, MISSING),
        Case("(missing)", False, MISSING),
        Case('true AND (missingattribute = "")', False, MISSING),
        Case("missingattribute * 5", 0, MISSING),
        Case("1 / missingattribute", 0, MISSING),
        Case("CONCAT(missing)", "", MISSING),
        Case("myext LIKE 'custom%'", False, MISSING),
        Case("myext = 'customext'", False, MISSING),
        Case(
            "type LIKE 'example.%' AND myext LIKE 'custom%'",
            False,
            MISSING,
            event={"type": "example.event.type"},
        ),
        Case("id LIKE 'my%' OR myext LIKE '%ext'", False, MISSING, event={"id": "notmyId"}),
    ),
)
def test_a_missing_attribute_raises_an_error(case: Case) -> None:
    check(case)


def test_an_absent_optional_attribute_is_missing() -> None:
    event = {"specversion": "1.0", "id": "myId", "source": "localhost.localdomain", "type": "t"}
    assert cesql.evaluate("subject", event) == (False, ["missingAttribute"])
    assert cesql.evaluate("EXISTS subject", event) == (False, [])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        ("", ""),
        (True, True),
        (False, False),
        (0, 0),
        (-2147483648, -2147483648),
        (2147483647, 2147483647),
        # Not CESQL types (3.2): represented as strings.
        (2147483648, "2147483648"),
        (-(2**40), str(-(2**40))),
        (1.5, "1.5"),
        (b"\x00\xffhi", "AP9oaQ=="),
        (bytearray(b"hi"), "aGk="),
        (
            dt.datetime(2018, 4, 26, 14, 48, 9, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2018-04-26T14:48:09+02:00",
        ),
        (dt.datetime(2018, 4, 26, 12, 48, 9, 500000, tzinfo=dt.UTC), "2018-04-26T12:48:09.500000Z"),
    ],
)
def test_event_values_become_cesql_values(value: object, expected: object) -> None:
    value_out, errors = cesql.evaluate("ext", {"ext": value})
    assert errors == []
    assert value_out == expected
    assert type(value_out) is type(expected)


def test_an_attribute_set_to_none_is_absent() -> None:
    assert cesql.evaluate("ext", {"ext": None}) == (False, ["missingAttribute"])
    assert cesql.evaluate("EXISTS ext", {"ext": None}) == (False, [])


def test_an_int_beyond_32_bits_is_a_string_that_does_not_cast() -> None:
    assert cesql.evaluate("big = '4294967296'", {"big": 2**32}) == (True, [])
    # The failed cast gives 0, and the sum is computed with it.
    assert cesql.evaluate("big + 1", {"big": 2**32}) == (1, ["cast"])


def test_data_is_not_an_attribute() -> None:
    event = {**EVENT, "data": {"x": 1}}
    assert cesql.evaluate("data", event) == (False, ["missingAttribute"])
    assert cesql.evaluate("EXISTS data", event) == (False, [])
    assert cesql.evaluate("data = 'x'", {**EVENT, "data": "x"}) == (False, ["missingAttribute"])
    assert cesql.evaluate("data LIKE 'x'", {**EVENT, "data": "x"}) == (False, ["missingAttribute"])


def test_attribute_names_are_lowercased_before_the_lookup() -> None:
    # CloudEvents attribute names are lower case; an expression may write them in any case.
    assert cesql.evaluate("MyExt = 'a'", {"myext": "a"}) == (True, [])
    assert cesql.evaluate("myext = 'a'", {"MyExt": "a"}) == (False, ["missingAttribute"])


def test_any_mapping_serves_as_the_event() -> None:
    from types import MappingProxyType

    compiled = cesql.compile("type = 't' AND EXISTS subject")
    assert compiled.matches(MappingProxyType({"type": "t", "subject": "1"}))
    assert not compiled.matches(MappingProxyType({"type": "t"}))


def test_the_event_is_not_modified() -> None:
    event = {"a": 2**40, "b": b"x", "t": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)}
    before = dict(event)
    cesql.evaluate("a = '1' OR b = 'eA==' OR t LIKE '2020%' OR LENGTH(a) > 0", event)
    assert event == before
