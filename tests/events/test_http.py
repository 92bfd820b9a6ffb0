"""The HTTP protocol binding: content modes, header encoding, batches and round trips."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from agentfn.events import (
    CloudEvent,
    ContentMode,
    InvalidEventError,
    content_mode,
    from_http,
    to_batch,
    to_binary,
    to_structured,
)
from agentfn.events.http import decode_data, encode_data

from tests.events._support import BATCH, STRUCTURED, attrs, binary_headers, event

FULL = CloudEvent(
    {
        **attrs(),
        "time": "2018-04-05T03:56:24Z",
        "subject": 'room 4 "north" 100% caf\u00e9 \U0001f30e',
        "dataschema": "https://example.com/schemas/reading.json",
        "datacontenttype": "application/json",
        "comexampleflag": True,
        "comexamplecount": -7,
        "comexamplename": "a b",
    },
    {"temperature": 21.5, "tags": ["a", "b"], "ok": True, "none": None},
)


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize(
    "original",
    [
        FULL,
        event(),
        event(b"\x00\x01\xff", datacontenttype="application/octet-stream"),
        event(b"opaque"),
        event("plain text \u00e9", datacontenttype="text/plain; charset=utf-8"),
        event("<a>\U0001f30e</a>", datacontenttype="application/xml"),
        event("a json string", datacontenttype="application/json"),
        event([1, "two", None], datacontenttype="application/vnd.example+json"),
        event(0, datacontenttype="text/json"),
        event(False, datacontenttype="application/json"),
    ],
    ids=lambda e: repr(e.data)[:30],
)
def test_all_three_http_modes_round_trip(original: CloudEvent) -> None:
    assert from_http(*to_structured(original)) == [original]
    assert from_http(*to_batch([original, original])) == [original, original]
    binary_event = original.with_attributes(
        **{
            k: (str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in original.attributes.items()
        }
    )
    assert from_http(*to_binary(original)) == [binary_event]


def test_structured_and_batch_keep_extension_types() -> None:
    [structured] = from_http(*to_structured(FULL))
    [batched] = from_http(*to_batch([FULL]))
    for parsed in (structured, batched):
        assert parsed.attributes["comexampleflag"] is True
        assert parsed.attributes["comexamplecount"] == -7


def test_binary_mode_turns_extension_values_into_strings() -> None:
    [parsed] = from_http(*to_binary(FULL))
    assert parsed.attributes["comexampleflag"] == "true"
    assert parsed.attributes["comexamplecount"] == "-7"
    assert parsed.data == FULL.data


def test_empty_batch_is_valid_and_holds_no_events() -> None:
    headers, body = to_batch([])
    assert body == b"[]"
    assert from_http(headers, body) == []
    assert from_http({"content-type": BATCH}, b" [ ] ") == []


def test_batch_keeps_member_order() -> None:
    members = [event(i, id=f"e{i}", datacontenttype="application/json") for i in range(5)]
    assert [e.id for e in from_http(*to_batch(members))] == ["e0", "e1", "e2", "e3", "e4"]


# ------------------------------------------------------------------------- what is written


def test_to_binary_writes_ce_headers_content_type_and_body() -> None:
    headers, body = to_binary(event({"a": 1}, datacontenttype="application/json", subject="s"))
    assert headers == {
        "ce-specversion": "1.0",
        "ce-id": "evt-1",
        "ce-source": "/sensors/1",
        "ce-type": "com.example.reading",
        "ce-subject": "s",
        "content-type": "application/json",
    }
    assert json.loads(body) == {"a": 1}


def test_to_binary_without_data_has_no_body_and_no_content_type() -> None:
    headers, body = to_binary(event())
    assert "content-type" not in headers
    assert body == b""


def test_to_binary_marks_json_data_without_content_type_as_json() -> None:
    original = CloudEvent(attrs(), {"k": [1, 2]})
    headers, body = to_binary(original)
    assert headers["content-type"] == "application/json"
    [parsed] = from_http(headers, body)
    assert parsed.data == {"k": [1, 2]}
    assert parsed.datacontenttype == "application/json"


def test_to_binary_bytes_without_content_type_stays_bytes() -> None:
    headers, body = to_binary(event(b"\x89PNG"))
    assert "content-type" not in headers
    assert body == b"\x89PNG"
    assert from_http(headers, body)[0].data == b"\x89PNG"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("a b", "a%20b"),
        ('say "hi"', "say%20%22hi%22"),
        ("100%", "100%25"),
        ("caf\u00e9", "caf%C3%A9"),
        ("\U0001f30e", "%F0%9F%8C%8E"),
        ("tab\there", "tab%09here"),
        ("line\r\nbreak", "line%0D%0Abreak"),
        ("del\x7f", "del%7F"),
        ("plain-ascii_~!#$&'()*+,/:;<=>?@[\\]^`{|}", "plain-ascii_~!#$&'()*+,/:;<=>?@[\\]^`{|}"),
    ],
)
def test_header_values_are_percent_encoded_and_decoded(value: str, encoded: str) -> None:
    headers, body = to_binary(event(subject=value))
    assert headers["ce-subject"] == encoded
    [parsed] = from_http(headers, body)
    assert parsed.attributes["subject"] == value


def test_percent_escapes_decode_case_insensitively() -> None:
    [parsed] = from_http({**binary_headers(), "ce-subject": "caf%c3%a9%2a"}, b"")
    assert parsed.attributes["subject"] == "caf\u00e9*"


def test_raw_utf8_header_value_given_as_bytes_decodes() -> None:
    headers: dict[str, str | bytes] = {
        **binary_headers(),
        "ce-subject": "caf\u00e9 \U0001f30e".encode(),
    }
    [parsed] = from_http(headers, b"")
    assert parsed.attributes["subject"] == "caf\u00e9 \U0001f30e"


def test_raw_utf8_header_value_given_as_latin1_str_decodes() -> None:
    as_server_decodes = "caf\u00e9 \U0001f30e".encode().decode("latin-1")
    [parsed] = from_http({**binary_headers(), "ce-subject": as_server_decodes}, b"")
    assert parsed.attributes["subject"] == "caf\u00e9 \U0001f30e"


def test_headers_may_be_bytes_pairs_as_asgi_gives_them() -> None:
    raw = [(name.encode(), value.encode()) for name, value in binary_headers(subject="s").items()]
    raw.append((b"content-type", b"text/plain"))
    [parsed] = from_http(raw, b"hi")
    assert parsed.attributes["subject"] == "s"
    assert parsed.data == "hi"


def test_content_type_is_not_percent_decoded() -> None:
    original = event("x", datacontenttype="text/plain; token=%41")
    headers, body = to_binary(original)
    assert headers["content-type"] == "text/plain; token=%41"
    assert from_http(headers, body) == [original]


def test_structured_writes_the_json_format() -> None:
    headers, body = to_structured(event({"a": 1}, datacontenttype="application/json"))
    assert headers == {"content-type": "application/cloudevents+json; charset=utf-8"}
    assert json.loads(body) == {**attrs(), "datacontenttype": "application/json", "data": {"a": 1}}


def test_structured_writes_bytes_as_data_base64() -> None:
    _, body = to_structured(event(b"\x00\xff"))
    document = json.loads(body)
    assert document["data_base64"] == base64.b64encode(b"\x00\xff").decode()
    assert "data" not in document


def test_structured_without_data_writes_neither_data_member() -> None:
    _, body = to_structured(event())
    assert json.loads(body) == attrs()


def test_batch_writes_a_json_array_with_batch_content_type() -> None:
    headers, body = to_batch([event(), event(id="two")])
    assert headers == {"content-type": "application/cloudevents-batch+json; charset=utf-8"}
    assert [m["id"] for m in json.loads(body)] == ["evt-1", "two"]


# ------------------------------------------------------------------------------- what is read


def test_structured_data_base64_decodes_to_bytes() -> None:
    body = json.dumps({**attrs(), "data_base64": "AP8="}).encode()
    assert from_http({"content-type": STRUCTURED}, body)[0].data == b"\x00\xff"


def test_structured_ignores_ce_headers_beside_it() -> None:
    headers = {"content-type": STRUCTURED, "ce-id": "from-header", "ce-subject": "hdr"}
    [parsed] = from_http(headers, json.dumps(attrs()).encode())
    assert parsed.id == "evt-1"
    assert "subject" not in parsed.attributes


def test_binary_ignores_non_ce_headers() -> None:
    headers = {**binary_headers(), "user-agent": "curl", "x-ce-id": "no", "traceparent": "t"}
    [parsed] = from_http(headers, b"")
    assert dict(parsed.attributes) == attrs()


def test_binary_json_body_that_does_not_parse_stays_bytes() -> None:
    headers = {**binary_headers(), "content-type": "application/json"}
    assert from_http(headers, b"{not json")[0].data == b"{not json"


def test_binary_json_body_nested_too_deep_stays_bytes() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    headers = {**binary_headers(), "content-type": "application/json"}
    assert from_http(headers, body)[0].data == body


def test_binary_text_body_that_is_not_utf8_stays_bytes() -> None:
    headers = {**binary_headers(), "content-type": "text/plain"}
    assert from_http(headers, b"\xff\xfe")[0].data == b"\xff\xfe"


def test_binary_empty_body_is_no_data() -> None:
    headers = {**binary_headers(), "content-type": "application/json"}
    [parsed] = from_http(headers, b"")
    assert parsed.data is None
    assert parsed.datacontenttype == "application/json"


@pytest.mark.parametrize(
    ("headers", "mode"),
    [
        ({"content-type": "application/cloudevents+json"}, ContentMode.STRUCTURED),
        ({"Content-Type": "Application/CloudEvents+JSON; charset=utf-8"}, ContentMode.STRUCTURED),
        ({"content-type": "application/cloudevents-batch+json"}, ContentMode.BATCH),
        ({"content-type": "application/cloudevents+json", "ce-id": "x"}, ContentMode.STRUCTURED),
        ({"ce-id": "x"}, ContentMode.BINARY),
        ({"CE-ID": "x", "content-type": "application/json"}, ContentMode.BINARY),
        ({"content-type": "application/json"}, None),
        ({}, None),
    ],
)
def test_content_mode_is_read_from_headers(
    headers: dict[str, str], mode: ContentMode | None
) -> None:
    assert content_mode(headers) is mode


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"", "application/json", None),
        (b'{"a":1}', "application/json; charset=utf-8", {"a": 1}),
        (b'"s"', "text/json", "s"),
        (b"[1]", "application/ld+json", [1]),
        (b"caf\xc3\xa9", "text/plain", "caf\u00e9"),
        (b"<x/>", "application/xml", "<x/>"),
        (b"<svg/>", "image/svg+xml", "<svg/>"),
        (b'{"a":1}', None, b'{"a":1}'),
        (b"\x89PNG", "image/png", b"\x89PNG"),
    ],
)
def test_decode_data_is_canonical_for_the_media_type(
    body: bytes, content_type: str | None, expected: Any
) -> None:
    assert decode_data(body, content_type) == expected
    assert type(decode_data(body, content_type)) is type(expected)


@pytest.mark.parametrize(
    ("data", "content_type", "expected"),
    [
        (None, "application/json", b""),
        (b"raw", "application/json", b"raw"),
        ("text", "text/plain", b"text"),
        ("text", "application/json", b'"text"'),
        ({"a": "\u00e9"}, "application/json", '{"a":"\u00e9"}'.encode()),
    ],
)
def test_encode_data_writes_the_body(data: Any, content_type: str, expected: bytes) -> None:
    assert encode_data(data, content_type) == expected


def test_batch_error_is_not_raised_for_valid_members_before_it() -> None:
    body = json.dumps([attrs(), attrs(id="")]).encode()
    with pytest.raises(InvalidEventError) as caught:
        from_http({"content-type": BATCH}, body)
    assert caught.value.index == 1
    assert caught.value.as_dict()["index"] == 1
    assert str(caught.value).startswith("batch[1].id:")


def test_structured_null_data_beside_data_base64_is_not_both() -> None:
    body = json.dumps(
        {
            "specversion": "1.0",
            "id": "1",
            "source": "/s",
            "type": "t",
            "data": None,
            "data_base64": "aGk=",
        }
    ).encode()
    (event,) = from_http({"content-type": "application/cloudevents+json"}, body)
    assert event.data == b"hi"
