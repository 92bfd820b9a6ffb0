"""The CloudEvents Protobuf format binding: round trips (hypothesis), every attribute type, the
data rules, invalid messages refused naming the field, and the wire form read and written by
field number (a hand-written encoder and decoder, independent of the generated stubs)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from agentfn.events import CloudEvent, InvalidEventError, from_protobuf, to_protobuf
from agentfn.events.proto import cloudevents_pb2
from google.protobuf import any_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from tests.events._support import attrs, event
from tests.events.test_properties import (
    BASE,
    absolute_uris,
    assert_well_formed,
    extension_names,
    json_values,
    outcome,
    rfc3339_timestamps,
    typed_events,
    uri_references,
)

Message = cloudevents_pb2.CloudEvent
Value = cloudevents_pb2.CloudEvent.CloudEventAttributeValue


def message(**fields: Any) -> cloudevents_pb2.CloudEvent:
    """A valid minimal message with ``fields`` set (``attributes`` as name -> Value)."""
    base: dict[str, Any] = {
        "id": "evt-1",
        "source": "/sensors/1",
        "spec_version": "1.0",
        "type": "com.example.reading",
    }
    base.update(fields)
    return Message(**base)


def _instant(text: str) -> tuple[int, int] | None:
    """The (seconds, nanos) protobuf's own RFC 3339 parser gives ``text``; ``None`` where a
    Timestamp cannot hold it (leap second, year 0, out of range)."""
    stamp = Timestamp()
    try:
        stamp.FromJsonString(text.upper())
    except ValueError:
        return None
    return stamp.seconds, stamp.nanos


def expected_after_round_trip(sent: CloudEvent) -> CloudEvent:
    """``sent`` as the binding gives it back: ``time`` respelt in UTC when a Timestamp holds it."""
    time = sent.attributes.get("time")
    if not isinstance(time, str) or _instant(time) is None:
        return sent
    back = from_protobuf(to_protobuf(sent)).attributes["time"]
    assert isinstance(back, str)
    assert _instant(back) == _instant(time)
    return sent.with_attributes(time=back)


# ------------------------------------------------------------------------------ round trips


@BASE
@given(typed_events)
def test_round_trip_is_identity_up_to_the_spelling_of_time(sent: CloudEvent) -> None:
    expected = expected_after_round_trip(sent)
    assert from_protobuf(to_protobuf(sent)) == expected
    assert from_protobuf(to_protobuf(sent).SerializeToString()) == expected


@BASE
@given(typed_events)
def test_a_second_round_trip_changes_nothing(sent: CloudEvent) -> None:
    once = from_protobuf(to_protobuf(sent))
    assert from_protobuf(to_protobuf(once)) == once
    assert to_protobuf(once) == to_protobuf(sent)


@BASE
@given(rfc3339_timestamps())
def test_time_keeps_its_instant_or_its_text(time: str) -> None:
    sent = event(time=time)
    written = to_protobuf(sent).attributes["time"]
    back = from_protobuf(to_protobuf(sent)).attributes["time"]
    assert isinstance(back, str)
    if _instant(time) is None:
        assert written.WhichOneof("attr") == "ce_string"
        assert back == time
    else:
        assert written.WhichOneof("attr") == "ce_timestamp"
        assert (written.ce_timestamp.seconds, written.ce_timestamp.nanos) == _instant(time)
        assert _instant(back) == _instant(time)
        assert back.endswith("Z")


@BASE
@given(st.datetimes(timezones=st.just(UTC)))
def test_time_written_by_the_runtime_survives_exactly(moment: datetime) -> None:
    sent = event(time=moment)  # CloudEvent.new's spelling: UTC, Z, no or six fraction digits
    assert from_protobuf(to_protobuf(sent)) == sent


@BASE
@given(json_values.filter(lambda v: v is not None and not isinstance(v, str)))
def test_json_data_without_a_content_type_travels_as_json_text(data: Any) -> None:
    # A str without a content type is text (text_data as it is): see the data table below.
    sent = event(data)
    written = to_protobuf(sent)
    assert written.WhichOneof("data") == "text_data"
    assert json.loads(written.text_data) == data
    assert written.attributes["datacontenttype"].ce_string == "application/json"
    assert from_protobuf(written) == sent.with_attributes(datacontenttype="application/json")


@BASE
@given(
    st.dictionaries(
        extension_names,
        st.booleans() | st.integers(-(2**31), 2**31 - 1) | st.text(max_size=20),
        max_size=4,
    ),
    absolute_uris,
)
def test_attribute_values_are_written_by_their_type(
    extensions: dict[str, bool | int | str], schema: str
) -> None:
    sent = event(dataschema=schema, time="2018-04-05T17:31:00Z", subject="s", **extensions)
    written = to_protobuf(sent).attributes
    assert written["dataschema"].WhichOneof("attr") == "ce_uri"
    assert written["time"].WhichOneof("attr") == "ce_timestamp"
    assert written["subject"].WhichOneof("attr") == "ce_string"
    for name, value in extensions.items():
        kind = {bool: "ce_boolean", int: "ce_integer", str: "ce_string"}[type(value)]
        assert written[name].WhichOneof("attr") == kind
        assert getattr(written[name], kind) == value
    assert set(written) == {"dataschema", "time", "subject", *extensions}


def test_required_attributes_are_the_messages_own_fields() -> None:
    written = to_protobuf(event())
    assert (written.id, written.source, written.spec_version, written.type) == (
        "evt-1",
        "/sensors/1",
        "1.0",
        "com.example.reading",
    )
    assert not written.attributes
    assert written.WhichOneof("data") is None


# ------------------------------------------------------------------- every attribute type read


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Value(ce_boolean=True), True),
        (Value(ce_boolean=False), False),
        (Value(ce_integer=-(2**31)), -(2**31)),
        (Value(ce_integer=0), 0),
        (Value(ce_string="plain text"), "plain text"),
        (Value(ce_string=""), ""),
        (Value(ce_bytes=b"\x00\xff binary"), base64.b64encode(b"\x00\xff binary").decode()),
        (Value(ce_uri="https://example.com/a?b#c"), "https://example.com/a?b#c"),
        (Value(ce_uri_ref="../relative/ref"), "../relative/ref"),
        (Value(ce_timestamp=Timestamp(seconds=1522949460)), "2018-04-05T17:31:00Z"),
        (Value(ce_timestamp=Timestamp(seconds=0, nanos=5000)), "1970-01-01T00:00:00.000005Z"),
        (Value(ce_timestamp=Timestamp(seconds=-1, nanos=7)), "1969-12-31T23:59:59.000000007Z"),
        (Value(ce_timestamp=Timestamp(seconds=-62135596800)), "0001-01-01T00:00:00Z"),
        (
            Value(ce_timestamp=Timestamp(seconds=253402300799, nanos=999999999)),
            "9999-12-31T23:59:59.999999999Z",
        ),
    ],
)
def test_every_attribute_type_is_read(value: Any, expected: bool | int | str) -> None:
    received = from_protobuf(message(attributes={"ext": value}))
    assert received.attributes["ext"] == expected
    assert type(received.attributes["ext"]) is type(expected)


def test_context_attributes_are_read_from_any_string_type() -> None:
    received = from_protobuf(
        message(
            attributes={
                "time": Value(ce_string="2018-04-05T17:31:00+02:00"),
                "dataschema": Value(ce_uri_ref="https://example.com/schema"),
                "subject": Value(ce_uri_ref="sub/ject"),
                "datacontenttype": Value(ce_string="text/plain; charset=utf-8"),
            }
        )
    )
    assert dict(received.attributes) == attrs(
        time="2018-04-05T17:31:00+02:00",
        dataschema="https://example.com/schema",
        subject="sub/ject",
        datacontenttype="text/plain; charset=utf-8",
    )


# ------------------------------------------------------------------------------- data


@pytest.mark.parametrize(
    ("content_type", "data", "field", "wire"),
    [
        (None, b"\x00\x01", "binary_data", b"\x00\x01"),
        ("application/octet-stream", b"raw", "binary_data", b"raw"),
        ("text/plain", "h\u00e9llo", "text_data", "h\u00e9llo"),
        (None, "no type given", "text_data", "no type given"),
        ("application/json", {"a": [1, 2.5, None, "x"]}, "text_data", '{"a":[1,2.5,null,"x"]}'),
        ("application/cloudevents+json", "a JSON string", "text_data", '"a JSON string"'),
        ("application/json", 42, "text_data", "42"),
    ],
)
def test_data_goes_in_the_field_of_its_kind(
    content_type: str | None, data: Any, field: str, wire: bytes | str
) -> None:
    sent = event(data) if content_type is None else event(data, datacontenttype=content_type)
    written = to_protobuf(sent)
    assert written.WhichOneof("data") == field
    assert getattr(written, field) == wire
    assert from_protobuf(written) == sent


@pytest.mark.parametrize(
    ("content_type", "fields", "expected"),
    [
        ("application/json", {"binary_data": b'{"k": true}'}, {"k": True}),
        ("text/plain", {"binary_data": "caf\u00e9".encode()}, "caf\u00e9"),
        ("image/png", {"binary_data": b"\x89PNG"}, b"\x89PNG"),
        ("application/json", {"text_data": "{not json"}, b"{not json"),
        ("application/json", {"text_data": ""}, None),
        ("text/plain", {"text_data": ""}, None),
        (None, {"binary_data": b""}, None),
        (None, {}, None),
    ],
)
def test_data_read_is_canonical_for_its_content_type(
    content_type: str | None, fields: dict[str, Any], expected: Any
) -> None:
    attributes = {} if content_type is None else {"datacontenttype": Value(ce_string=content_type)}
    assert from_protobuf(message(attributes=attributes, **fields)).data == expected


# ----------------------------------------------------------------------- invalid messages


def _message_without(field: str) -> cloudevents_pb2.CloudEvent:
    return message(**{field: ""})  # proto3: the empty string is the unset field


@pytest.mark.parametrize(
    ("bad", "attribute", "rule"),
    [
        (_message_without("id"), "id", "required"),
        (_message_without("source"), "source", "required"),
        (_message_without("spec_version"), "specversion", "required"),
        (_message_without("type"), "type", "required"),
        (message(spec_version="0.3"), "specversion", "unsupported-specversion"),
        (message(source="not a reference"), "source", "uri-reference"),
        (message(attributes={"id": Value(ce_string="x")}), "id", "protobuf-field"),
        (
            message(attributes={"specversion": Value(ce_string="1.0")}),
            "specversion",
            "protobuf-field",
        ),
        (message(attributes={"Bad_Name": Value(ce_string="x")}), "Bad_Name", "attribute-name"),
        (message(attributes={"data": Value(ce_string="x")}), "data", "reserved"),
        (message(attributes={"ext": Value()}), "ext", "attribute-value"),
        (message(attributes={"ext": Value(ce_uri="/relative")}), "ext", "uri"),
        (message(attributes={"ext": Value(ce_uri_ref="has space")}), "ext", "uri-reference"),
        (message(attributes={"dataschema": Value(ce_uri_ref="/rel")}), "dataschema", "uri"),
        (message(attributes={"time": Value(ce_boolean=True)}), "time", "type"),
        (message(attributes={"time": Value(ce_string="yesterday")}), "time", "rfc3339"),
        (
            message(attributes={"time": Value(ce_timestamp=Timestamp(seconds=2**40))}),
            "time",
            "timestamp",
        ),
        (
            message(attributes={"time": Value(ce_timestamp=Timestamp(seconds=0, nanos=-1))}),
            "time",
            "timestamp",
        ),
        (message(attributes={"subject": Value(ce_integer=3)}), "subject", "type"),
        (
            message(attributes={"datacontenttype": Value(ce_string="no media type")}),
            "datacontenttype",
            "media-type",
        ),
        (
            message(proto_data=any_pb2.Any(type_url="type.googleapis.com/x.Y", value=b"\x08\x01")),
            "proto_data",
            "unsupported-data",
        ),
    ],
)
def test_invalid_messages_are_refused_naming_the_field(
    bad: cloudevents_pb2.CloudEvent, attribute: str, rule: str
) -> None:
    for given_as in (bad, bad.SerializeToString()):
        with pytest.raises(InvalidEventError) as raised:
            from_protobuf(given_as)
        assert (raised.value.attribute, raised.value.rule) == (attribute, rule)
        assert attribute in str(raised.value)


def test_bytes_that_are_no_message_are_refused() -> None:
    with pytest.raises(InvalidEventError) as raised:
        from_protobuf(b"\x0a\xff")  # field 1, length 255, nothing after
    assert (raised.value.attribute, raised.value.rule) == ("body", "protobuf")


# ------------------------------------------------------------------------------- fuzz

attribute_values = st.one_of(
    st.builds(lambda v: Value(ce_boolean=v), st.booleans()),
    st.builds(lambda v: Value(ce_integer=v), st.integers(-(2**31), 2**31 - 1)),
    st.builds(lambda v: Value(ce_string=v), st.text(max_size=20) | rfc3339_timestamps()),
    st.builds(lambda v: Value(ce_bytes=v), st.binary(max_size=10)),
    st.builds(lambda v: Value(ce_uri=v), st.text(max_size=10) | absolute_uris),
    st.builds(lambda v: Value(ce_uri_ref=v), st.text(max_size=10) | uri_references),
    st.builds(
        lambda s, n: Value(ce_timestamp=Timestamp(seconds=s, nanos=n)),
        st.integers(-(2**62), 2**62),
        st.integers(-(2**31), 2**31 - 1),
    ),
    st.just(Value()),
)
arbitrary_messages = st.builds(
    lambda fields, attributes, data: Message(**fields, attributes=attributes, **data),
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.text(max_size=5),
            "source": st.text(max_size=5) | uri_references,
            "spec_version": st.sampled_from(["1.0", "0.3", ""]),
            "type": st.text(max_size=5),
        },
    ),
    st.dictionaries(
        st.sampled_from(["time", "dataschema", "datacontenttype", "subject", "id", "data"])
        | st.text(max_size=22),
        attribute_values,
        max_size=4,
    ),
    st.one_of(
        st.just({}),
        st.builds(lambda b: {"binary_data": b}, st.binary(max_size=20)),
        st.builds(lambda t: {"text_data": t}, st.text(max_size=20)),
        st.builds(lambda v: {"proto_data": any_pb2.Any(value=v)}, st.binary(max_size=5)),
    ),
)


@BASE
@given(arbitrary_messages)
def test_any_message_gives_an_event_or_an_invalid_event_error(fuzzed: Any) -> None:
    result = outcome(lambda: from_protobuf(fuzzed))
    if isinstance(result, InvalidEventError):
        assert_well_formed(result)
    else:
        # What was accepted is a valid event the binding writes back unchanged.
        assert from_protobuf(to_protobuf(result)) == result


@BASE
@given(st.binary(max_size=64))
def test_any_bytes_give_an_event_or_an_invalid_event_error(raw: bytes) -> None:
    result = outcome(lambda: from_protobuf(raw))
    if isinstance(result, InvalidEventError):
        assert_well_formed(result)


# ---------------------------------------------- the wire form, by the format's field numbers


def _varint(number: int) -> bytes:
    number &= (1 << 64) - 1  # negative int32 travels as ten bytes of two's complement
    out = bytearray()
    while True:
        low = number & 0x7F
        number >>= 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, payload: bytes | str | int | bool) -> bytes:
    if isinstance(payload, bool | int):
        return _varint(number << 3) + _varint(int(payload))
    raw = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


def _read(raw: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, varint or bytes) pairs of a message holding varint and LEN fields only."""
    fields: list[tuple[int, int | bytes]] = []
    at = 0

    def varint() -> int:
        nonlocal at
        value, shift = 0, 0
        while True:
            byte = raw[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while at < len(raw):
        key = varint()
        if key & 7 == 0:
            fields.append((key >> 3, varint()))
        else:
            assert key & 7 == 2, f"unexpected wire type {key & 7}"
            size = varint()
            fields.append((key >> 3, raw[at : at + size]))
            at += size
    return fields


def _entry(name: str, value: bytes) -> bytes:
    return _field(5, _field(1, name) + _field(2, value))


def test_hand_encoded_wire_bytes_are_read() -> None:
    raw = b"".join(
        [
            _field(1, "A234-1234-1234"),
            _field(2, "https://github.com/cloudevents/spec/pull"),
            _field(3, "1.0"),
            _field(4, "com.github.pull_request.opened"),
            _entry("comexampleextension1", _field(1, True)),
            _entry("comexampleextension2", _field(2, -7)),
            _entry("subject", _field(3, "123")),
            _entry("ext", _field(4, b"\x01\x02")),
            _entry("dataschema", _field(5, "https://example.com/schema")),
            _entry("ref", _field(6, "/a/b")),
            _entry("time", _field(7, _field(1, 1522949460) + _field(2, 1000))),
            _entry("datacontenttype", _field(3, "text/xml")),
            _field(7, '<much wow="xml"/>'),
        ]
    )
    assert from_protobuf(raw) == CloudEvent(
        {
            "specversion": "1.0",
            "id": "A234-1234-1234",
            "source": "https://github.com/cloudevents/spec/pull",
            "type": "com.github.pull_request.opened",
            "comexampleextension1": True,
            "comexampleextension2": -7,
            "subject": "123",
            "ext": "AQI=",
            "dataschema": "https://example.com/schema",
            "ref": "/a/b",
            "time": "2018-04-05T17:31:00.000001Z",
            "datacontenttype": "text/xml",
        },
        '<much wow="xml"/>',
    )


def test_written_wire_bytes_carry_the_formats_field_numbers() -> None:
    sent = event(
        b"\x00\x01",
        flag=False,
        count=-3,
        subject="s",
        dataschema="https://example.com/schema",
        time="2018-04-05T17:31:00.000000001Z",
    )
    fields = _read(to_protobuf(sent).SerializeToString())
    plain = [(number, value) for number, value in fields if number != 5]
    assert plain == [
        (1, b"evt-1"),
        (2, b"/sensors/1"),
        (3, b"1.0"),
        (4, b"com.example.reading"),
        (6, b"\x00\x01"),
    ]
    entries = {}
    for number, entry in fields:
        if number == 5:
            assert isinstance(entry, bytes)
            (key_number, key), (value_number, value) = _read(entry)
            assert (key_number, value_number) == (1, 2)
            assert isinstance(key, bytes)
            assert isinstance(value, bytes)
            entries[key.decode()] = _read(value)
    assert entries == {
        "flag": [(1, 0)],
        "count": [(2, (1 << 64) - 3)],
        "subject": [(3, b"s")],
        "dataschema": [(5, b"https://example.com/schema")],
        "time": [(7, _field(1, 1522949460) + _field(2, 1))],
    }
