"""Everything that leaves the handling of one event: the reply, fan-out lists, ``ctx.publish``.

Each outgoing event carries on from the incoming one: the chain id, the handling's trace
context, the broker TTL; a published event's id is derived from the incoming event and its
position, so a retried handler sends the same ids and downstream idempotency drops repeats.
The :class:`Emitter` is what every handling of one agent shares (its identity, the broker
publisher, the reply headers each emitted type shares); an :class:`Outbox` is one handling's.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from agentfn.events import SPEC_VERSION, AttributeValue, CloudEvent, extensions, new_event_id
from agentfn.events.http import binary_headers
from agentfn.functions._answers import Answer, event_answer
from agentfn.functions._tracing import trace_headers
from pydantic import BaseModel

if TYPE_CHECKING:
    from agentfn.functions._publisher import Publisher
    from agentfn.functions._spec import AgentSpec, HandlerSpec
    from opentelemetry.trace import Span

__all__ = ["Emitter", "Outbox", "chain_id_of"]

_PUBLISHED_NAMESPACE: Final = uuid.UUID("a7f3c1d4-2b8e-4c55-8f0e-5d9b1e4c7a21")
_JSON_MEDIA: Final = "application/json"


class Emitter:
    """What the outboxes of one agent share; built once per app."""

    __slots__ = ("agent", "publisher", "reply_headers", "source")

    def __init__(self, spec: AgentSpec, publisher: Publisher) -> None:
        self.agent = spec.name
        self.source = spec.source
        self.publisher = publisher
        # The headers every reply of a type shares, encoded once by the binding; None for a
        # type whose replies all go structured (a value would need percent-encoding).
        self.reply_headers: dict[str, tuple[tuple[bytes, bytes], ...] | None] = {}
        for handler in spec.handlers:
            for event_type in handler.emits:
                shared = binary_headers(
                    {
                        "specversion": SPEC_VERSION,
                        "source": spec.source,
                        "type": event_type,
                        "datacontenttype": _JSON_MEDIA,
                    }
                )
                self.reply_headers[event_type] = None if shared is None else tuple(shared)


class Outbox:
    """The events leaving one handling; the :class:`Context` hands ``ctx.publish`` to it."""

    __slots__ = (
        "_emitter",
        "_published",
        "_trace",
        "chain_id",
        "deadline",
        "event",
        "handler",
        "span",
    )

    def __init__(
        self,
        emitter: Emitter,
        handler: HandlerSpec,
        event: CloudEvent,
        chain_id: str,
        span: Span,
        *,
        deadline: float | None = None,
    ) -> None:
        self._emitter = emitter
        self.handler = handler
        self.event = event
        self.chain_id = chain_id
        self.span = span
        #: When this handling must be done, in :func:`time.monotonic` seconds (the handler's
        #: delivery timeout, or a gRPC caller's deadline if sooner); ``None``: no limit.
        self.deadline = deadline
        self._trace: dict[str, str] | None = None
        self._published = 0

    @property
    def agent(self) -> str:
        return self._emitter.agent

    def trace_carrier(self) -> Mapping[str, str]:
        """``traceparent``/``tracestate`` of this handling, computed once (do not mutate)."""
        if self._trace is None:
            self._trace = trace_headers(self.span)
        return self._trace

    def event_for(
        self, payload: BaseModel | CloudEvent, *, event_type: str | None = None, sequence: int = 0
    ) -> CloudEvent:
        """The event carrying ``payload`` on from this handling.

        ``sequence`` 0 is the reply (a fresh id); 1, 2, ... are published events, whose ids
        are derived from the incoming event so that a retried handler sends the same ones.
        """
        incoming = self.event
        carried: dict[str, object] = {extensions.CHAIN_ID: self.chain_id}
        carried.update(self.trace_carrier())
        ttl = incoming.attributes.get(extensions.KNATIVE_BROKER_TTL)
        if ttl is not None:
            # The broker decrements on the reply path; an event published straight to the
            # ingress skips that, so it loses the hop here.
            carried[extensions.KNATIVE_BROKER_TTL] = (
                ttl if sequence == 0 else extensions.next_hop_ttl(incoming)
            )
        if isinstance(payload, CloudEvent):
            missing = {k: v for k, v in carried.items() if k not in payload.attributes}
            return payload.with_attributes(**missing) if missing else payload
        event_type = _emitted_type(self.handler, payload, event_type)
        if sequence:
            carried["id"] = str(
                uuid.uuid5(
                    _PUBLISHED_NAMESPACE,
                    f"{self._emitter.agent}\n{incoming.source}\n{incoming.id}\n{sequence}",
                )
            )
        return CloudEvent.new(
            event_type, self._emitter.source, payload.model_dump(mode="json"), **carried
        )

    async def publish(
        self, payload: BaseModel | CloudEvent, *, event_type: str | None = None
    ) -> CloudEvent:
        """Send one event to the broker now; the next position in this handling's sequence."""
        event = self.sequenced(payload, event_type=event_type)
        await self._emitter.publisher.publish(event)
        return event

    def sequenced(
        self, payload: BaseModel | CloudEvent, *, event_type: str | None = None
    ) -> CloudEvent:
        """The event at the next position of this handling's sequence (published or streamed).

        Its id is derived from the incoming event and the position, so a retried handler
        yields the same ids again and the receiver can drop what it already has.
        """
        self._published += 1
        return self.event_for(payload, event_type=event_type, sequence=self._published)

    async def fan_out(self, payloads: Sequence[BaseModel | CloudEvent]) -> None:
        """Publish a returned list, concurrently; its positions follow ``ctx.publish``'s."""
        first = self._published
        events = [
            self.event_for(item, sequence=first + n) for n, item in enumerate(payloads, start=1)
        ]
        self._published = first + len(events)
        publisher = self._emitter.publisher
        outcomes = await asyncio.gather(
            *(publisher.publish(event) for event in events), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                # Published ids are derived from the input, so the retry re-sends the same
                # events and downstream idempotency drops the ones that did arrive.
                raise outcome

    def reply(self, payload: BaseModel) -> Answer:
        """The 200 answer carrying ``payload`` as the reply event, built straight as headers.

        The event :meth:`event_for` would build, without a second validation of what is valid
        by construction: type and source were checked when the agent was declared, the chain
        id and trace context come from a validated event or are minted here. A value binary
        mode would percent-encode sends the reply structured instead (the rule of
        :func:`agentfn.events.to_http`), built by :meth:`event_for`.
        """
        shared = self._emitter.reply_headers[_emitted_type(self.handler, payload, None)]
        if shared is not None:
            own: dict[str, AttributeValue] = {
                "id": new_event_id(),
                "time": _now(),
                extensions.CHAIN_ID: self.chain_id,
            }
            own.update(self.trace_carrier())
            ttl = self.event.attributes.get(extensions.KNATIVE_BROKER_TTL)
            if ttl is not None:
                own[extensions.KNATIVE_BROKER_TTL] = ttl
            headers = binary_headers(own)
            if headers is not None:
                headers[:0] = shared
                return 200, headers, payload.__pydantic_serializer__.to_json(payload)
        return event_answer(self.event_for(payload))

    def reply_event(self, event: CloudEvent) -> Answer:
        """The 200 answer carrying a CloudEvent the handler built itself."""
        return event_answer(self.event_for(event))


def chain_id_of(event: CloudEvent) -> str:
    """The chain id ``event`` belongs to; the first agent of a chain derives it from the event.

    Derived, not random, so a retried first agent starts the same chain; hashed over source
    and id because an id is only unique within its source.
    """
    chain = event.attributes.get(extensions.CHAIN_ID)
    if chain is not None:
        return str(chain)
    digest = hashlib.blake2b(f"{event.source}\n{event.id}".encode(), digest_size=16)
    return digest.hexdigest()


def _emitted_type(handler: HandlerSpec, payload: object, event_type: str | None) -> str:
    """The declared type ``payload`` is emitted as; TypeError (a 500) if it is not declared."""
    if not isinstance(payload, BaseModel):
        raise TypeError(f"cannot emit a {type(payload).__name__}; emit a pydantic model")
    if event_type is None:
        found = handler.type_of(type(payload))
        if found is None:
            raise TypeError(
                f"handler {handler.name} emitted {type(payload).__name__}, which is none of "
                f"its emits types {sorted(handler.emits)}"
            )
        return found
    declared = handler.emits.get(event_type)
    if declared is None or not isinstance(payload, declared):
        raise TypeError(
            f"handler {handler.name} does not emit {event_type!r} as {type(payload).__name__}"
        )
    return event_type


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
