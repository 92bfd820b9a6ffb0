"""Dead letters as data: what the sink keeps of each one, how it is queried, how it is written.

A dead letter is the event a Trigger gave up on, as the broker posted it to its
``deadLetterSink``: every attribute and the data, plus Knative's ``knativeerrordest``,
``knativeerrorcode`` and ``knativeerrordata`` (base64 of the subscriber's last answer, cut to
1024 bytes). The sink adds the time it arrived and which Trigger it came from (the path the
Trigger's ``deadLetterSink`` posts to: ``/<namespace>/<broker>/<trigger>``).

The same letter stored twice (same ``source``, ``id`` and ``knativeerrordest``: the broker
retries the sink until it answers 2xx) is one record, keyed by :func:`letter_key`. A letter
that comes back after it was replayed (the cause was not fixed) reopens that record: it is
waiting again, with the newest error, and ``arrivals`` counts the times it was dead-lettered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from agentfn.events import CloudEvent
from agentfn.events.extensions import (
    KNATIVE_BROKER_TTL,
    KNATIVE_ERROR_CODE,
    KNATIVE_ERROR_DATA,
    KNATIVE_ERROR_DEST,
)
from agentfn.events.http import event_from_json, event_to_json

__all__ = [
    "REPLAY_OF",
    "DeadLetter",
    "ErrorData",
    "LetterPage",
    "LetterQuery",
    "Replay",
    "TriggerRef",
    "letter_key",
    "replay_event",
]

#: Extension of an event re-run with a new id (``replay --new-id``): the original's ``id``.
REPLAY_OF: Final = "replayof"

#: Attributes the broker added on the way in and out; a replay starts a fresh journey without
#: them (the ingress stamps a new ``knativebrokerttl``).
_BROKER_ATTRIBUTES: Final = (
    KNATIVE_ERROR_DEST,
    KNATIVE_ERROR_CODE,
    KNATIVE_ERROR_DATA,
    KNATIVE_BROKER_TTL,
)


def letter_key(source: str, event_id: str, error_dest: str | None) -> str:
    """The record key of a letter: one per (``source``, ``id``, ``knativeerrordest``)."""
    digest = hashlib.sha256(f"{source}\x00{event_id}\x00{error_dest or ''}".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class TriggerRef:
    """Where a letter came from; a part is ``None`` when the sink's path did not name it."""

    namespace: str | None = None
    broker: str | None = None
    trigger: str | None = None

    @classmethod
    def from_path(cls, path: str) -> TriggerRef:
        """``/``, ``/<namespace>``, ``/<namespace>/<broker>`` or ``/<ns>/<broker>/<trigger>``."""
        parts = [part for part in path.split("/") if part]
        if len(parts) > 3:
            raise ValueError(f"{path!r}: a dead-letter path is /<namespace>/<broker>/<trigger>")
        padded = [*parts, None, None, None]
        return cls(padded[0], padded[1], padded[2])

    @property
    def labels(self) -> tuple[str, str, str]:
        """``(namespace, broker, trigger)``, ``""`` for an unknown part (metrics, depth keys)."""
        return (self.namespace or "", self.broker or "", self.trigger or "")

    def describe(self) -> str:
        return "/".join(part or "?" for part in (self.namespace, self.broker, self.trigger))


@dataclass(frozen=True, slots=True)
class ErrorData:
    """``knativeerrordata``: raw as received, decoded, or (redacted) only its length and hash."""

    raw: str | None  # the base64 text as the broker sent it; None when absent or redacted
    length: int  # bytes of the decoded body (of the raw text when it was not base64)
    sha256: str  # of the decoded body
    redacted: bool = False

    @classmethod
    def of(cls, raw: str, *, redact: bool) -> ErrorData:
        body = _b64decode(raw)
        decoded = raw.encode() if body is None else body
        return cls(
            raw=None if redact else raw,
            length=len(decoded),
            sha256=hashlib.sha256(decoded).hexdigest(),
            redacted=redact,
        )

    @property
    def body(self) -> bytes | None:
        """The subscriber's answer body, decoded; None when redacted or not base64."""
        return None if self.raw is None else _b64decode(self.raw)

    @property
    def text(self) -> str | None:
        body = self.body
        if body is None:
            return None
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return None

    @property
    def json(self) -> Any | None:
        text = self.text
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None


def _b64decode(raw: str) -> bytes | None:
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Replay:
    """One replay of a letter: when, to which ingress, with what answer."""

    at: float  # seconds since the epoch
    to: str  # the broker ingress URL the event was posted to
    event_id: str  # the id it was sent with: the original's, or a new one (``new_id``)
    new_id: bool
    status: int | None  # the ingress's answer; None when there was none
    error: str | None = None  # why there was no answer, or the refusal's body (cut)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "to": self.to,
            "event_id": self.event_id,
            "new_id": self.new_id,
            "status": self.status,
            "error": self.error,
            "ok": self.ok,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Replay:
        return cls(
            at=float(raw["at"]),
            to=str(raw["to"]),
            event_id=str(raw["event_id"]),
            new_id=bool(raw["new_id"]),
            status=None if raw.get("status") is None else int(raw["status"]),
            error=raw.get("error"),
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One stored dead letter: the event whole, where it failed and why, what became of it."""

    key: str
    event: CloudEvent  # as it arrived, knativeerror* extensions included
    origin: TriggerRef
    error_dest: str | None
    error_code: str | None  # knativeerrorcode as sent (Knative writes the status as text)
    error_data: ErrorData | None
    first_arrived_at: float
    arrived_at: float  # the latest arrival: the one filters and ages use
    arrivals: int = 1  # times dead-lettered (a letter back after a replay counts again)
    replayed_at: float | None = None  # the accepted replay since the latest arrival; None: waiting
    replays: tuple[Replay, ...] = ()  # every replay, oldest first, refused ones too

    @classmethod
    def received(
        cls, event: CloudEvent, origin: TriggerRef, *, at: float, redact: bool = False
    ) -> DeadLetter:
        """The letter of an event as the sink received it at ``at``."""
        attributes = event.attributes
        dest = attributes.get(KNATIVE_ERROR_DEST)
        code = attributes.get(KNATIVE_ERROR_CODE)
        data = attributes.get(KNATIVE_ERROR_DATA)
        error_data = None if data is None else ErrorData.of(str(data), redact=redact)
        if redact and data is not None:
            event = CloudEvent(
                {k: v for k, v in attributes.items() if k != KNATIVE_ERROR_DATA}, event.data
            )
        return cls(
            key=letter_key(event.source, event.id, None if dest is None else str(dest)),
            event=event,
            origin=origin,
            error_dest=None if dest is None else str(dest),
            error_code=None if code is None else str(code),
            error_data=error_data,
            first_arrived_at=at,
            arrived_at=at,
        )

    @property
    def waiting(self) -> bool:
        """Not replayed since it last arrived: it counts in the depth."""
        return self.replayed_at is None

    def returned(self, again: DeadLetter) -> DeadLetter:
        """This record after ``again`` (same key) arrived once this one had been replayed."""
        return replace(
            self,
            event=again.event,
            error_code=again.error_code,
            error_data=again.error_data,
            origin=again.origin,
            arrived_at=again.arrived_at,
            arrivals=self.arrivals + 1,
            replayed_at=None,
        )

    def with_replay(self, replay: Replay) -> DeadLetter:
        """This record with ``replay`` recorded; an accepted replay ends its wait."""
        return replace(
            self,
            replays=(*self.replays, replay),
            replayed_at=replay.at if replay.ok else self.replayed_at,
        )

    # -- JSON: the sink's HTTP API and the stores' records ------------------------------------

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"dest": self.error_dest, "code": self.error_code, "data": None}
        if self.error_data is not None:
            error["data"] = {
                "raw": self.error_data.raw,
                "text": self.error_data.text,
                "length": self.error_data.length,
                "sha256": self.error_data.sha256,
                "redacted": self.error_data.redacted,
            }
        return {
            "key": self.key,
            "id": self.event.id,
            "source": self.event.source,
            "type": self.event.type,
            "namespace": self.origin.namespace,
            "broker": self.origin.broker,
            "trigger": self.origin.trigger,
            "error": error,
            "first_arrived_at": self.first_arrived_at,
            "arrived_at": self.arrived_at,
            "arrivals": self.arrivals,
            "replayed_at": self.replayed_at,
            "replays": [replay.to_json() for replay in self.replays],
            "event": event_to_json(self.event),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> DeadLetter:
        error = raw.get("error") or {}
        data = error.get("data")
        return cls(
            key=str(raw["key"]),
            event=event_from_json(raw["event"]),
            origin=TriggerRef(raw.get("namespace"), raw.get("broker"), raw.get("trigger")),
            error_dest=error.get("dest"),
            error_code=error.get("code"),
            error_data=None
            if data is None
            else ErrorData(
                raw=data.get("raw"),
                length=int(data["length"]),
                sha256=str(data["sha256"]),
                redacted=bool(data.get("redacted", False)),
            ),
            first_arrived_at=float(raw["first_arrived_at"]),
            arrived_at=float(raw["arrived_at"]),
            arrivals=int(raw.get("arrivals", 1)),
            replayed_at=None if raw.get("replayed_at") is None else float(raw["replayed_at"]),
            replays=tuple(Replay.from_json(r) for r in raw.get("replays") or ()),
        )


def replay_event(letter: DeadLetter, *, new_id: str | None = None) -> CloudEvent:
    """The event a replay sends: the original, without what the broker added on its way.

    With ``new_id`` it is a deliberate re-run: that id, and ``replayof`` naming the original.
    """
    attributes = {
        name: value
        for name, value in letter.event.attributes.items()
        if name not in _BROKER_ATTRIBUTES
    }
    if new_id is not None:
        attributes[REPLAY_OF] = letter.event.id
        attributes["id"] = new_id
    return CloudEvent(attributes, letter.event.data)


@dataclass(frozen=True, slots=True)
class LetterQuery:
    """Which letters to list (every filter optional; all given ones must hold)."""

    namespace: str | None = None
    broker: str | None = None
    trigger: str | None = None
    type: str | None = None
    event_id: str | None = None
    since: float | None = None  # arrived_at >= since
    before: float | None = None  # arrived_at < before
    replayed: bool | None = None  # True: replayed since the latest arrival; False: waiting
    limit: int = 100
    after: str | None = None  # the ``next`` cursor of the page before

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= 1000:
            raise ValueError(f"limit: {self.limit} is not between 1 and 1000")

    def matches(self, letter: DeadLetter) -> bool:
        """Whether ``letter`` passes every filter (stores that filter in Python use this)."""
        origin = letter.origin
        return (
            (self.namespace is None or origin.namespace == self.namespace)
            and (self.broker is None or origin.broker == self.broker)
            and (self.trigger is None or origin.trigger == self.trigger)
            and (self.type is None or letter.event.type == self.type)
            and (self.event_id is None or letter.event.id == self.event_id)
            and (self.since is None or letter.arrived_at >= self.since)
            and (self.before is None or letter.arrived_at < self.before)
            and (self.replayed is None or (not letter.waiting) == self.replayed)
        )


@dataclass(frozen=True, slots=True)
class LetterPage:
    """One page of letters in arrival order (first arrival), and the cursor of the next."""

    letters: tuple[DeadLetter, ...]
    next: str | None = None  # None: this was the last page
