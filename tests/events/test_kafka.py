"""The Kafka protocol binding: binary records with ce_ headers, structured records, keys."""

from __future__ import annotations

import json

import pytest
from agentfn.events import (
    CloudEvent,
    InvalidEventError,
    KafkaRecord,
    UnsupportedContentModeError,
    from_kafka,
    to_kafka,
    to_kafka_structured,
)
from agentfn.events.extensions import PARTITION_KEY

from tests.events._support import attrs, event, kafka_binary_headers, kafka_record


def test_to_kafka_writes_ce_headers_content_type_and_value() -> None:
    record = to_kafka(
        event({"a": 1}, datacontenttype="application/json", subject="caf\u00e9", flag=True, n=3)
    )
    assert dict(record.headers) == {
        "ce_specversion": b"1.0",
        "ce_id": b"evt-1",
        "ce_source": b"/sensors/1",
        "ce_type": b"com.example.reading",
        "ce_subject": "caf\u00e9".encode(),
        "ce_flag": b"true",
        "ce_n": b"3",
        "content-type": b"application/json",
    }
    assert len(record.headers) == 8
    assert json.loads(record.value or b"") == {"a": 1}
    assert record.key is None


def test_to_kafka_keys_the_record_by_partitionkey() -> None:
    record = to_kafka(event(b"x", **{PARTITION_KEY: "order-17"}))
    assert record.key == b"order-17"
    assert dict(record.headers)["ce_partitionkey"] == b"order-17"
    assert to_kafka_structured(event(**{PARTITION_KEY: "order-17"})).key == b"order-17"


def test_to_kafka_without_data_has_no_value() -> None:
    record = to_kafka(event())
    assert record.value is None
    assert "content-type" not in dict(record.headers)
    assert from_kafka(record) == event()


def test_to_kafka_marks_json_data_without_content_type_as_json() -> None:
    record = to_kafka(CloudEvent(attrs(), [1, 2]))
    assert dict(record.headers)["content-type"] == b"application/json"
    assert from_kafka(record).data == [1, 2]


@pytest.mark.parametrize(
    "original",
    [
        event(),
        event({"a": [1, None, "\u00e9"]}, datacontenttype="application/json"),
        event("text \U0001f30e", datacontenttype="text/plain"),
        event(b"\x00\xff", datacontenttype="application/octet-stream"),
        event(b"\x00\xff"),
        event(subject='spaces and "quotes" 100%', comexample="v", partitionkey="k"),
    ],
)
def test_kafka_binary_round_trip(original: CloudEvent) -> None:
    assert from_kafka(to_kafka(original)) == original


@pytest.mark.parametrize(
    "original",
    [
        event(),
        event({"a": 1}, datacontenttype="application/json", flag=False, n=-(2**31)),
        event(b"\x00\xff"),
    ],
)
def test_kafka_structured_round_trip_keeps_extension_types(original: CloudEvent) -> None:
    record = to_kafka_structured(original)
    assert dict(record.headers) == {"content-type": b"application/cloudevents+json; charset=utf-8"}
    assert from_kafka(record) == original


def test_binary_record_extensions_come_back_as_strings() -> None:
    parsed = from_kafka(to_kafka(event(flag=True, n=5)))
    assert parsed.attributes["flag"] == "true"
    assert parsed.attributes["n"] == "5"


def test_kafka_header_values_are_not_percent_decoded() -> None:
    record = kafka_record(b"", {**kafka_binary_headers(), "ce_subject": "a%20b"})
    assert from_kafka(record).attributes["subject"] == "a%20b"


def test_kafka_header_names_are_case_insensitive() -> None:
    headers: dict[str, str | bytes] = {f"CE_{k.upper()}": str(v) for k, v in attrs().items()}
    headers["Content-Type"] = "text/plain"
    parsed = from_kafka(kafka_record(b"hi", headers))
    assert dict(parsed.attributes) == {**attrs(), "datacontenttype": "text/plain"}
    assert parsed.data == "hi"


def test_kafka_non_ce_headers_are_ignored() -> None:
    headers = {**kafka_binary_headers(), "traceparent": "00-x", "ce-id": "hyphen-is-http"}
    assert dict(from_kafka(kafka_record(None, headers)).attributes) == attrs()


def test_kafka_record_key_does_not_become_an_attribute() -> None:
    parsed = from_kafka(kafka_record(None, kafka_binary_headers(), key=b"k"))
    assert PARTITION_KEY not in parsed.attributes


def test_kafka_record_of_accepts_client_header_lists() -> None:
    record = KafkaRecord.of(b"v", [("ce_id", b"1"), ("empty", None)], key=b"k")
    assert record == KafkaRecord(value=b"v", headers=(("ce_id", b"1"), ("empty", b"")), key=b"k")
    assert KafkaRecord.of(None, None).headers == ()


def test_kafka_structured_content_type_wins_over_ce_headers() -> None:
    headers = {"content-type": "application/cloudevents+json", "ce_id": "from-header"}
    parsed = from_kafka(kafka_record(json.dumps(attrs()).encode(), headers))
    assert parsed.id == "evt-1"


def test_kafka_record_without_ce_specversion_is_unsupported() -> None:
    record = kafka_record(b"{}", {"ce_id": "1", "ce_type": "t", "ce_source": "/s"})
    with pytest.raises(UnsupportedContentModeError) as caught:
        from_kafka(record)
    assert (caught.value.attribute, caught.value.rule) == ("specversion", "content-mode")


def test_kafka_header_with_invalid_utf8_is_an_invalid_event() -> None:
    record = kafka_record(b"", {**kafka_binary_headers(), "ce_id": b"\xff\xfe"})
    with pytest.raises(InvalidEventError) as caught:
        from_kafka(record)
    assert not isinstance(caught.value, UnsupportedContentModeError)
    assert (caught.value.attribute, caught.value.rule) == ("id", "utf-8")
