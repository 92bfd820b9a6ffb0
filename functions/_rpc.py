"""Calling other agents over gRPC (``agentfn.v1.Agent``): ``ctx.rpc(target)``, :class:`AgentClient`.

A *target* is ``host:port`` (``dns:///host:port`` and the other gRPC target forms too), or a
Knative URL: ``http://planner-rpc.agentfn.svc.cluster.local`` speaks h2c to port 80,
``https://...`` TLS to 443.

Every call has a deadline: the ``timeout`` given, else what is left of the calling handler's
own deadline (its delivery timeout, or its gRPC caller's deadline when sooner), else
``AGENTFN_RPC_TIMEOUT_S``. A given ``timeout`` never outlives the handler's deadline either:
an answer after the handler was cut off is work nobody reads.

Retries are gRPC's own, from the channel's service config (``retryPolicy``): only
``UNAVAILABLE``, up to ``AGENTFN_RPC_MAX_ATTEMPTS`` attempts with exponential backoff
(``AGENTFN_RPC_INITIAL_BACKOFF_S`` times ``AGENTFN_RPC_BACKOFF_MULTIPLIER`` per attempt, capped
at ``AGENTFN_RPC_MAX_BACKOFF_S``, jittered by gRPC), within the call's deadline, and honouring
the server's ``grpc-retry-pushback-ms`` (an agent's server sends it with its ``UNAVAILABLE``).
Other codes are never retried here: ``ABORTED`` (a duplicate still being handled) and the rest
go back to the handler, which the broker retries as a whole.

Each target has the runtime's circuit breaker (``ctx.breakers``, keyed by the target as
given): one call is one verdict, however many attempts gRPC made. ``UNAVAILABLE``,
``DEADLINE_EXCEEDED``, ``RESOURCE_EXHAUSTED``, ``INTERNAL``, ``UNKNOWN`` and ``DATA_LOSS``
count against the target (what a 5xx, 429 or timeout is to ``ctx.http``) and raise
:class:`RpcUnavailableError`, as does ``ABORTED`` (which does not count): a
:class:`RetryableError`, so a handler that lets it through answers 503 and is retried later.
Any other code raises :class:`RpcError` (a bug on one side: the handler answers 500).

Channels are reused: one per target per agent app (so one per process when serving), made on
first use inside the running loop and closed with the app. gRPC multiplexes every call and
stream of a channel over one HTTP/2 connection, and reconnects by itself.

Keep-alive (``AGENTFN_RPC_KEEPALIVE_TIME_S`` 30, ``AGENTFN_RPC_KEEPALIVE_TIMEOUT_S`` 20, pings
also without calls, no cap on pings without data). On Knative a channel's connection ends at
the ingress gateway or the activator, not at the agent's pod: the proxy answers the pings
itself, so they neither keep a pod from scaling to zero nor wait on one starting (a call that
wakes a pod waits in the activator as long as its deadline allows; the pings go on being
answered meanwhile). What they do is find a connection that died silently (an activator or
gateway pod replaced, a NAT or load balancer entry expired: AWS NLB drops idle flows after
350 s, GCP after 600 s) within 30 + 20 s, while idle, instead of on the next call after that
call's whole deadline; and keep idle connections active enough that no middlebox expires
them. 30 s is well under every such idle limit and one 8-byte ping a half-minute per channel
is nothing; 20 s is gRPC's own default timeout, long enough that a proxy busy for a moment is
not mistaken for a dead one (a false positive fails every call on the connection). A gRPC
server with its default policy refuses pings from a client more often than every 5 minutes
when no call is open (``GOAWAY too_many_pings``): an agent's server allows them (pings without
calls, every 5 s at most, never counted as strikes). A :meth:`AgentClient.session` lives at
most as long as Knative's ``timeoutSeconds`` for the request, and a proxy's stream idle
timeout can end a stream nobody writes to: pings keep the connection, not a silent stream.

The OIP inference client (``ctx.infer``) calls model servers by the same rules: it shares this
module's channel pool, deadline, breaker verdicts and status mapping.

grpc is imported on first use, not with this module: an agent that makes no calls never loads
it, and ``agentfn serve`` starts that much sooner.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from agentfn.events import CloudEvent
from agentfn.functions._breaker import CircuitBreakers
from agentfn.functions._errors import UnavailableError
from agentfn.functions.settings import DEFAULT_MAX_BODY_BYTES
from pydantic import BaseModel

from agentfn._lifecycle import Closing

if TYPE_CHECKING:
    from agentfn.functions._spec import HandlerSpec
    from agentfn.functions.settings import Settings

__all__ = [
    "MIN_BACKOFF_S",
    "SERVICE",
    "AgentClient",
    "ChannelPool",
    "RpcError",
    "RpcEvents",
    "RpcPolicy",
    "RpcSession",
    "RpcUnavailableError",
    "call_timeout",
    "counts_against",
    "guarded_call",
    "is_retryable_code",
    "retry_after_of",
    "unavailable_message",
]

T = TypeVar("T")

SERVICE: Final = "agentfn.v1.Agent"
_CALL: Final = f"/{SERVICE}/Call"
_SESSION: Final = f"/{SERVICE}/Session"
#: gRPC 1.85's retry was seen here to stall an attempt until the call's deadline about half
#: the time with a 1 ms backoff (never in hundreds of tries from 3 ms up): a floor well above.
MIN_BACKOFF_S: Final = 0.01
_RPC_NAMESPACE: Final = uuid.UUID("4c0e6f1b-8d3a-4f57-9b2e-71a5d0c3e9f4")
#: Codes that say the target is unwell (counted by its breaker), as 5xx/429/timeouts do.
_FAILURES: Final = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL", "UNKNOWN", "DATA_LOSS"}
)
#: Codes worth the whole event's retry later (the handler answers 503).
_RETRYABLE: Final = _FAILURES | {"ABORTED"}


def counts_against(code: str) -> bool:
    """Whether a call ending with gRPC status ``code`` is a failure of the target (its
    breaker's verdict), as a 5xx, 429 or timeout is over HTTP."""
    return code in _FAILURES


def is_retryable_code(code: str) -> bool:
    """Whether gRPC status ``code`` is worth the whole event's retry later (a 503)."""
    return code in _RETRYABLE


def unavailable_message(
    code: str, details: str, *, retry_after: float | None, attempts: int
) -> str | None:
    """What a retryable ``code`` says to a reader, where the code alone would mislead."""
    if code == "UNAVAILABLE" and retry_after is None:
        # No delay asked for: nothing answered (a server that refuses says how long).
        return f"unreachable (UNAVAILABLE after {attempts} attempts): {details}"
    if code == "DEADLINE_EXCEEDED":
        return f"did not answer within the deadline (DEADLINE_EXCEEDED): {details}"
    return None


def call_timeout(
    timeout: float | None,
    *,
    deadline: float | None,
    now: float,
    default: float,
) -> float:
    """A call's deadline from ``now`` in seconds: ``timeout``, else what is left of the
    caller's ``deadline`` (absolute, in the clock ``now`` was read from), else ``default``;
    a given ``timeout`` never outlives ``deadline``. Zero or less: no time is left."""
    remaining = None if deadline is None else deadline - now
    if timeout is None:
        return default if remaining is None else remaining
    return timeout if remaining is None else min(timeout, remaining)


async def guarded_call(
    breakers: CircuitBreakers,
    destination: str,
    call: Callable[[], Awaitable[T]],
    error: Callable[[str, str, Sequence[tuple[str, str | bytes]] | None], Exception],
) -> T:
    """``await call()`` (one gRPC call) under ``destination``'s breaker: one verdict per call.

    A gRPC error is recorded by its code (:func:`counts_against`) and raised as ``error(code,
    details, trailing metadata)``; a cancelled call gives no verdict, but a half-open probe
    does not keep the only slot.
    """
    import grpc  # noqa: PLC0415 - see the module docstring

    decision = await breakers.acquire(destination)
    try:
        result = await call()
    except grpc.aio.AioRpcError as failure:
        code: str = failure.code().name
        await breakers.record(destination, decision, ok=not counts_against(code))
        raise error(code, failure.details() or "", failure.trailing_metadata()) from failure
    except BaseException:
        if decision.probe:
            await breakers.record(destination, decision, ok=False)
        raise
    await breakers.record(destination, decision, ok=True)
    return result


class RpcError(Exception):
    """A call the target answered with a code no retry fixes (``INVALID_ARGUMENT``, ...)."""

    def __init__(self, target: str, code: str, details: str) -> None:
        super().__init__(f"gRPC target {target} answered {code}: {details}")
        self.target = target
        self.code = code
        self.details = details


class RpcUnavailableError(UnavailableError):
    """The target could not be reached, or answered a code worth retrying later.

    ``code`` is the gRPC status code's name; ``retry_after`` the delay the target asked for
    (its trailing ``retry-after``, else ``grpc-retry-pushback-ms``), if any.
    """

    def __init__(
        self,
        target: str,
        code: str,
        details: str,
        *,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            f"gRPC target {target}",
            message or f"answered {code}: {details}",
            retry_after=retry_after,
        )
        self.target = target
        self.code = code
        self.details = details


@dataclass(frozen=True, slots=True)
class RpcPolicy:
    """How a client's channels call: deadline, retries, keep-alive (module docstring: why)."""

    timeout_s: float = 10.0
    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0
    keepalive_time_s: float = 30.0
    keepalive_timeout_s: float = 20.0
    max_message_bytes: int = DEFAULT_MAX_BODY_BYTES  # what an agent reads over HTTP too
    #: The gRPC service the retry policy is for (an inference client's is OIP's).
    service: str = SERVICE

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= 5:
            # gRPC caps maxAttempts at 5 and would quietly use 5 instead.
            raise ValueError(f"max_attempts must be 1 to 5, got {self.max_attempts}")
        if self.initial_backoff_s < MIN_BACKOFF_S:
            raise ValueError(
                f"initial_backoff_s must be at least {MIN_BACKOFF_S}, got {self.initial_backoff_s}"
            )
        for name in ("timeout_s", "max_backoff_s", "keepalive_time_s", "keepalive_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.backoff_multiplier > 0:
            raise ValueError(f"backoff_multiplier must be positive, got {self.backoff_multiplier}")

    @classmethod
    def from_settings(cls, settings: Settings) -> RpcPolicy:
        return cls(
            timeout_s=settings.rpc_timeout_s,
            max_attempts=settings.rpc_max_attempts,
            initial_backoff_s=settings.rpc_initial_backoff_s,
            max_backoff_s=settings.rpc_max_backoff_s,
            backoff_multiplier=settings.rpc_backoff_multiplier,
            keepalive_time_s=settings.rpc_keepalive_time_s,
            keepalive_timeout_s=settings.rpc_keepalive_timeout_s,
            max_message_bytes=settings.max_body_bytes,
        )

    def service_config(self) -> dict[str, Any]:
        """The gRPC service config: retry ``UNAVAILABLE`` only (of ``service``'s methods), with
        exponential backoff."""
        method: dict[str, Any] = {"name": [{"service": self.service}]}
        if self.max_attempts > 1:
            method["retryPolicy"] = {
                "maxAttempts": self.max_attempts,
                "initialBackoff": _duration(self.initial_backoff_s),
                "maxBackoff": _duration(self.max_backoff_s),
                "backoffMultiplier": self.backoff_multiplier,
                "retryableStatusCodes": ["UNAVAILABLE"],
            }
        return {"methodConfig": [method]}

    def channel_options(self) -> tuple[tuple[str, int | str], ...]:
        return (
            ("grpc.service_config", json.dumps(self.service_config())),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", round(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", round(self.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
        )


def _duration(seconds: float) -> str:
    """A protobuf Duration in JSON (what the service config takes): ``"0.25s"``."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def _address(target: str) -> tuple[str, bool]:
    """The gRPC target of ``target`` and whether it is TLS (a Knative URL or a gRPC target)."""
    for scheme, port, secure in (("http://", 80, False), ("https://", 443, True)):
        if target.startswith(scheme):
            host = target[len(scheme) :].split("/", 1)[0]
            if not host:
                raise ValueError(f"no host in gRPC target {target!r}")
            has_port = host.rsplit(":", 1)[-1].isdigit() and not host.endswith("]")
            return (host if has_port else f"{host}:{port}"), secure
    if not target:
        raise ValueError("empty gRPC target")
    return target, False


class _Channel:
    """One target's channel and the two methods of the Agent service on it."""

    __slots__ = ("call", "channel", "session")

    def __init__(self, channel: Any) -> None:
        from agentfn.events.proto import agent_pb2, cloudevents_pb2  # noqa: PLC0415

        self.channel = channel
        message = cloudevents_pb2.CloudEvent
        self.call = channel.unary_unary(
            _CALL,
            request_serializer=message.SerializeToString,
            response_deserializer=agent_pb2.Reply.FromString,
            _registered_method=True,
        )
        self.session = channel.stream_stream(
            _SESSION,
            request_serializer=message.SerializeToString,
            response_deserializer=message.FromString,
            _registered_method=True,
        )


class _Open:
    """One open channel and what is bound to it (stubs, keyed by what made them)."""

    __slots__ = ("bound", "channel")

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.bound: dict[Callable[[Any], Any], Any] = {}


class ChannelPool(Closing):
    """One gRPC channel per target and policy, made on first use (in the running loop), closed
    together.

    ``policy`` is the agents' (``ctx.rpc``); a client of another service (an inference
    server's) passes its own, whose retry policy names that service: such a channel is kept
    apart from an agent channel to the same target.
    """

    def __init__(self, policy: RpcPolicy | None = None) -> None:
        self.policy = policy or RpcPolicy()
        self._channels: dict[tuple[str, RpcPolicy], _Open] = {}

    def _open(self, target: str, policy: RpcPolicy | None) -> _Open:
        policy = policy or self.policy
        found = self._channels.get((target, policy))
        if found is None:
            import grpc  # noqa: PLC0415 - see the module docstring

            address, secure = _address(target)
            options = policy.channel_options()
            channel = (
                grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(), options=options)
                if secure
                else grpc.aio.insecure_channel(address, options=options)
            )
            found = self._channels[target, policy] = _Open(channel)
        return found

    def bind(self, target: str, make: Callable[[Any], T], *, policy: RpcPolicy | None = None) -> T:
        """``make(channel)`` for ``target``'s channel (a generated stub class, say), made once
        per channel and kept with it."""
        opened = self._open(target, policy)
        found: T | None = opened.bound.get(make)
        if found is None:
            found = opened.bound[make] = make(opened.channel)
        return found

    def methods(self, target: str) -> _Channel:
        """The channel to ``target`` with the Agent service's two methods bound to it."""
        return self.bind(target, _Channel)

    def channel(self, target: str, *, policy: RpcPolicy | None = None) -> Any:
        """The ``grpc.aio.Channel`` to ``target`` (the same one every time until closed)."""
        return self._open(target, policy).channel

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(target for target, _ in self._channels))

    async def aclose(self) -> None:
        channels, self._channels = self._channels, {}
        for found in channels.values():
            await found.channel.close()


class RpcEvents:
    """The events one handling sends over gRPC, carrying its chain and trace on.

    A model becomes an event of the agent's source; its id is derived from the incoming event,
    the target and its position among this handling's calls, so a retried handler sends the
    same ids and the target answers a repeat with the reply it stored, running nothing twice.
    """

    __slots__ = ("_agent", "_carried", "_count", "_handler", "_incoming", "_source")

    def __init__(
        self,
        agent: str,
        source: str,
        *,
        incoming: CloudEvent | None = None,
        handler: HandlerSpec | None = None,
        carried: Mapping[str, str] | None = None,
    ) -> None:
        self._agent = agent
        self._source = source
        self._incoming = incoming
        self._handler = handler
        self._carried = carried or {}
        self._count = 0

    def event_for(
        self, target: str, payload: BaseModel | CloudEvent, event_type: str | None
    ) -> CloudEvent:
        if isinstance(payload, CloudEvent):
            missing = {k: v for k, v in self._carried.items() if k not in payload.attributes}
            return payload.with_attributes(**missing) if missing else payload
        if not isinstance(payload, BaseModel):
            raise TypeError(f"cannot send a {type(payload).__name__}; send a pydantic model")
        if event_type is None and self._handler is not None:
            event_type = self._handler.type_of(type(payload))
        if event_type is None:
            raise TypeError(
                f"no event type for {type(payload).__name__}: pass type=... (or declare it "
                "in the handler's emits)"
            )
        attributes: dict[str, object] = dict(self._carried)
        incoming = self._incoming
        if incoming is not None:
            self._count += 1
            attributes["id"] = str(
                uuid.uuid5(
                    _RPC_NAMESPACE,
                    f"{self._agent}\n{incoming.source}\n{incoming.id}\n{target}\n{self._count}",
                )
            )
        return CloudEvent.new(
            event_type, self._source, payload.model_dump(mode="json"), **attributes
        )


class AgentClient:
    """Calls one target's ``agentfn.v1.Agent`` service (module docstring: deadlines, retries).

    Standalone (a script, a test): ``async with AgentClient("localhost:9090") as client``,
    which owns its channel; inside a handler use ``ctx.rpc(target)``, which shares the app's
    channels and breakers and carries the handling's chain, trace and deadline.
    ``deadline`` is absolute, in ``clock`` seconds (:func:`time.monotonic`).
    """

    __slots__ = (
        "_breakers",
        "_channels",
        "_clock",
        "_deadline",
        "_events",
        "_metadata",
        "_owns",
        "target",
    )

    def __init__(
        self,
        target: str,
        *,
        channels: ChannelPool | None = None,
        breakers: CircuitBreakers | None = None,
        policy: RpcPolicy | None = None,
        source: str = "/agentfn/client",
        events: RpcEvents | None = None,
        deadline: float | None = None,
        metadata: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _address(target)  # a malformed target fails here, not on the first call
        self.target = target
        self._owns = channels is None
        self._channels = channels if channels is not None else ChannelPool(policy)
        self._breakers = breakers if breakers is not None else CircuitBreakers()
        self._events = events if events is not None else RpcEvents("client", source)
        self._deadline = deadline
        self._metadata: tuple[tuple[str, str], ...] = tuple((metadata or {}).items())
        self._clock = clock

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the channel if this client made it (``ctx.rpc``'s belong to the app)."""
        if self._owns:
            await self._channels.aclose()

    @property
    def deadline(self) -> float | None:
        """The absolute deadline (``clock`` seconds) no call outlives; ``None``: none."""
        return self._deadline

    def timeout(self, timeout: float | None = None) -> float:
        """The deadline of a call from now, in seconds (module docstring: which one)."""
        return call_timeout(
            timeout,
            deadline=self._deadline,
            now=self._clock(),
            default=self._channels.policy.timeout_s,
        )

    def _timeout_or_raise(self, timeout: float | None) -> float:
        seconds = self.timeout(timeout)
        if seconds <= 0:
            error = RpcUnavailableError(
                self.target,
                "DEADLINE_EXCEEDED",
                "the calling handler's deadline has passed",
                message="not called: the calling handler's deadline has passed",
            )
            raise error from TimeoutError()
        return seconds

    async def call(
        self,
        payload: BaseModel | CloudEvent,
        *,
        type: str | None = None,
        timeout: float | None = None,
    ) -> CloudEvent | None:
        """Send one event (a model becomes one of ``type``); the target's reply, or ``None``."""
        from agentfn.events.protobuf import from_protobuf, to_protobuf  # noqa: PLC0415

        message = to_protobuf(self._events.event_for(self.target, payload, type))
        seconds = self._timeout_or_raise(timeout)
        method = self._channels.methods(self.target).call
        reply = await guarded_call(
            self._breakers,
            self.target,
            lambda: method(message, timeout=seconds, metadata=self._metadata),
            self.error,
        )
        return from_protobuf(reply.event) if reply.HasField("event") else None

    def error(
        self, code: str, details: str, trailing: Sequence[tuple[str, str | bytes]] | None
    ) -> Exception:
        """The exception for a call that ended with ``code`` (no breaker bookkeeping)."""
        if not is_retryable_code(code):
            return RpcError(self.target, code, details)
        retry_after = retry_after_of(trailing)
        message = unavailable_message(
            code, details, retry_after=retry_after, attempts=self._channels.policy.max_attempts
        )
        return RpcUnavailableError(
            self.target, code, details, message=message, retry_after=retry_after
        )

    @asynccontextmanager
    async def session(self, *, timeout: float | None = None) -> AsyncIterator[RpcSession]:
        """A ``Session`` stream for the block: ``send`` events, ``recv`` (or iterate) replies.

        The deadline (``timeout``, else the handler's or the default, as for :meth:`call`)
        bounds the whole stream. The breaker is asked once, when the stream opens, and how the
        stream ended is its verdict. Leaving the block cancels a stream still open.
        """
        seconds = self._timeout_or_raise(timeout)
        method = self._channels.methods(self.target).session
        decision = await self._breakers.acquire(self.target)
        stream = method(timeout=seconds, metadata=self._metadata)
        session = RpcSession(self, stream)
        try:
            yield session
        except BaseException:
            stream.cancel()
            if session.code is not None:
                ok = not counts_against(session.code)
                await self._breakers.record(self.target, decision, ok=ok)
            elif decision.probe:
                # No verdict on the target, but a probe must not keep the only slot.
                await self._breakers.record(self.target, decision, ok=False)
            raise
        stream.cancel()
        ok = session.code is None or not counts_against(session.code)
        await self._breakers.record(self.target, decision, ok=ok)


class RpcSession:
    """One open ``Session`` stream (from :meth:`AgentClient.session`).

    A stream the target ended with an error raises, from the next ``send``/``recv``, what
    :meth:`AgentClient.call` would raise for that code; ``code`` is then its name.
    """

    __slots__ = ("_client", "_stream", "code")

    def __init__(self, client: AgentClient, stream: Any) -> None:
        self._client = client
        self._stream = stream
        self.code: str | None = None

    async def send(self, payload: BaseModel | CloudEvent, *, type: str | None = None) -> CloudEvent:
        """Send one event (a model becomes one of ``type``); returns the event sent."""
        from agentfn.events.protobuf import to_protobuf  # noqa: PLC0415

        client = self._client
        event = client._events.event_for(client.target, payload, type)
        await self._call(self._stream.write(to_protobuf(event)))
        return event

    async def done_writing(self) -> None:
        """No more events from this side; replies can still be read."""
        await self._call(self._stream.done_writing())

    async def recv(self) -> CloudEvent | None:
        """The next event the target sent, or ``None`` once it ended the stream."""
        import grpc  # noqa: PLC0415 - see the module docstring
        from agentfn.events.protobuf import from_protobuf  # noqa: PLC0415

        message = await self._call(self._stream.read())
        if message is grpc.aio.EOF:
            return None
        return from_protobuf(message)

    async def __aiter__(self) -> AsyncIterator[CloudEvent]:
        while (event := await self.recv()) is not None:
            yield event

    async def _call(self, pending: Any) -> Any:
        import grpc  # noqa: PLC0415 - see the module docstring

        try:
            return await pending
        except grpc.aio.AioRpcError as error:
            self.code = error.code().name
            raise self._client.error(
                self.code, error.details() or "", error.trailing_metadata()
            ) from error


def retry_after_of(trailing: Sequence[tuple[str, str | bytes]] | None) -> float | None:
    """The delay a target's trailing metadata asks for: ``retry-after`` s, else pushback ms."""
    if not trailing:
        return None
    found = dict(trailing)
    for key, scale in (("retry-after", 1.0), ("grpc-retry-pushback-ms", 0.001)):
        value = found.get(key)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if seconds >= 0:
            return seconds
    return None
