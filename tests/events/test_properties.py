"""Property-based tests: serialize-then-parse is the identity for valid canonical events, and
nothing but InvalidEventError ever comes out of parsing arbitrary input."""

from __future__ import annotations

import calendar
import json
import string
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
from agentfn.events import (
    CloudEvent,
    InvalidEventError,
    KafkaRecord,
    from_http,
    from_kafka,
    is_json_media_type,
    is_text_media_type,
    to_batch,
    to_binary,
    to_kafka,
    to_kafka_structured,
    to_structured,
)
from agentfn.events._validation import CONTEXT_ATTRIBUTES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BASE = settings(
    deadline=None,
    database=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------------------ strategies

_ALPHA = string.ascii_letters
_DIGITS = string.digits
_UNRESERVED = _ALPHA + _DIGITS + "-._~"
_SUB_DELIMS = "!$&'()*+,;="
_PCHAR = st.one_of(
    st.sampled_from(_UNRESERVED + _SUB_DELIMS + ":@"),
    st.builds("%{:02X}".format, st.integers(0, 255)),
)
_PCHAR_NO_COLON = st.one_of(
    st.sampled_from(_UNRESERVED + _SUB_DELIMS + "@"),
    st.builds("%{:02x}".format, st.integers(0, 255)),
)


def _chars(alphabet: st.SearchStrategy[str], max_size: int = 12) -> st.SearchStrategy[str]:
    return st.lists(alphabet, max_size=max_size).map("".join)


_QUERY_OR_FRAGMENT = st.lists(st.one_of(_PCHAR, st.sampled_from("/?")), max_size=8).map("".join)
_SEGMENTS = st.lists(_chars(_PCHAR), max_size=4).map(lambda parts: "".join("/" + p for p in parts))
_SCHEME = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(_ALPHA),
    _chars(st.sampled_from(_ALPHA + _DIGITS + "+-."), 6),
)


def _with_suffix(base: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda b, q, f: b + ("" if q is None else "?" + q) + ("" if f is None else "#" + f),
        base,
        st.none() | _QUERY_OR_FRAGMENT,
        st.none() | _QUERY_OR_FRAGMENT,
    )


absolute_uris = _with_suffix(
    st.one_of(
        st.builds(lambda s, h, p: f"{s}://{h}{p}", _SCHEME, _chars(_PCHAR_NO_COLON), _SEGMENTS),
        st.builds(lambda s, p: f"{s}:{p}", _SCHEME, _chars(_PCHAR, 20)),
    )
)
relative_references = _with_suffix(
    st.one_of(
        _SEGMENTS,
        st.builds(
            lambda first, rest: first + rest, _chars(_PCHAR_NO_COLON).filter(bool), _SEGMENTS
        ),
        st.builds(lambda h, p: f"//{h}{p}", _chars(_PCHAR_NO_COLON), _SEGMENTS),
    )
).filter(bool)
uri_references = st.one_of(
    absolute_uris,
    relative_references,
    st.sampled_from(
        [
            "https://github.com/cloudevents",
            "mailto:cncf-wg-serverless@lists.cncf.io",
            "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            "/sensors/tn-1234567/alerts",
            "1-555-123-4567",
        ]
    ),
)


@st.composite
def rfc3339_timestamps(draw: st.DrawFn) -> str:
    year = draw(st.integers(0, 9999))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, calendar.monthrange(year, month)[1]))
    hour, minute = draw(st.integers(0, 23)), draw(st.integers(0, 59))
    second = draw(st.integers(0, 60))
    fraction = draw(st.none() | st.text(_DIGITS, min_size=1, max_size=9))
    zone = draw(
        st.sampled_from(["Z", "z"])
        | st.builds(
            lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
            st.sampled_from("+-"),
            st.integers(0, 23),
            st.integers(0, 59),
        )
    )
    separator = draw(st.sampled_from("Tt"))
    frac = "" if fraction is None else "." + fraction
    return (
        f"{year:04d}-{month:02d}-{day:02d}{separator}{hour:02d}:{minute:02d}:{second:02d}"
        f"{frac}{zone}"
    )


_TOKEN_CHARS = "!#$%&'*+-.^_`|~" + _DIGITS + _ALPHA
tokens = st.text(_TOKEN_CHARS, min_size=1, max_size=10)
_QDTEXT = "\t " + "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"\\')
quoted_strings = st.lists(
    st.one_of(st.sampled_from(_QDTEXT), st.builds(lambda c: "\\" + c, st.sampled_from(_QDTEXT))),
    max_size=10,
).map(lambda parts: '"' + "".join(parts) + '"')
parameters = st.lists(
    st.builds(
        lambda ows1, name, value, ows2: f"{ows1};{ows2}{name}={value}",
        st.sampled_from(["", " ", "\t"]),
        tokens,
        tokens | quoted_strings | st.sampled_from(["%41", "50%25", "%zz", '"%41"']),
        st.sampled_from(["", " "]),
    ),
    max_size=3,
).map("".join)


def _media(types: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda media, params: media + params, types, parameters)


json_media_types = _media(
    st.sampled_from(["application/json", "text/json", "Application/JSON"])
    | st.builds(lambda t, s: f"{t}/{s}+json", tokens, tokens)
)
text_media_types = _media(
    st.builds("text/{}".format, tokens).filter(lambda m: not is_json_media_type(m))
    | st.builds(lambda t, s: f"{t}/{s}+xml", tokens, tokens)
    | st.sampled_from(["application/xml", "text/plain", "text/html"])
)
opaque_media_types = _media(
    st.sampled_from(["application/octet-stream", "image/png", "application/x-protobuf"])
    | st.builds(lambda t, s: f"{t}/{s}", tokens, tokens)
).filter(lambda m: not is_json_media_type(m) and not is_text_media_type(m))

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def content_and_data(draw: st.DrawFn) -> tuple[str | None, Any]:
    """A datacontenttype and data canonical for it (see agentfn.events._event)."""
    kind = draw(st.sampled_from(["json", "text", "opaque", "absent"]))
    if kind == "json":
        return draw(json_media_types), draw(json_values)
    if kind == "text":
        return draw(text_media_types), draw(st.none() | st.text(min_size=1, max_size=30))
    if kind == "opaque":
        return draw(opaque_media_types), draw(st.none() | st.binary(min_size=1, max_size=30))
    return None, draw(st.none() | st.binary(min_size=1, max_size=30))


extension_names = st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True).filter(
    lambda n: n not in CONTEXT_ATTRIBUTES and n != "data"
)
string_extension_values = st.text(max_size=20)
typed_extension_values: st.SearchStrategy[str | bool | int] = (
    st.text(max_size=20) | st.booleans() | st.integers(-(2**31), 2**31 - 1)
)


@st.composite
def valid_events(draw: st.DrawFn, *, typed_extensions: bool) -> CloudEvent:
    attributes: dict[str, object] = {
        "specversion": "1.0",
        "id": draw(st.text(min_size=1, max_size=30)),
        "source": draw(uri_references),
        "type": draw(st.text(min_size=1, max_size=30)),
    }
    optional = {
        "subject": st.text(min_size=1, max_size=30),
        "time": rfc3339_timestamps(),
        "dataschema": absolute_uris,
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            attributes[name] = draw(strategy)
    values = typed_extension_values if typed_extensions else string_extension_values
    attributes.update(draw(st.dictionaries(extension_names, values, max_size=4)))
    content_type, data = draw(content_and_data())
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    return CloudEvent(attributes, data)


binary_events = valid_events(typed_extensions=False)
typed_events = valid_events(typed_extensions=True)

# ----------------------------------------------------------------------- identity properties


@BASE
@given(binary_events)
def test_binary_mode_round_trip_is_identity(event: CloudEvent) -> None:
    assert from_http(*to_binary(event)) == [event]


@BASE
@given(binary_events)
def test_binary_mode_round_trip_survives_header_case_and_bytes(event: CloudEvent) -> None:
    headers, body = to_binary(event)
    as_asgi = [(name.upper().encode("latin-1"), value.encode()) for name, value in headers.items()]
    assert from_http(as_asgi, body) == [event]


@BASE
@given(typed_events)
def test_structured_mode_round_trip_is_identity(event: CloudEvent) -> None:
    assert from_http(*to_structured(event)) == [event]


@settings(BASE, max_examples=50)
@given(st.lists(typed_events, max_size=3))
def test_batch_mode_round_trip_is_identity(events: list[CloudEvent]) -> None:
    assert from_http(*to_batch(events)) == events


@BASE
@given(binary_events)
def test_kafka_binary_round_trip_is_identity(event: CloudEvent) -> None:
    record = to_kafka(event)
    assert from_kafka(record) == event
    key = event.attributes.get("partitionkey")
    assert record.key == (None if key is None else str(key).encode())


@BASE
@given(typed_events)
def test_kafka_structured_round_trip_is_identity(event: CloudEvent) -> None:
    assert from_kafka(to_kafka_structured(event)) == event


@BASE
@given(typed_events)
def test_binary_modes_stringify_typed_extensions(event: CloudEvent) -> None:
    stringified = CloudEvent(
        {
            name: (str(value).lower() if isinstance(value, bool) else str(value))
            for name, value in event.attributes.items()
        },
        event.data,
    )
    assert from_http(*to_binary(event)) == [stringified]
    assert from_kafka(to_kafka(event)) == stringified


@BASE
@given(typed_events)
def test_structured_json_is_valid_against_the_cloudevents_schema(
    shared_spec: Path, event: CloudEvent
) -> None:
    schema = json.loads((shared_spec / "cloudevents" / "cloudevents.json").read_text())
    jsonschema.Draft7Validator(schema).validate(json.loads(to_structured(event)[1]))


@BASE
@given(binary_events)
def test_binary_headers_are_safe_printable_ascii(event: CloudEvent) -> None:
    headers, _ = to_binary(event)
    for name, value in headers.items():
        assert name == name.lower()
        assert all(0x20 <= ord(char) < 0x7F or char == "\t" for char in value), (name, value)
        if name.startswith("ce-"):
            assert not set(value) & {" ", '"', "\t"}


@BASE
@given(
    st.none() | json_media_types | text_media_types | opaque_media_types,
    st.one_of(
        st.binary(max_size=64),
        st.sampled_from([b"[" * 5000 + b"]" * 5000, b"\xff\xfe", b"{", b"NaN", b"1e999"]),
    ),
)
def test_binary_payload_is_never_judged(content_type: str | None, body: bytes) -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}
    if content_type is not None:
        headers["content-type"] = content_type
    [received] = from_http(headers, body)
    kafka_headers = tuple(
        (n.replace("-", "_", 1) if n.startswith("ce-") else n, v.encode())
        for n, v in headers.items()
    )
    consumed = from_kafka(KafkaRecord(value=body, headers=kafka_headers))
    for event in (received, consumed):
        assert event.datacontenttype == content_type
        if not body:
            assert event.data is None
        elif isinstance(event.data, bytes):
            assert event.data == body
        else:
            assert is_json_media_type(content_type) or is_text_media_type(content_type)


# ------------------------------------------------------------------------------ fuzz inputs

T = TypeVar("T")


def outcome(parse: Callable[[], T]) -> T | InvalidEventError:
    """What parsing gives: its result or the InvalidEventError it raised; anything else escapes
    (and fails the test)."""
    try:
        return parse()
    except InvalidEventError as error:
        return error


def assert_well_formed(error: InvalidEventError) -> None:
    assert isinstance(error.attribute, str)
    assert isinstance(error.rule, str)
    assert error.rule
    assert error.as_dict()["rule"] == error.rule


_CE_NAMES = [
    "ce-" + n
    for n in (
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "subject",
        "dataschema",
        "datacontenttype",
        "data",
        "x",
        "",
    )
]
_CONTENT_TYPES = [
    "application/cloudevents+json",
    "application/cloudevents+json; charset=utf-8",
    "application/cloudevents-batch+json",
    "application/cloudevents+avro",
    "application/cloudevents-batch+xml",
    "application/cloudevents",
    "application/json",
    "text/plain",
    "application/octet-stream",
    "",
]
header_names = st.one_of(
    st.sampled_from([*_CE_NAMES, "content-type", "Content-Type", "CE-ID"]),
    st.builds(lambda n: "ce-" + n, st.text(max_size=22)),
    st.text(max_size=12),
)
header_values: st.SearchStrategy[str | bytes] = st.one_of(
    st.sampled_from(["1.0", "0.3", "/s", "2018-04-05T03:56:24Z", "%FF", "%", "%2", "%C3%A9"]),
    st.sampled_from(_CONTENT_TYPES),
    st.text(max_size=20),
    st.binary(max_size=20),
)
json_members = st.dictionaries(
    st.sampled_from(
        [
            "specversion",
            "id",
            "source",
            "type",
            "time",
            "subject",
            "dataschema",
            "datacontenttype",
            "data",
            "data_base64",
            "ext",
            "X",
        ]
    )
    | st.text(max_size=8),
    json_values | st.sampled_from(["1.0", "/s", "eA==", "2018-04-05T03:56:24Z"]),
    max_size=8,
)
bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    json_members.map(lambda m: json.dumps(m).encode()),
    st.lists(json_members, max_size=3).map(lambda m: json.dumps(m).encode()),
    st.sampled_from([10, 999, 1000, 5000]).map(lambda n: b"[" * n + b"]" * n),
    st.sampled_from([10, 5000]).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)


@st.composite
def http_messages(draw: st.DrawFn) -> tuple[dict[str, str | bytes], bytes]:
    headers = draw(st.dictionaries(header_names, header_values, max_size=8))
    if draw(st.booleans()):
        headers["content-type"] = draw(st.sampled_from(_CONTENT_TYPES) | st.text(max_size=30))
    if draw(st.booleans()):
        headers.update({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"})
    return headers, draw(bodies)


@settings(BASE, max_examples=300)
@given(http_messages())
def test_from_http_returns_events_or_raises_invalid_event_only(
    message: tuple[dict[str, str | bytes], bytes],
) -> None:
    result = outcome(lambda: from_http(*message))
    if isinstance(result, InvalidEventError):
        assert_well_formed(result)
    else:
        assert all(isinstance(e, CloudEvent) for e in result)


kafka_header_names = st.one_of(
    st.sampled_from(
        [
            "ce_specversion",
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_time",
            "CE_ID",
            "ce_",
            "ce_data",
            "content-type",
            "Content-Type",
        ]
    ),
    st.builds(lambda n: "ce_" + n, st.text(max_size=22)),
    st.text(max_size=12),
)
kafka_header_values = st.one_of(
    st.sampled_from([b"1.0", b"0.3", b"/s", b"\xff", *(c.encode() for c in _CONTENT_TYPES)]),
    st.binary(max_size=20),
    st.text(max_size=20).map(str.encode),
)


@st.composite
def kafka_records(draw: st.DrawFn) -> KafkaRecord:
    headers = draw(st.lists(st.tuples(kafka_header_names, kafka_header_values), max_size=8))
    if draw(st.booleans()):
        headers += [
            (n, v)
            for n, v in (
                ("ce_specversion", b"1.0"),
                ("ce_id", b"1"),
                ("ce_source", b"/s"),
                ("ce_type", b"t"),
            )
        ]
    if draw(st.booleans()):
        headers.append(("content-type", draw(st.sampled_from(_CONTENT_TYPES)).encode()))
    return KafkaRecord(
        value=draw(st.none() | bodies),
        headers=tuple(draw(st.permutations(headers))),
        key=draw(st.none() | st.binary(max_size=8)),
    )


@settings(BASE, max_examples=300)
@given(kafka_records())
def test_from_kafka_returns_an_event_or_raises_invalid_event_only(record: KafkaRecord) -> None:
    result = outcome(lambda: from_kafka(record))
    if isinstance(result, InvalidEventError):
        assert_well_formed(result)
    else:
        assert isinstance(result, CloudEvent)


@BASE
@given(st.binary(max_size=128), st.binary(max_size=128))
def test_random_bytes_in_any_content_mode_raise_invalid_event_only(
    header_bytes: bytes, body: bytes
) -> None:
    parts = header_bytes.split(b"\n")[:4]
    results: list[list[CloudEvent] | InvalidEventError] = []
    for content_type in _CONTENT_TYPES:
        message = [(b"content-type", content_type.encode())]
        message += [(b"ce-" + part[:20], part) for part in parts]
        results.append(outcome(partial(from_http, message, body)))
        record = KafkaRecord(
            value=body,
            headers=(
                ("content-type", content_type.encode()),
                *(("ce_" + part[:20].decode("latin-1"), part) for part in parts),
            ),
        )
        results.append(outcome(partial(lambda r: [from_kafka(r)], record)))
    results.append(outcome(partial(from_http, [(b"content-type", header_bytes)], body)))
    for result in results:
        if isinstance(result, InvalidEventError):
            assert_well_formed(result)
        else:
            assert all(isinstance(e, CloudEvent) for e in result)
