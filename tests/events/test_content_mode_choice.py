"""Which content mode the writers pick, the canonical attribute text, and lenient reading.

A string that binary mode would percent-encode (HTTP binding 3.1.3.2) makes the event go in
structured mode, because the JavaScript, Go and Java SDKs read header values without decoding
them. Kafka headers carry UTF-8 as it is, so the Kafka binding needs no such choice.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from agentfn.events import (
    CloudEvent,
    DeliveryFormat,
    KafkaRecord,
    attribute_text,
    from_http,
    from_kafka,
    needs_structured,
    to_binary,
    to_http,
    to_kafka,
)
from agentfn.events.http import STRUCTURED_CONTENT_TYPE, header_safe

from tests.events._support import binary_headers, event

#: Each character class section 3.1.3.2 requires percent-encoding, and what it encodes to.
NEEDS_ENCODING = {
    "space": ("orders/42 shipped", "orders/42%20shipped"),
    "percent": ("100% done", "100%25%20done"),
    "quote": ('say "hi"', "say%20%22hi%22"),
    "non-ascii": ("caf\u00e9 \U0001f30e", "caf%C3%A9%20%F0%9F%8C%8E"),
    "control": ("tab\there", "tab%09here"),
}
SAFE = "plain-ascii_~!#$&'()*+,/:;<=>?@[\\]^`{|}"


# -------------------------------------------------------------------- canonical attribute text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-7, "-7"),
        (2**31 - 1, "2147483647"),
        ("as it is", "as it is"),
        ("https://example.com/a?b=c", "https://example.com/a?b=c"),
        (datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC), "2024-05-06T07:08:09Z"),
        (
            datetime(2024, 5, 6, 9, 8, 9, 500000, tzinfo=timezone(timedelta(hours=2))),
            "2024-05-06T07:08:09.500000Z",
        ),
        (b"\x00\x01\xff", "AAH/"),
    ],
    ids=repr,
)
def test_attribute_text_is_the_type_systems_canonical_string(value: object, text: str) -> None:
    assert attribute_text(value) == text


def test_attribute_text_refuses_what_is_no_cloudevents_type() -> None:
    with pytest.raises(TypeError, match="float"):
        attribute_text(1.5)


def test_every_binding_writes_a_boolean_and_an_integer_as_attribute_text() -> None:
    sent = event(flag=True, off=False, count=-7)
    headers, _ = to_binary(sent)
    assert (headers["ce-flag"], headers["ce-off"], headers["ce-count"]) == ("true", "false", "-7")
    written = dict(to_kafka(sent).headers)
    assert (written["ce_flag"], written["ce_off"], written["ce_count"]) == (
        b"true",
        b"false",
        b"-7",
    )


# ------------------------------------------------------------------- the content-mode decision


@pytest.mark.parametrize("name", list(NEEDS_ENCODING))
def test_a_string_binary_mode_would_percent_encode_goes_structured(name: str) -> None:
    value, encoded = NEEDS_ENCODING[name]
    for sent in (event(subject=value), event(comexamplenote=value), event(type=value)):
        assert needs_structured(sent)
        headers, body = to_http(sent)
        assert headers == {"content-type": STRUCTURED_CONTENT_TYPE}
        member = json.loads(body)
        assert value in member.values(), "the JSON body carries the string exactly"
        assert from_http(headers, body) == [sent]
    # Forced binary: percent-encoded as the binding requires, and decoded back.
    headers, body = to_http(event(subject=value), DeliveryFormat.BINARY)
    assert headers["ce-subject"] == encoded
    assert from_http(headers, body)[0].attributes["subject"] == value


def test_an_event_whose_strings_are_all_safe_goes_binary() -> None:
    sent = event(subject=SAFE, flag=True, count=3, datacontenttype="application/json")
    assert header_safe(SAFE)
    assert not needs_structured(sent)
    headers, body = to_http(sent)
    assert headers == to_binary(sent)[0]
    assert headers["ce-subject"] == SAFE
    [parsed] = from_http(headers, body)
    assert parsed.attributes["subject"] == SAFE
    assert (parsed.attributes["flag"], parsed.attributes["count"]) == ("true", "3")


def test_datacontenttype_is_not_looked_at_it_travels_as_content_type() -> None:
    # A space and quotes in a media type are fine in Content-Type, which is never encoded.
    sent = event("x", datacontenttype='text/plain; charset="utf-8"')
    assert not needs_structured(sent)
    headers, _ = to_http(sent)
    assert headers["content-type"] == 'text/plain; charset="utf-8"'


def test_delivery_format_json_is_always_structured() -> None:
    headers, body = to_http(event(subject=SAFE), DeliveryFormat.JSON)
    assert headers == {"content-type": STRUCTURED_CONTENT_TYPE}
    assert json.loads(body)["subject"] == SAFE


def test_delivery_format_values_are_knatives() -> None:
    assert [f.value for f in DeliveryFormat] == ["json", "binary"]


# ------------------------------------------------------------------------------ lenient reading


def test_a_raw_percent_that_starts_no_escape_is_read_as_it_is() -> None:
    # Producers that never encode send `100% done` raw; it is accepted and kept.
    [parsed] = from_http({**binary_headers(), "ce-subject": "100% done"}, b"")
    assert parsed.attributes["subject"] == "100% done"
    as_bytes: dict[str, str | bytes] = {**binary_headers(), "ce-subject": b"100% done"}
    [parsed] = from_http(as_bytes, b"")
    assert parsed.attributes["subject"] == "100% done"


def test_a_raw_space_and_quote_are_read_as_they_are() -> None:
    [parsed] = from_http({**binary_headers(), "ce-subject": 'orders/42 "shipped"'}, b"")
    assert parsed.attributes["subject"] == 'orders/42 "shipped"'


# ----------------------------------------------------------------------------- the Kafka binding


@pytest.mark.parametrize("name", list(NEEDS_ENCODING))
def test_kafka_headers_carry_utf8_as_it_is_never_percent_encoded(name: str) -> None:
    # Kafka binding 3.2.3: header values are UTF-8 strings; no percent-encoding is defined.
    value, _ = NEEDS_ENCODING[name]
    sent = CloudEvent.new("t", "/s", {"k": 1}, subject=value)
    record = to_kafka(sent)
    assert dict(record.headers)["ce_subject"] == value.encode("utf-8")
    assert from_kafka(KafkaRecord.of(record.value, record.headers, record.key)) == sent


def test_kafka_reading_does_not_percent_decode() -> None:
    # What another producer wrote is the value: `%20` in a Kafka header is three characters.
    record = to_kafka(CloudEvent.new("t", "/s", None, subject="a%20b"))
    assert dict(record.headers)["ce_subject"] == b"a%20b"
    assert from_kafka(record).attributes["subject"] == "a%20b"
