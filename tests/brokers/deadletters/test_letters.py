"""The letter model: keys, origins, error data, reopening, replays, the JSON form."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from agentfn.brokers.deadletters.letters import (
    REPLAY_OF,
    DeadLetter,
    ErrorData,
    LetterQuery,
    Replay,
    TriggerRef,
    letter_key,
    replay_event,
)
from agentfn.events import CloudEvent
from agentfn.events.extensions import (
    KNATIVE_BROKER_TTL,
    KNATIVE_ERROR_CODE,
    KNATIVE_ERROR_DATA,
    KNATIVE_ERROR_DEST,
)

from tests.brokers.deadletters.contract import DEST, PLANNER, T0, accepted, again, refused

BODY = b'{"error": "bad input", "field": "amount"}'


def dead(data: object = None, **extra: object) -> CloudEvent:
    attributes: dict[str, object] = {
        "specversion": "1.0",
        "id": "event-1",
        "source": "/tests",
        "type": "test.task",
        "datacontenttype": "application/json",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        KNATIVE_ERROR_DEST: DEST,
        KNATIVE_ERROR_CODE: "422",
        KNATIVE_ERROR_DATA: base64.b64encode(BODY).decode(),
        KNATIVE_BROKER_TTL: "253",
        **extra,
    }
    return CloudEvent(attributes, {"amount": -1} if data is None else data)


def received(event: CloudEvent | None = None, *, redact: bool = False) -> DeadLetter:
    return DeadLetter.received(event or dead(), TriggerRef.from_path(PLANNER), at=T0, redact=redact)


# -- keys and origins ---------------------------------------------------------------------------


def test_the_key_is_one_per_source_id_and_error_dest() -> None:
    key = letter_key("/tests", "event-1", DEST)
    assert len(key) == 16
    assert int(key, 16) >= 0
    assert letter_key("/tests", "event-1", DEST) == key
    assert (
        len(
            {
                key,
                letter_key("/other", "event-1", DEST),
                letter_key("/tests", "event-2", DEST),
                letter_key("/tests", "event-1", "http://writer/"),
                letter_key("/tests", "event-1", None),
            }
        )
        == 5
    )
    # The parts are separated: moving text between them is another key.
    assert letter_key("/a", "bc", None) != letter_key("/ab", "c", None)
    assert letter_key("/tests", "event-1", None) == letter_key("/tests", "event-1", "")


@pytest.mark.parametrize(
    ("path", "ref"),
    [
        ("/", TriggerRef(None, None, None)),
        ("", TriggerRef(None, None, None)),
        ("/default", TriggerRef("default", None, None)),
        ("/default/default", TriggerRef("default", "default", None)),
        ("/default/default/planner", TriggerRef("default", "default", "planner")),
        ("/default/default/planner/", TriggerRef("default", "default", "planner")),
    ],
)
def test_the_origin_is_read_from_the_sink_path(path: str, ref: TriggerRef) -> None:
    assert TriggerRef.from_path(path) == ref


def test_a_path_of_more_than_three_parts_is_refused() -> None:
    with pytest.raises(ValueError, match="/<namespace>/<broker>/<trigger>"):
        TriggerRef.from_path("/a/b/c/d")


def test_unknown_parts_are_empty_labels_and_question_marks() -> None:
    ref = TriggerRef.from_path("/default/default")
    assert ref.labels == ("default", "default", "")
    assert ref.describe() == "default/default/?"
    assert TriggerRef.from_path(PLANNER).describe() == "default/default/planner"


# -- error data ---------------------------------------------------------------------------------


def test_error_data_is_kept_raw_and_decoded() -> None:
    raw = base64.b64encode(BODY).decode()
    data = ErrorData.of(raw, redact=False)
    assert data == ErrorData(raw, len(BODY), hashlib.sha256(BODY).hexdigest(), redacted=False)
    assert data.body == BODY
    assert data.text == BODY.decode()
    assert data.json == {"error": "bad input", "field": "amount"}


def test_error_data_that_is_not_base64_is_kept_as_text_it_came() -> None:
    data = ErrorData.of("not base64!", redact=False)
    assert data.raw == "not base64!"
    assert data.body is None
    assert data.text is None
    assert data.length == len(b"not base64!")
    assert data.sha256 == hashlib.sha256(b"not base64!").hexdigest()


def test_error_bodies_that_are_not_text_or_not_json() -> None:
    binary = ErrorData.of(base64.b64encode(b"\xff\xfe\x00").decode(), redact=False)
    assert binary.body == b"\xff\xfe\x00"
    assert binary.text is None
    assert binary.json is None
    plain = ErrorData.of(base64.b64encode(b"upstream timed out").decode(), redact=False)
    assert plain.text == "upstream timed out"
    assert plain.json is None


def test_redacted_error_data_keeps_only_length_and_hash() -> None:
    data = ErrorData.of(base64.b64encode(BODY).decode(), redact=True)
    assert data == ErrorData(None, len(BODY), hashlib.sha256(BODY).hexdigest(), redacted=True)
    assert data.body is None
    assert data.text is None
    assert data.json is None


# -- a letter as received -------------------------------------------------------------------------


def test_a_received_letter_keeps_the_event_whole() -> None:
    event = dead()
    letter = received(event)
    assert letter.key == letter_key("/tests", "event-1", DEST)
    assert letter.event == event  # every attribute, knativeerror* included, and the data
    assert letter.origin == TriggerRef("default", "default", "planner")
    assert letter.error_dest == DEST
    assert letter.error_code == "422"
    assert letter.error_data == ErrorData.of(base64.b64encode(BODY).decode(), redact=False)
    assert (letter.first_arrived_at, letter.arrived_at, letter.arrivals) == (T0, T0, 1)
    assert letter.replayed_at is None
    assert letter.waiting
    assert letter.replays == ()


def test_a_redacted_letter_drops_the_error_body_from_the_event_too() -> None:
    letter = received(redact=True)
    assert KNATIVE_ERROR_DATA not in letter.event.attributes
    assert letter.event.attributes[KNATIVE_ERROR_CODE] == "422"  # the rest is kept
    assert letter.event.data == {"amount": -1}
    assert letter.error_data == ErrorData.of(base64.b64encode(BODY).decode(), redact=True)
    assert letter.key == received().key  # redaction does not change which letter it is
    assert "bad input" not in json.dumps(letter.to_json())


def test_a_letter_without_error_extensions() -> None:
    event = CloudEvent.new("test.task", "/tests", {"n": 1})
    letter = DeadLetter.received(event, TriggerRef(), at=T0, redact=True)
    assert letter.error_dest is None
    assert letter.error_code is None
    assert letter.error_data is None
    assert letter.event == event
    assert letter.key == letter_key("/tests", event.id, None)


# -- reopening and replays ------------------------------------------------------------------------


def test_a_letter_returning_after_a_replay_reopens_with_the_newest_error() -> None:
    first = received().with_replay(accepted(T0 + 10))
    back = DeadLetter.received(
        dead(**{KNATIVE_ERROR_CODE: "500", KNATIVE_ERROR_DATA: base64.b64encode(b"x").decode()}),
        TriggerRef.from_path("/default/default/other"),
        at=T0 + 20,
    )
    reopened = first.returned(back)
    assert reopened.key == first.key
    assert reopened.event == back.event
    assert reopened.error_code == "500"
    assert reopened.error_data == back.error_data
    assert reopened.origin == back.origin
    assert reopened.first_arrived_at == T0
    assert reopened.arrived_at == T0 + 20
    assert reopened.arrivals == 2
    assert reopened.replayed_at is None
    assert reopened.waiting
    assert reopened.replays == (accepted(T0 + 10),)


def test_only_an_accepted_replay_ends_the_wait() -> None:
    letter = received()
    after_refusal = letter.with_replay(refused(T0 + 1, 503))
    after_silence = after_refusal.with_replay(refused(T0 + 2, None))
    assert after_silence.waiting
    assert after_silence.replays == (refused(T0 + 1, 503), refused(T0 + 2, None))
    done = after_silence.with_replay(accepted(T0 + 3, 200))
    assert done.replayed_at == T0 + 3
    assert not done.waiting
    assert done.with_replay(refused(T0 + 4)).replayed_at == T0 + 3
    assert done.with_replay(accepted(T0 + 5)).replayed_at == T0 + 5  # a forced replay
    assert letter.replays == ()  # records are values: nothing changed in place


@pytest.mark.parametrize(
    ("status", "ok"),
    [(200, True), (202, True), (299, True), (300, False), (503, False), (None, False)],
)
def test_a_replay_is_ok_for_a_2xx_answer_only(status: int | None, ok: bool) -> None:
    assert Replay(at=T0, to="http://b", event_id="e", new_id=False, status=status).ok is ok


def test_a_replay_round_trips_through_json() -> None:
    replay = Replay(
        at=T0, to="http://b/ns/br", event_id="new", new_id=True, status=None, error="refused"
    )
    as_json = json.loads(json.dumps(replay.to_json()))
    assert as_json["ok"] is False
    assert Replay.from_json(as_json) == replay


# -- the JSON form --------------------------------------------------------------------------------


def test_the_json_form_round_trips_exactly() -> None:
    letter = (
        DeadLetter.received(dead(data=b"\x00\x01raw"), TriggerRef.from_path("/ns"), at=T0)
        .with_replay(refused(T0 + 1))
        .with_replay(accepted(T0 + 2))
    )
    letter = letter.returned(again(letter, at=T0 + 3))
    text = json.dumps(letter.to_json())
    assert DeadLetter.from_json(json.loads(text)) == letter
    as_json = json.loads(text)
    assert as_json["event"]["data_base64"] == base64.b64encode(b"\x00\x01raw").decode()
    assert {
        key: as_json[key]
        for key in ("key", "id", "source", "type", "namespace", "broker", "trigger", "arrivals")
    } == {
        "key": letter.key,
        "id": "event-1",
        "source": "/tests",
        "type": "test.task",
        "namespace": "ns",
        "broker": None,
        "trigger": None,
        "arrivals": 2,
    }
    assert [replay["ok"] for replay in as_json["replays"]] == [False, True]


def test_the_json_form_shows_the_error_body_decoded() -> None:
    error = received().to_json()["error"]
    assert error["dest"] == DEST
    assert error["code"] == "422"
    assert error["data"]["text"] == BODY.decode()
    assert error["data"]["length"] == len(BODY)
    assert error["data"]["redacted"] is False
    redacted = received(redact=True)
    assert DeadLetter.from_json(json.loads(json.dumps(redacted.to_json()))) == redacted
    assert redacted.to_json()["error"]["data"]["raw"] is None


# -- the event a replay sends ---------------------------------------------------------------------


def test_a_replay_sends_the_original_without_what_the_broker_added() -> None:
    letter = received()
    event = replay_event(letter)
    assert event.id == "event-1"
    assert event.source == "/tests"
    assert event.data == {"amount": -1}
    for name in (KNATIVE_ERROR_DEST, KNATIVE_ERROR_CODE, KNATIVE_ERROR_DATA, KNATIVE_BROKER_TTL):
        assert name not in event.attributes
    assert REPLAY_OF not in event.attributes
    expected = {
        name: value
        for name, value in letter.event.attributes.items()
        if not name.startswith("knative")
    }
    assert dict(event.attributes) == expected  # traceparent and the rest kept
    assert KNATIVE_ERROR_CODE in letter.event.attributes  # the letter is unchanged


def test_a_replay_with_a_new_id_names_the_original() -> None:
    event = replay_event(received(), new_id="event-1-replay")
    assert event.id == "event-1-replay"
    assert event.attributes[REPLAY_OF] == "event-1"
    assert event.source == "/tests"
    assert KNATIVE_ERROR_DEST not in event.attributes


# -- queries --------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, 1001, -1])
def test_a_query_limit_outside_1_to_1000_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        LetterQuery(limit=limit)


def test_a_query_takes_the_limits_of_its_range() -> None:
    assert LetterQuery(limit=1).limit == 1
    assert LetterQuery(limit=1000).limit == 1000


def test_since_is_inclusive_and_before_exclusive() -> None:
    letter = received()
    assert LetterQuery(since=T0).matches(letter)
    assert not LetterQuery(before=T0).matches(letter)
    assert LetterQuery(before=T0 + 0.000001).matches(letter)
