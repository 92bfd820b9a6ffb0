"""Every CloudEvents 1.0 rule the events package enforces: a failing example each, and the
accepted forms at the edges of each rule."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone

import pytest
from agentfn.events import (
    CloudEvent,
    InvalidEventError,
    KafkaRecord,
    UnsupportedContentModeError,
    from_http,
    from_kafka,
    validate_attributes,
)

from tests.events._support import (
    BATCH,
    STRUCTURED,
    attrs,
    binary_headers,
    kafka_binary_headers,
    kafka_record,
    structured_body,
)

Thunk = Callable[[], object]


def ctor(attributes: dict[str, object]) -> Thunk:
    return lambda: CloudEvent(attributes)


def structured(document: object) -> Thunk:
    return lambda: from_http({"content-type": STRUCTURED}, structured_body(document))


def structured_raw(body: bytes, content_type: str = STRUCTURED) -> Thunk:
    return lambda: from_http({"content-type": content_type}, body)


def batch(documents: object) -> Thunk:
    return lambda: from_http({"content-type": BATCH}, structured_body(documents))


def binary(headers: Mapping[str, str | bytes], body: bytes = b"") -> Thunk:
    return lambda: from_http(headers, body)


def kafka(record: KafkaRecord) -> Thunk:
    return lambda: from_kafka(record)


def case(
    thunk: Thunk,
    attribute: str,
    rule: str,
    case_id: str,
    *,
    index: int | None = None,
    error: type[InvalidEventError] = InvalidEventError,
) -> object:
    return pytest.param(thunk, attribute, rule, index, error, id=case_id)


REQUIRED = ("id", "source", "specversion", "type")

BAD_TIMES = {
    "month-13": "2018-13-05T03:56:24Z",
    "month-00": "2018-00-05T03:56:24Z",
    "day-32": "2018-01-32T03:56:24Z",
    "day-00": "2018-01-00T03:56:24Z",
    "april-31": "2018-04-31T03:56:24Z",
    "feb-30": "2020-02-30T03:56:24Z",
    "feb-29-non-leap-year": "2019-02-29T03:56:24Z",
    "feb-29-1900": "1900-02-29T03:56:24Z",
    "hour-24": "2018-04-05T24:00:00Z",
    "minute-60": "2018-04-05T03:60:24Z",
    "second-61": "2018-04-05T03:56:61Z",
    "no-timezone": "2018-04-05T03:56:24",
    "offset-hour-24": "2018-04-05T03:56:24+24:00",
    "offset-minute-60": "2018-04-05T03:56:24+05:60",
    "offset-without-colon": "2018-04-05T03:56:24+0530",
    "offset-hours-only": "2018-04-05T03:56:24+05",
    "date-only": "2018-04-05",
    "space-separator": "2018-04-05 03:56:24Z",
    "no-seconds": "2018-04-05T03:56Z",
    "empty-fraction": "2018-04-05T03:56:24.Z",
    "two-digit-year": "18-04-05T03:56:24Z",
    "fullwidth-digits": "\uff12\uff10\uff11\uff18-04-05T03:56:24Z",
    "arabic-indic-digits": "2018-04-05T03:56:2\u0664Z",
    "trailing-garbage": "2018-04-05T03:56:24Zjunk",
    "leading-space": " 2018-04-05T03:56:24Z",
    "not-a-timestamp": "yesterday",
}

BAD_SOURCES = {
    "space": "not a uri",
    "two-fragments": "/a#b#c",
    "bad-percent-escape": "/sale/50%off",
    "truncated-percent-escape": "/a%4",
    "colon-in-first-relative-segment": "1:/x",
    "angle-brackets": "/<tag>",
    "backslash": "C:\\path\\file",
    "non-ascii": "/caf\u00e9",
    "newline": "/a\nb",
}

BAD_DATASCHEMAS = {
    "relative-path": "/schemas/reading.json",
    "bare-name": "reading.json",
    "space": "https://example.com/a schema",
    "scheme-starts-with-digit": "1http://example.com",
    "two-fragments": "https://example.com/s#a#b",
}

BAD_MEDIA_TYPES = {
    "no-slash": "json",
    "no-subtype": "application/",
    "no-type": "/json",
    "space-in-type": "text /plain",
    "parameter-without-value": "text/plain; charset",
    "parameter-with-empty-value": "text/plain; charset=",
    "unterminated-quoted-value": 'text/plain; a="x',
    "non-ascii-quoted-value": 'text/plain; a="caf\u00e9"',
    "control-character-in-quoted-value": 'text/plain; a="x\x00y"',
    "two-slashes": "text/plain/x",
    "non-ascii-token": "text/pl\u00e4in",
}

BAD_NAMES = {
    "21-characters": "a" * 21,
    "upper-case": "Comexample",
    "underscore": "my_ext",
    "hyphen": "my-ext",
    "dot": "my.ext",
    "non-ascii-letter": "caf\u00e9",
    "empty": "",
}

FAILING_EXAMPLES = [
    # required attributes, missing / empty / not a string, in each form an event arrives in
    *(case(ctor(attrs(**{n: ...})), n, "required", f"ctor-missing-{n}") for n in REQUIRED),
    *(case(structured(attrs(**{n: ...})), n, "required", f"json-missing-{n}") for n in REQUIRED),
    *(case(structured(attrs(**{n: None})), n, "required", f"json-null-{n}") for n in REQUIRED),
    *(
        case(binary(binary_headers(**{n: ...})), n, "required", f"binary-missing-{n}")
        for n in REQUIRED
    ),
    *(
        case(
            kafka(kafka_record(b"", kafka_binary_headers(**{n: ...}))),
            n,
            "required",
            f"kafka-missing-{n}",
        )
        for n in ("id", "source", "type")
    ),
    *(case(ctor(attrs(**{n: ""})), n, "non-empty", f"ctor-empty-{n}") for n in REQUIRED),
    *(case(structured(attrs(**{n: ""})), n, "non-empty", f"json-empty-{n}") for n in REQUIRED),
    *(
        case(binary(binary_headers(**{n: ""})), n, "non-empty", f"binary-empty-{n}")
        for n in REQUIRED
    ),
    *(case(structured(attrs(**{n: 5})), n, "type", f"json-integer-{n}") for n in REQUIRED),
    *(case(structured(attrs(**{n: True})), n, "type", f"json-boolean-{n}") for n in REQUIRED),
    case(structured(attrs(id=["a"])), "id", "type", "json-list-id"),
    case(structured(attrs(specversion=1.0)), "specversion", "type", "json-number-specversion"),
    # specversion: only 1.0
    case(ctor(attrs(specversion="0.3")), "specversion", "unsupported-specversion", "ctor-0.3"),
    case(
        structured(attrs(specversion="0.3")), "specversion", "unsupported-specversion", "json-0.3"
    ),
    case(
        binary(binary_headers(specversion="0.3")),
        "specversion",
        "unsupported-specversion",
        "binary-0.3",
    ),
    case(
        kafka(kafka_record(b"", kafka_binary_headers(specversion="0.3"))),
        "specversion",
        "unsupported-specversion",
        "kafka-0.3",
    ),
    case(ctor(attrs(specversion="1")), "specversion", "unsupported-specversion", "ctor-1"),
    case(ctor(attrs(specversion="1.0.0")), "specversion", "unsupported-specversion", "ctor-1.0.0"),
    case(ctor(attrs(specversion="2.0")), "specversion", "unsupported-specversion", "ctor-2.0"),
    # source: URI-reference
    *(
        case(ctor(attrs(source=v)), "source", "uri-reference", f"source-{k}")
        for k, v in BAD_SOURCES.items()
    ),
    case(structured(attrs(source="not a uri")), "source", "uri-reference", "json-source-space"),
    case(
        binary(binary_headers(source="not%20a%20uri")),
        "source",
        "uri-reference",
        "binary-source-space",
    ),
    # time: RFC 3339
    *(case(ctor(attrs(time=v)), "time", "rfc3339", f"time-{k}") for k, v in BAD_TIMES.items()),
    case(structured(attrs(time="2020-02-30T00:00:00Z")), "time", "rfc3339", "json-time-feb-30"),
    case(
        binary(binary_headers(time="2018-04-05T24:00:00Z")),
        "time",
        "rfc3339",
        "binary-time-hour-24",
    ),
    case(
        kafka(kafka_record(b"", kafka_binary_headers(time="2018-04-05T03:56:24"))),
        "time",
        "rfc3339",
        "kafka-time-no-timezone",
    ),
    case(structured(attrs(time=1522900584)), "time", "type", "json-time-integer"),
    case(ctor(attrs(time="")), "time", "non-empty", "time-empty"),
    # datacontenttype: RFC 2046 media type
    *(
        case(ctor(attrs(datacontenttype=v)), "datacontenttype", "media-type", f"media-{k}")
        for k, v in BAD_MEDIA_TYPES.items()
    ),
    case(
        structured(attrs(datacontenttype="json")),
        "datacontenttype",
        "media-type",
        "json-media-no-slash",
    ),
    case(
        binary({**binary_headers(), "content-type": "json"}),
        "datacontenttype",
        "media-type",
        "binary-content-type-no-slash",
    ),
    case(
        binary({**binary_headers(), "content-type": ""}),
        "datacontenttype",
        "non-empty",
        "binary-content-type-empty",
    ),
    case(
        kafka(kafka_record(b"x", {**kafka_binary_headers(), "content-type": "json"})),
        "datacontenttype",
        "media-type",
        "kafka-content-type-no-slash",
    ),
    case(ctor(attrs(datacontenttype="")), "datacontenttype", "non-empty", "media-empty"),
    # dataschema: non-empty absolute URI
    *(
        case(ctor(attrs(dataschema=v)), "dataschema", "uri", f"dataschema-{k}")
        for k, v in BAD_DATASCHEMAS.items()
    ),
    case(ctor(attrs(dataschema="")), "dataschema", "non-empty", "dataschema-empty"),
    case(structured(attrs(dataschema="")), "dataschema", "non-empty", "json-dataschema-empty"),
    case(structured(attrs(dataschema=7)), "dataschema", "type", "json-dataschema-integer"),
    case(
        binary(binary_headers(dataschema="relative.json")),
        "dataschema",
        "uri",
        "binary-dataschema-relative",
    ),
    # subject: non-empty when present
    case(ctor(attrs(subject="")), "subject", "non-empty", "subject-empty"),
    case(structured(attrs(subject="")), "subject", "non-empty", "json-subject-empty"),
    case(binary(binary_headers(subject="")), "subject", "non-empty", "binary-subject-empty"),
    case(structured(attrs(subject=42)), "subject", "type", "json-subject-integer"),
    # attribute names: [a-z0-9]{1,20}
    *(
        case(ctor(attrs(**{v: "x"})), v, "attribute-name", f"ctor-name-{k}")
        for k, v in BAD_NAMES.items()
    ),
    *(
        case(structured(attrs(**{v: "x"})), v, "attribute-name", f"json-name-{k}")
        for k, v in BAD_NAMES.items()
    ),
    case(structured(attrs(ID="x")), "ID", "attribute-name", "json-name-upper-case-ID"),
    case(
        binary({**binary_headers(), "ce-" + "a" * 21: "x"}),
        "a" * 21,
        "attribute-name",
        "binary-name-21-characters",
    ),
    case(
        binary({**binary_headers(), "ce-my_ext": "x"}),
        "my_ext",
        "attribute-name",
        "binary-name-underscore",
    ),
    case(binary({**binary_headers(), "ce-": "x"}), "", "attribute-name", "binary-name-empty"),
    case(
        kafka(kafka_record(b"", {**kafka_binary_headers(), "ce_my_ext": "x"})),
        "my_ext",
        "attribute-name",
        "kafka-name-underscore",
    ),
    case(
        ctor(attrs(data_base64="eA==")),
        "data_base64",
        "attribute-name",
        "ctor-data-base64-is-no-attribute",
    ),
    # extension values: CloudEvents types only
    case(structured(attrs(comexample=1.5)), "comexample", "extension-type", "ext-float"),
    case(structured(attrs(comexample=[1, 2])), "comexample", "extension-type", "ext-list"),
    case(structured(attrs(comexample={"a": 1})), "comexample", "extension-type", "ext-object"),
    case(ctor(attrs(comexample=b"raw")), "comexample", "extension-type", "ext-bytes"),
    case(ctor(attrs(comexample=1.0)), "comexample", "extension-type", "ext-float-integral"),
    case(ctor(attrs(comexample=object())), "comexample", "extension-type", "ext-object-instance"),
    case(structured(attrs(comexample=2**31)), "comexample", "integer-range", "ext-int-2**31"),
    case(
        structured(attrs(comexample=-(2**31) - 1)),
        "comexample",
        "integer-range",
        "ext-int-below-int32",
    ),
    case(ctor(attrs(comexample=10**30)), "comexample", "integer-range", "ext-int-huge"),
    # data is no attribute
    case(ctor(attrs(data="x")), "data", "reserved", "ctor-data-attribute"),
    # data and data_base64
    case(
        structured({**attrs(), "data": "x", "data_base64": "eA=="}),
        "data",
        "data-exclusive",
        "json-data-and-data-base64",
    ),
    case(
        structured({**attrs(), "data_base64": "not base64!"}),
        "data_base64",
        "base64",
        "json-data-base64-invalid-characters",
    ),
    case(
        structured({**attrs(), "data_base64": "eA="}),
        "data_base64",
        "base64",
        "json-data-base64-bad-padding",
    ),
    case(
        structured({**attrs(), "data_base64": "e\u00e9=="}),
        "data_base64",
        "base64",
        "json-data-base64-non-ascii",
    ),
    case(
        structured({**attrs(), "data_base64": "e A=="}),
        "data_base64",
        "base64",
        "json-data-base64-embedded-space",
    ),
    case(
        structured({**attrs(), "data_base64": "eA==\n"}),
        "data_base64",
        "base64",
        "json-data-base64-trailing-newline",
    ),
    case(
        structured({**attrs(), "data_base64": "-_8="}),
        "data_base64",
        "base64",
        "json-data-base64-url-safe-alphabet",
    ),
    case(
        structured({**attrs(), "data_base64": 5}), "data_base64", "type", "json-data-base64-integer"
    ),
    case(
        structured({**attrs(), "data_base64": ["eA=="]}),
        "data_base64",
        "type",
        "json-data-base64-list",
    ),
    # header values: percent-decoding and UTF-8
    case(
        binary({**binary_headers(), "ce-subject": "%FF"}),
        "subject",
        "utf-8",
        "binary-percent-encoded-invalid-utf8",
    ),
    case(
        binary({**binary_headers(), "ce-subject": "%C3%28"}),
        "subject",
        "utf-8",
        "binary-percent-encoded-bad-continuation",
    ),
    case(
        binary({**binary_headers(), "ce-subject": b"\xff"}),
        "subject",
        "utf-8",
        "binary-raw-invalid-utf8-bytes",
    ),
    case(
        binary({**binary_headers(), "ce-subject": "\xff"}),
        "subject",
        "utf-8",
        "binary-latin1-str-invalid-utf8",
    ),
    case(
        binary({**binary_headers(), "content-type": b"text/plain; a=\xff"}),
        "datacontenttype",
        "utf-8",
        "binary-content-type-invalid-utf8",
    ),
    # batches: all or nothing, located by index
    case(batch([attrs(), attrs(id=...)]), "id", "required", "batch-second-missing-id", index=1),
    case(
        batch([attrs(specversion="0.3"), attrs()]),
        "specversion",
        "unsupported-specversion",
        "batch-first-0.3",
        index=0,
    ),
    case(
        batch([attrs(), attrs(), attrs(time="2020-02-30T00:00:00Z")]),
        "time",
        "rfc3339",
        "batch-third-bad-time",
        index=2,
    ),
    case(batch([attrs(), 5]), "body", "json-object", "batch-member-not-object", index=1),
    case(
        batch([attrs(), {**attrs(), "data": 1, "data_base64": "eA=="}]),
        "data",
        "data-exclusive",
        "batch-member-data-exclusive",
        index=1,
    ),
    case(batch(attrs()), "body", "json-array", "batch-not-array-object"),
    case(batch("events"), "body", "json-array", "batch-not-array-string"),
    case(structured_raw(b"{", BATCH), "body", "json", "batch-not-json"),
    # structured body
    case(structured_raw(b"{not json"), "body", "json", "structured-not-json"),
    case(structured_raw(b""), "body", "json", "structured-empty-body"),
    case(structured_raw(b"\xff\xfe{}"), "body", "json", "structured-not-utf8"),
    case(
        structured_raw(b"[" * 100_000 + b"]" * 100_000),
        "body",
        "json",
        "structured-nesting-too-deep",
    ),
    case(structured([attrs()]), "body", "json-object", "structured-array"),
    case(structured("event"), "body", "json-object", "structured-string"),
    case(structured(None), "body", "json-object", "structured-null"),
    # content modes
    case(
        binary({"content-type": "text/plain"}, b"hi"),
        "content-type",
        "content-mode",
        "no-ce-headers-text-plain",
        error=UnsupportedContentModeError,
    ),
    case(
        binary({"content-type": "application/json"}, b"{}"),
        "content-type",
        "content-mode",
        "no-ce-headers-application-json",
        error=UnsupportedContentModeError,
    ),
    case(
        binary({}, b""),
        "content-type",
        "content-mode",
        "no-headers",
        error=UnsupportedContentModeError,
    ),
    case(
        structured_raw(b"\x00", "application/cloudevents+avro"),
        "content-type",
        "event-format",
        "structured-avro",
        error=UnsupportedContentModeError,
    ),
    case(
        structured_raw(b"{}", "application/cloudevents"),
        "content-type",
        "event-format",
        "structured-no-format-suffix",
        error=UnsupportedContentModeError,
    ),
    case(
        structured_raw(b"[]", "application/cloudevents-batch+protobuf"),
        "content-type",
        "event-format",
        "batch-protobuf",
        error=UnsupportedContentModeError,
    ),
    # Kafka binding
    case(
        kafka(KafkaRecord(value=b"{}", headers=(("content-type", b"application/json"),))),
        "specversion",
        "content-mode",
        "kafka-no-ce-specversion",
        error=UnsupportedContentModeError,
    ),
    case(
        kafka(KafkaRecord(value=None)),
        "specversion",
        "content-mode",
        "kafka-empty-record",
        error=UnsupportedContentModeError,
    ),
    case(
        kafka(kafka_record(b"", kafka_binary_headers(specversion=...))),
        "specversion",
        "content-mode",
        "kafka-missing-ce-specversion",
        error=UnsupportedContentModeError,
    ),
    case(
        kafka(kafka_record(b"", {**kafka_binary_headers(), "ce_subject": b"\xff"})),
        "subject",
        "utf-8",
        "kafka-header-invalid-utf8",
    ),
    case(
        kafka(kafka_record(b"", {**kafka_binary_headers(), "content-type": b"\xc3("})),
        "datacontenttype",
        "utf-8",
        "kafka-content-type-invalid-utf8",
    ),
    case(
        kafka(kafka_record(b"\x00", {"content-type": "application/cloudevents+avro"})),
        "content-type",
        "event-format",
        "kafka-structured-avro",
        error=UnsupportedContentModeError,
    ),
    case(
        kafka(kafka_record(b"{nope", {"content-type": STRUCTURED})),
        "value",
        "json",
        "kafka-structured-not-json",
    ),
    case(
        kafka(kafka_record(None, {"content-type": STRUCTURED})),
        "value",
        "json",
        "kafka-structured-no-value",
    ),
    case(
        kafka(kafka_record(b"[" * 100_000, {"content-type": STRUCTURED})),
        "value",
        "json",
        "kafka-structured-nesting-too-deep",
    ),
    case(
        kafka(kafka_record(b"[]", {"content-type": STRUCTURED})),
        "body",
        "json-object",
        "kafka-structured-array",
    ),
    case(
        kafka(kafka_record(structured_body(attrs(id=...)), {"content-type": STRUCTURED})),
        "id",
        "required",
        "kafka-structured-missing-id",
    ),
]


@pytest.mark.parametrize(("thunk", "attribute", "rule", "index", "error"), FAILING_EXAMPLES)
def test_invalid_event_names_attribute_and_rule(
    thunk: Thunk, attribute: str, rule: str, index: int | None, error: type[InvalidEventError]
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        thunk()
    assert type(caught.value) is error
    assert (caught.value.attribute, caught.value.rule) == (attribute, rule)
    assert caught.value.index == index


def test_failing_examples_cover_every_rule_the_package_raises() -> None:
    rules = {param.values[2] for param in FAILING_EXAMPLES}  # type: ignore[attr-defined]
    assert rules == {
        "required", "non-empty", "type", "unsupported-specversion", "uri-reference", "uri",
        "rfc3339", "media-type", "attribute-name", "extension-type", "integer-range",
        "reserved", "data-exclusive", "base64", "utf-8", "json", "json-object", "json-array",
        "content-mode", "event-format",
    }  # fmt: skip


def test_unsupported_content_mode_is_an_invalid_event_error() -> None:
    assert issubclass(UnsupportedContentModeError, InvalidEventError)
    assert issubclass(InvalidEventError, ValueError)


# ---------------------------------------------------------------- accepted forms at the edges

GOOD_TIMES = [
    "2018-04-05T03:56:24Z",
    "2018-04-05t03:56:24z",
    "2018-04-05T03:56:24z",
    "2018-04-05t03:56:24Z",
    "2016-12-31T23:59:60Z",
    "2018-04-05T03:56:24.5Z",
    "2018-04-05T03:56:24.123456789Z",
    "2018-04-05T03:56:24+05:30",
    "2018-04-05T03:56:24-08:00",
    "2018-04-05T03:56:24+00:00",
    "2018-04-05T03:56:24-00:00",
    "2018-04-05T03:56:24.001+23:59",
    "2020-02-29T00:00:00Z",
    "2000-02-29T00:00:00Z",
    "2018-04-30T00:00:00Z",
    "2018-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
]


@pytest.mark.parametrize("value", GOOD_TIMES)
def test_rfc3339_time_is_accepted_unchanged(value: str) -> None:
    assert CloudEvent(attrs(time=value)).attributes["time"] == value


@pytest.mark.parametrize(
    "value",
    [
        "https://github.com/cloudevents",
        "mailto:cncf-wg-serverless@lists.cncf.io",
        "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
        "cloudevents/spec/pull/123",
        "/sensors/tn-1234567/alerts",
        "1-555-123-4567",
        "//github.com/cloudevents/cloudeventsconformance/yaml/v1.yaml",
        "/a%20b?q=1#frag",
        "http://[::1]:8080/p",
        "x",
        "#only-a-fragment",
        "?only=query",
    ],
)
def test_uri_reference_source_is_accepted(value: str) -> None:
    assert CloudEvent(attrs(source=value)).source == value


@pytest.mark.parametrize(
    "value",
    ["https://example.com/schemas/reading.json", "urn:example:schema:1", "http:", "tag:x#v1"],
)
def test_absolute_uri_dataschema_is_accepted(value: str) -> None:
    assert CloudEvent(attrs(dataschema=value)).attributes["dataschema"] == value


@pytest.mark.parametrize(
    "value",
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain;charset=us-ascii",
        'multipart/form-data; boundary="a b;c"',
        'text/plain; a="with \\"escaped\\" quote"',
        "application/vnd.example+json",
        "image/png",
        "text/plain; charset=utf-8; format=flowed",
        "application/x-www-form-urlencoded",
        "TEXT/PLAIN",
    ],
)
def test_rfc2046_media_type_is_accepted(value: str) -> None:
    assert CloudEvent(attrs(datacontenttype=value)).datacontenttype == value


@pytest.mark.parametrize("name", ["a" * 20, "a", "123", "comexampleextension1", "x9"])
def test_lowercase_alphanumeric_names_up_to_20_characters_are_accepted(name: str) -> None:
    assert CloudEvent(attrs(**{name: "v"})).attributes[name] == "v"


@pytest.mark.parametrize("value", ["", "text", True, False, 0, 2**31 - 1, -(2**31)])
def test_extension_values_of_cloudevents_types_are_accepted(value: object) -> None:
    stored = CloudEvent(attrs(comexample=value)).attributes["comexample"]
    assert stored == value
    assert type(stored) is type(value)


def test_json_null_attribute_is_treated_as_absent() -> None:
    [parsed] = from_http(
        {"content-type": STRUCTURED},
        structured_body({**attrs(), "comexample": None, "subject": None, "time": None}),
    )
    assert dict(parsed.attributes) == attrs()


def test_validate_attributes_drops_none_and_keeps_everything_else() -> None:
    checked = validate_attributes({**attrs(), "subject": "s", "dataschema": None, "n": 3})
    assert checked == {**attrs(), "subject": "s", "n": 3}


def test_datetime_time_becomes_an_rfc3339_utc_string() -> None:
    aware = datetime(2018, 4, 5, 5, 56, 24, 500, tzinfo=timezone(timedelta(hours=2)))
    assert validate_attributes(attrs(time=aware))["time"] == "2018-04-05T03:56:24.000500Z"
    naive = datetime(2018, 4, 5, 3, 56, 24)
    assert validate_attributes(attrs(time=naive))["time"] == "2018-04-05T03:56:24Z"


def test_datetime_extension_becomes_an_rfc3339_string() -> None:
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert CloudEvent(attrs(seen=moment)).attributes["seen"] == "2024-01-02T03:04:05Z"


def test_binary_header_names_are_case_insensitive() -> None:
    headers = {
        "CE-ID": "evt-1",
        "Ce-Source": "/sensors/1",
        "cE-SpecVersion": "1.0",
        "CE-TYPE": "com.example.reading",
        "CE-COMEXAMPLE": "v",
        "Content-Type": "text/plain",
    }
    [parsed] = from_http(headers, b"hello")
    assert dict(parsed.attributes) == {
        **attrs(),
        "comexample": "v",
        "datacontenttype": "text/plain",
    }
    assert parsed.data == "hello"


def test_first_invalid_attribute_is_named_when_several_are_invalid() -> None:
    with pytest.raises(InvalidEventError) as caught:
        CloudEvent({"specversion": "1.0", "id": "", "source": "/s"})
    assert (caught.value.attribute, caught.value.rule) == ("id", "non-empty")


# ------------------------------------------------------------------------- the error object


def test_error_message_names_location_attribute_and_rule() -> None:
    error = InvalidEventError("time", "rfc3339", "'x' is not an RFC 3339 timestamp")
    assert str(error) == "time: 'x' is not an RFC 3339 timestamp (rfc3339)"
    located = error.in_batch(3)
    assert str(located) == "batch[3].time: 'x' is not an RFC 3339 timestamp (rfc3339)"
    assert (located.attribute, located.rule, located.index, located.detail) == (
        "time",
        "rfc3339",
        3,
        "'x' is not an RFC 3339 timestamp",
    )
    assert error.index is None


def test_error_as_dict_is_the_400_body() -> None:
    error = InvalidEventError("id", "required", "is required")
    assert error.as_dict() == {
        "error": "invalid CloudEvent",
        "attribute": "id",
        "rule": "required",
        "message": "id: is required (required)",
    }
    assert error.in_batch(0).as_dict()["index"] == 0
