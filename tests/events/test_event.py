"""The CloudEvent type: construction, ``new`` with UUIDv7 ids, copies, SDK compatibility."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from agentfn.events import (
    SPEC_VERSION,
    CloudEvent,
    InvalidEventError,
    _ids,
    is_json_media_type,
    is_text_media_type,
    new_event_id,
)
from cloudevents.conversion import from_dict, from_json, to_dict, to_json

from tests.events._support import attrs, event


def _uuid7_millis(event_id: str) -> int:
    return uuid.UUID(event_id).int >> 80


def test_new_sets_specversion_fresh_id_and_current_time() -> None:
    before = datetime.now(UTC)
    created = CloudEvent.new("com.example.created", "/orders", subject="o-1")
    after = datetime.now(UTC)
    assert created.attributes["specversion"] == SPEC_VERSION == "1.0"
    assert created.type == "com.example.created"
    assert created.source == "/orders"
    assert created.attributes["subject"] == "o-1"
    assert created.data is None
    assert created.datacontenttype is None
    stamp = str(created.attributes["time"])
    assert stamp.endswith("Z")
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before.replace(microsecond=0) <= moment <= after
    assert uuid.UUID(created.id).version == 7


def test_new_marks_json_data_as_application_json() -> None:
    assert CloudEvent.new("t", "/s", {"a": 1}).datacontenttype == "application/json"
    assert CloudEvent.new("t", "/s", "text").datacontenttype == "application/json"
    assert CloudEvent.new("t", "/s", b"raw").datacontenttype is None
    given = CloudEvent.new("t", "/s", "text", datacontenttype="text/plain")
    assert given.datacontenttype == "text/plain"


def test_new_lets_attributes_override_defaults_and_validates_them() -> None:
    fixed = CloudEvent.new("t", "/s", id="fixed", time="2018-04-05T03:56:24Z")
    assert fixed.id == "fixed"
    assert fixed.attributes["time"] == "2018-04-05T03:56:24Z"
    with pytest.raises(InvalidEventError) as caught:
        CloudEvent.new("t", "not a uri")
    assert (caught.value.attribute, caught.value.rule) == ("source", "uri-reference")


def test_a_burst_of_10k_ids_is_unique_and_sorts_in_creation_order() -> None:
    ids = [CloudEvent.new("t", "/s").id for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert [uuid.UUID(i).int for i in ids] == sorted(uuid.UUID(i).int for i in ids)


def test_event_ids_are_rfc9562_uuid_version_7_with_a_current_timestamp() -> None:
    now_ms = time.time_ns() // 1_000_000
    for event_id in (new_event_id() for _ in range(100)):
        parsed = uuid.UUID(event_id)
        assert str(parsed) == event_id
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert abs(_uuid7_millis(event_id) - now_ms) < 5_000


def test_ids_stay_unique_and_ordered_when_the_clock_stands_still(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frozen_ns = time.time_ns() + 50_000_000  # ahead of every id minted so far
    monkeypatch.setattr(_ids, "time", SimpleNamespace(time_ns=lambda: frozen_ns))
    ids = [new_event_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    millis = [_uuid7_millis(i) for i in ids]
    # a 12-bit counter spends at most 4096 ids per millisecond, then borrows the next one
    assert millis[0] == frozen_ns // 1_000_000
    assert millis[-1] - millis[0] == 2  # (4096 - first counter) + 4096 + the rest
    counters = [(uuid.UUID(i).int >> 64) & 0xFFF for i in ids]
    for before, after, ms_before, ms_after in zip(
        counters, counters[1:], millis, millis[1:], strict=False
    ):
        assert (ms_after, after) in ((ms_before, before + 1), (ms_before + 1, 0))


def test_ids_minted_later_sort_after_earlier_ones() -> None:
    first = new_event_id()
    time.sleep(0.002)
    assert new_event_id() > first


def test_with_attributes_returns_a_changed_copy_sharing_data() -> None:
    payload = {"a": [1]}
    original = event(payload, datacontenttype="application/json", subject="s")
    changed = original.with_attributes(subject="t", comexample=3)
    assert changed.attributes["subject"] == "t"
    assert changed.attributes["comexample"] == 3
    assert original.attributes["subject"] == "s"
    assert "comexample" not in original.attributes
    assert changed.data is payload


def test_with_attributes_none_removes_an_attribute() -> None:
    assert "subject" not in event(subject="s").with_attributes(subject=None).attributes


@pytest.mark.parametrize(
    ("changes", "attribute", "rule"),
    [
        ({"id": None}, "id", "required"),
        ({"time": "tomorrow"}, "time", "rfc3339"),
        ({"comexample": 1.5}, "comexample", "extension-type"),
        ({"Bad": "x"}, "Bad", "attribute-name"),
    ],
)
def test_with_attributes_validates_the_result(
    changes: dict[str, object], attribute: str, rule: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        event().with_attributes(**changes)
    assert (caught.value.attribute, caught.value.rule) == (attribute, rule)


def test_attributes_view_and_properties() -> None:
    built = event("x", datacontenttype="text/plain")
    assert dict(built.attributes) == {**attrs(), "datacontenttype": "text/plain"}
    assert (built.id, built.source, built.type) == ("evt-1", "/sensors/1", "com.example.reading")
    assert built["id"] == "evt-1"
    assert built.get("subject") is None
    assert built.get_data() == "x"
    assert "evt-1" in repr(built)


def test_events_are_equal_by_attributes_and_data() -> None:
    assert event(b"x") == event(b"x")
    assert event(b"x") != event(b"y")
    assert event(b"x") != event(b"x", subject="s")
    assert event() != dict(attrs())


def test_sdk_conversion_round_trips_and_validates() -> None:
    original = event({"a": 1}, datacontenttype="application/json", comexample=True)
    assert to_dict(original) == {**dict(original.attributes), "data": {"a": 1}}
    assert from_json(CloudEvent, to_json(original)) == original
    with pytest.raises(InvalidEventError) as caught:
        from_dict(CloudEvent, attrs(id=...))
    assert (caught.value.attribute, caught.value.rule) == ("id", "required")


def test_create_is_the_sdk_factory_and_validates() -> None:
    assert CloudEvent.create(attrs(), b"x") == event(b"x")
    with pytest.raises(InvalidEventError):
        CloudEvent.create(attrs(specversion="0.3"), None)


@pytest.mark.parametrize(
    ("media", "is_json", "is_text"),
    [
        ("application/json", True, False),
        ("Application/JSON; charset=utf-8", True, False),
        ("text/json", True, True),
        ("application/cloudevents+json", True, False),
        ("application/vnd.api+json ; x=1", True, False),
        ("text/plain", False, True),
        ("application/xml", False, True),
        ("image/svg+xml", False, True),
        ("application/octet-stream", False, False),
        ("application/jsonx", False, False),
        ("", False, False),
        (None, False, False),
    ],
)
def test_media_type_classification(media: str | None, is_json: bool, is_text: bool) -> None:
    assert is_json_media_type(media) is is_json
    assert is_text_media_type(media) is is_text
