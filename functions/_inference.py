"""Calling model servers over the Open Inference Protocol v2: ``ctx.infer(model)``,
:class:`InferenceClient`.

A *target* says where a model is served and how to speak to it: ``http://host:8080`` (or
``https://``, with a path prefix if the server sits under one) is OIP REST
(``POST /v2/models/<model>/infer``), ``grpc://host:8081`` (``grpcs://`` for TLS, or any
bare gRPC target such as ``host:port``) is OIP gRPC (``inference.GRPCInferenceService``).
Inside a handler the target comes from ``AGENTFN_INFERENCE_TARGETS`` by the model's name.

Every call has a deadline, chosen as ``ctx.rpc``'s is: the ``timeout`` given, else what is
left of the calling handler's own deadline, else ``AGENTFN_INFERENCE_TIMEOUT_S``; a given
``timeout`` never outlives the handler's deadline.

Retries are for a server that could not take the call, within the deadline, up to
``AGENTFN_INFERENCE_MAX_ATTEMPTS`` attempts in all. Over gRPC they are gRPC's own, from the
channel's service config (``retryPolicy`` on ``UNAVAILABLE``, as for agent calls). Over REST
this module does the same: a 502, 503 or 504 answer or a failed connection is tried again
after ``random(0, min(initial * multiplier ** (n - 1), max))`` seconds (gRPC's backoff), or
after the server's ``Retry-After`` when it sends one; a wait that would end past the deadline
is not waited: the call fails at once, keeping the server's delay for the broker's retry.
Nothing else is retried here (a 500 is the model failing, which the event's later retry may
or may not fix).

Each target has the runtime's circuit breaker (``ctx.breakers``, keyed by the target as
given): one call is one verdict, however many attempts it took. A target that did not answer
in time, could not be reached, or answered 5xx, 429 (gRPC: the codes ``ctx.rpc`` counts)
counts against it and raises :class:`InferenceUnavailableError`, a :class:`RetryableError`:
a handler that lets it through answers 503 and the broker retries the event later. A
refusal, REST 4xx (400 for a bad tensor) or a gRPC code such as ``INVALID_ARGUMENT``, raises
:class:`InferenceError` with the server's message and says nothing against the target.

gRPC channels are the app's (:class:`ChannelPool`, one per target, kept apart from agent
channels by their retry policy); REST calls use the app's aiohttp session.

The kserve SDK (its OIP types and generated gRPC stubs; ``agentfn[inference-client]``) is
imported on the first call that needs it, never with this module: an agent that does not infer
never loads it, and :meth:`InferenceClient.embed` over REST (plain OIP REST) never needs it.
"""

from __future__ import annotations

import array
import asyncio
import json
import random
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn

from agentfn.events import parse_retry_after
from agentfn.functions._breaker import CircuitBreakers
from agentfn.functions._errors import UnavailableError
from agentfn.functions._publisher import SessionPool
from agentfn.functions._rpc import (
    ChannelPool,
    RpcPolicy,
    call_timeout,
    guarded_call,
    is_retryable_code,
    retry_after_of,
    unavailable_message,
)
from agentfn.functions.settings import Settings

if TYPE_CHECKING:
    from kserve.protocol.infer_type import InferRequest, InferResponse

__all__ = [
    "EMBEDDING_OUTPUT",
    "INFERENCE_SERVICE",
    "RETRIED_STATUSES",
    "TEXT_INPUT",
    "InferenceAttempt",
    "InferenceClient",
    "InferenceError",
    "InferenceOutputError",
    "InferenceUnavailableError",
    "inference_policy",
]

INFERENCE_SERVICE: Final = "inference.GRPCInferenceService"
#: What a REST call is tried again on: a proxy or a server that could not take it now.
RETRIED_STATUSES: Final = frozenset({502, 503, 504})
#: The tensors of an embedding model (the model server's contract).
TEXT_INPUT: Final = "text"
EMBEDDING_OUTPUT: Final = "embedding"
#: OIP REST's binary extension: the length of the JSON part before the raw tensors.
_HEADER_LENGTH: Final = "inference-header-content-length"

Protocol = Literal["rest", "grpc"]


class InferenceError(Exception):
    """The model server refused the call for good: no retry fixes it.

    ``code`` is the gRPC status code's name, or the HTTP status over REST (``"400"``, with
    ``status`` 400); ``message`` is what the server said.
    """

    def __init__(
        self,
        target: str,
        code: str,
        message: str,
        *,
        status: int | None = None,
        summary: str | None = None,
    ) -> None:
        super().__init__(f"model server {target} {summary or f'answered {code}'}: {message}")
        self.target = target
        self.code = code
        self.message = message
        self.status = status


class InferenceOutputError(InferenceError):
    """The server answered, but not with the tensors the call asked for (name, type, shape);
    ``code`` is ``"OUTPUT"``."""

    def __init__(self, target: str, message: str) -> None:
        super().__init__(target, "OUTPUT", message, summary="answered an unusable output")


class InferenceUnavailableError(UnavailableError):
    """The model server could not be reached in time, or answered that it cannot take the call.

    ``code``: the gRPC status code's name, the HTTP status over REST (``"503"``), or
    ``UNAVAILABLE`` / ``DEADLINE_EXCEEDED`` for a REST call that reached nobody or timed out;
    ``retry_after``: the delay the server asked for, if any.
    """

    def __init__(
        self,
        target: str,
        code: str,
        details: str,
        *,
        message: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            f"model server {target}",
            message or f"answered {code}: {details}",
            status=status,
            retry_after=retry_after,
        )
        self.target = target
        self.code = code
        self.details = details


@dataclass(frozen=True, slots=True)
class InferenceAttempt:
    """One attempt of a call and what the client decided after it (``on_attempt`` sees each).

    ``outcome``: ``"200"``/``"503"``... (REST status), ``"unreachable"``, ``"timeout"``, or a
    gRPC code's name (a gRPC call is one record: its attempts are gRPC's own). ``wait_s``:
    the delay before the next attempt, ``None`` when there is none. ``reason``:
    ``"answered"``, ``"refused"`` (not worth retrying), ``"not retried"`` (a 5xx or 429 other
    than 502-504), ``"backoff"`` or ``"retry-after"`` (retrying after ``wait_s``),
    ``"attempts"`` (none left), ``"deadline"`` (the wait would end past it, or it passed),
    ``"unavailable"`` (gRPC: a retryable code after gRPC's retries).
    """

    protocol: Protocol
    number: int
    timeout_s: float
    outcome: str
    reason: str
    wait_s: float | None = None


def inference_policy(settings: Settings) -> RpcPolicy:
    """The inference client's channel policy: its own deadline and retries, OIP's service."""
    return RpcPolicy(
        timeout_s=settings.inference_timeout_s,
        max_attempts=settings.inference_max_attempts,
        initial_backoff_s=settings.inference_initial_backoff_s,
        max_backoff_s=settings.inference_max_backoff_s,
        backoff_multiplier=settings.inference_backoff_multiplier,
        keepalive_time_s=settings.rpc_keepalive_time_s,
        keepalive_timeout_s=settings.rpc_keepalive_timeout_s,
        max_message_bytes=settings.max_body_bytes,
        service=INFERENCE_SERVICE,
    )


def _default_policy() -> RpcPolicy:
    """A standalone client's: the settings' defaults, the environment not read (only an
    app reads it, once)."""
    return inference_policy(Settings.model_construct())


def _parse_target(target: str) -> tuple[Protocol, str]:
    """How to reach ``target``: REST and its base URL, or gRPC and a :class:`ChannelPool` target."""
    lowered = target.lower()
    if lowered.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(target)
        if not parts.hostname:
            raise ValueError(f"no host in inference target {target!r}")
        return "rest", target.rstrip("/")
    for scheme, prefix in (("grpc://", ""), ("grpcs://", "https://")):
        if lowered.startswith(scheme):
            address = target[len(scheme) :].rstrip("/")
            if not address:
                raise ValueError(f"no host in inference target {target!r}")
            # The pool dials a bare gRPC target in the clear and an https:// one over TLS.
            return "grpc", prefix + address
    if not target:
        raise ValueError("empty inference target")
    return "grpc", target


def _full_jitter(cap: float) -> float:
    return random.uniform(0.0, cap)  # noqa: S311 - spreading retries, not a secret


class InferenceClient:
    """Calls one model on one model server over OIP v2 (module docstring: deadlines, retries).

    Standalone (a script, a test): ``async with InferenceClient("all-minilm-l6-v2",
    "grpc://localhost:8081") as client``, which owns its channel and session; inside a
    handler use ``ctx.infer(model)``, which shares the app's channels, session and breakers
    and carries the handling's trace and deadline. ``deadline`` is absolute, in ``clock``
    seconds (:func:`time.monotonic`). ``jitter(cap)`` picks a REST backoff wait up to ``cap``;
    ``on_attempt`` sees a record of every attempt and the decision after it.
    """

    __slots__ = (
        "_address",
        "_breakers",
        "_channels",
        "_clock",
        "_deadline",
        "_jitter",
        "_metadata",
        "_on_attempt",
        "_owns_channels",
        "_owns_sessions",
        "_policy",
        "_sessions",
        "model",
        "protocol",
        "target",
    )

    def __init__(
        self,
        model: str,
        target: str,
        *,
        channels: ChannelPool | None = None,
        sessions: SessionPool | None = None,
        breakers: CircuitBreakers | None = None,
        policy: RpcPolicy | None = None,
        deadline: float | None = None,
        metadata: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[float], float] = _full_jitter,
        on_attempt: Callable[[InferenceAttempt], None] | None = None,
    ) -> None:
        if not model:
            raise ValueError("empty model name")
        self.model = model
        self.target = target
        self.protocol, self._address = _parse_target(target)
        self._policy = policy or _default_policy()
        self._owns_channels = channels is None
        self._channels = channels if channels is not None else ChannelPool(self._policy)
        self._owns_sessions = sessions is None
        self._sessions = (
            sessions if sessions is not None else SessionPool(timeout_s=self._policy.timeout_s)
        )
        self._breakers = breakers if breakers is not None else CircuitBreakers()
        self._deadline = deadline
        self._metadata: tuple[tuple[str, str], ...] = tuple((metadata or {}).items())
        self._clock = clock
        self._jitter = jitter
        self._on_attempt = on_attempt

    async def __aenter__(self) -> InferenceClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the channel and session this client made (``ctx.infer``'s are the app's)."""
        if self._owns_channels:
            await self._channels.aclose()
        if self._owns_sessions:
            await self._sessions.aclose()

    @property
    def deadline(self) -> float | None:
        """The absolute deadline (``clock`` seconds) no call outlives; ``None``: none."""
        return self._deadline

    def timeout(self, timeout: float | None = None) -> float:
        """The deadline of a call from now, in seconds (module docstring: which one)."""
        return call_timeout(
            timeout, deadline=self._deadline, now=self._clock(), default=self._policy.timeout_s
        )

    def _timeout_or_raise(self, timeout: float | None) -> float:
        seconds = self.timeout(timeout)
        if seconds <= 0:
            error = InferenceUnavailableError(
                self.target,
                "DEADLINE_EXCEEDED",
                "the calling handler's deadline has passed",
                message="not called: the calling handler's deadline has passed",
            )
            raise error from TimeoutError()
        return seconds

    # -- the calls -----------------------------------------------------------------------------

    async def embed(
        self, texts: Sequence[str], *, timeout: float | None = None
    ) -> list[list[float]]:
        """The embedding of each text, in order (one call, however many texts).

        Sends ``text`` (BYTES, shape ``[N]``) and checks the answer is ``embedding``, FP32,
        shape ``[N, dimensions]`` (else :class:`InferenceOutputError`). No texts: no call.
        """
        if isinstance(texts, str | bytes):
            raise TypeError("embed takes a sequence of texts, not one string")
        batch = list(texts)
        if not batch:
            return []
        if not all(isinstance(text, str) for text in batch):
            raise TypeError("embed takes texts (str)")
        if self.protocol == "rest":
            # Plain OIP JSON, not kserve's types: an agent embedding over REST (the way a
            # Trigger's InferenceService is reached in a cluster) needs no kserve installed and
            # pays no kserve import (about a second and a half) on its first call. The answer
            # is asked for as OIP's binary tensor data: kserve's REST route turns a JSON answer
            # into its response value by value (14 ms for 32 embeddings on two cores), raw
            # float32 it passes through. A server without the extension answers JSON: read too.
            seconds = self._timeout_or_raise(timeout)
            tensor = {"name": TEXT_INPUT, "shape": [len(batch)], "datatype": "BYTES", "data": batch}
            body = {"inputs": [tensor], "parameters": {"binary_data_output": True}}
            content, length = await self._post_rest(
                json.dumps(body).encode(), {"Content-Type": "application/json"}, seconds
            )
            return _rest_embeddings(self.target, content, length, len(batch))
        kserve = _kserve()
        text = kserve.InferInput(name=TEXT_INPUT, shape=[len(batch)], datatype="BYTES", data=batch)
        response = await self.infer(kserve.InferRequest(self.model, [text]), timeout=timeout)
        return self._embeddings(response, len(batch))

    async def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        """One OIP inference of this client's model (``request.model_name`` is not used)."""
        seconds = self._timeout_or_raise(timeout)
        if self.protocol == "grpc":
            return await self._infer_grpc(request, seconds)
        return await self._infer_rest(request, seconds)

    async def ready(self, *, timeout: float | None = None) -> bool:
        """Whether the server says the model is ready (``/v2/models/<model>/ready``,
        ``ModelReady``); ``False`` when it cannot be reached. A health check: no retries, and
        the breaker neither asked nor told."""
        seconds = self.timeout(timeout)
        if seconds <= 0:
            return False
        if self.protocol == "grpc":
            import grpc  # noqa: PLC0415 - see the module docstring

            pb2 = _kserve_module("kserve.protocol.grpc.grpc_predict_v2_pb2")
            message = pb2.ModelReadyRequest(name=self.model)
            try:
                reply = await self._stub().ModelReady(
                    message, timeout=seconds, metadata=self._metadata
                )
            except grpc.aio.AioRpcError:
                return False
            return bool(reply.ready)
        import aiohttp  # noqa: PLC0415 - see the module docstring

        url = f"{self._address}/v2/models/{urllib.parse.quote(self.model, safe='')}/ready"
        try:
            async with self._sessions.get().get(
                url, headers=dict(self._metadata), timeout=aiohttp.ClientTimeout(total=seconds)
            ) as reply:
                await reply.read()
                return reply.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    # -- gRPC ----------------------------------------------------------------------------------

    def _stub(self) -> Any:
        stubs = _kserve_module("kserve.protocol.grpc.grpc_predict_v2_pb2_grpc")
        return self._channels.bind(
            self._address, stubs.GRPCInferenceServiceStub, policy=self._policy
        )

    async def _infer_grpc(self, request: InferRequest, seconds: float) -> InferResponse:
        kserve = _kserve()
        message = request.to_grpc()
        message.model_name = self.model
        method = self._stub().ModelInfer

        def failed(
            code: str, details: str, trailing: Sequence[tuple[str, str | bytes]] | None
        ) -> Exception:
            reason = "unavailable" if is_retryable_code(code) else "refused"
            self._record(InferenceAttempt("grpc", 1, seconds, code, reason))
            return self._grpc_error(code, details, trailing)

        reply = await guarded_call(
            self._breakers,
            self.target,
            lambda: method(message, timeout=seconds, metadata=self._metadata),
            failed,
        )
        self._record(InferenceAttempt("grpc", 1, seconds, "OK", "answered"))
        return kserve.InferResponse.from_grpc(reply)

    def _grpc_error(
        self, code: str, details: str, trailing: Sequence[tuple[str, str | bytes]] | None
    ) -> Exception:
        if not is_retryable_code(code):
            return InferenceError(self.target, code, details)
        retry_after = retry_after_of(trailing)
        message = unavailable_message(
            code, details, retry_after=retry_after, attempts=self._policy.max_attempts
        )
        return InferenceUnavailableError(
            self.target, code, details, message=message, retry_after=retry_after
        )

    # -- REST ----------------------------------------------------------------------------------

    async def _infer_rest(self, request: InferRequest, seconds: float) -> InferResponse:
        body, json_length = request.to_rest()
        if json_length is None:
            data = json.dumps(body).encode()
            headers = {"Content-Type": "application/json"}
        else:
            data = body
            headers = {_HEADER_LENGTH: str(json_length), "Content-Type": "application/octet-stream"}
        content, length = await self._post_rest(data, headers, seconds)
        try:
            return _kserve().InferResponse.from_bytes(content, length)
        except (ValueError, KeyError, TypeError) as error:
            raise InferenceOutputError(self.target, f"unreadable answer: {error}") from error

    async def _post_rest(
        self, data: bytes, content_headers: Mapping[str, str], seconds: float
    ) -> tuple[bytes, int]:
        """POST an inference request under the breaker; the answer and its JSON part's length."""
        headers = {**dict(self._metadata), **content_headers}
        url = f"{self._address}/v2/models/{urllib.parse.quote(self.model, safe='')}/infer"
        deadline = self._clock() + seconds
        decision = await self._breakers.acquire(self.target)
        try:
            content, length = await self._attempts(url, data, headers, deadline)
        except InferenceUnavailableError:
            await self._breakers.record(self.target, decision, ok=False)
            raise
        except InferenceError:
            # A refusal says nothing against the target: it answered (a probe closes).
            await self._breakers.record(self.target, decision, ok=True)
            raise
        except BaseException:
            # Cancelled: no verdict on the target, but a probe must not keep the only slot.
            if decision.probe:
                await self._breakers.record(self.target, decision, ok=False)
            raise
        await self._breakers.record(self.target, decision, ok=True)
        return content, length

    async def _attempts(
        self, url: str, data: bytes, headers: dict[str, str], deadline: float
    ) -> tuple[bytes, int]:
        """POST until an answer, a refusal, or no attempt or time left (module docstring)."""
        import aiohttp  # noqa: PLC0415 - see the module docstring

        policy = self._policy
        session = self._sessions.get()
        number = 0
        while True:
            number += 1
            timeout_s = deadline - self._clock()
            if timeout_s <= 0:  # only after a wait: the first attempt's time was checked
                raise InferenceUnavailableError(
                    self.target, "DEADLINE_EXCEEDED", "no time left for another attempt"
                )
            retry_after: float | None = None
            try:
                async with session.post(
                    url,
                    data=data,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout_s),
                ) as reply:
                    status = reply.status
                    content = await reply.read()
                    length = reply.headers.get(_HEADER_LENGTH)
                    asked = reply.headers.get("Retry-After")
            except TimeoutError as error:
                self._record(InferenceAttempt("rest", number, timeout_s, "timeout", "deadline"))
                raise InferenceUnavailableError(
                    self.target,
                    "DEADLINE_EXCEEDED",
                    f"no answer within {timeout_s:.3f}s",
                    message=f"did not answer within the deadline (attempt {number})",
                ) from error
            except aiohttp.ClientError as error:
                outcome = "unreachable"
                failure = InferenceUnavailableError(
                    self.target,
                    "UNAVAILABLE",
                    repr(error),
                    message=f"unreachable (after {number} attempts): {error!r}",
                )
                cause: BaseException | None = error
            else:
                outcome = str(status)
                if 200 <= status < 300:
                    self._record(InferenceAttempt("rest", number, timeout_s, outcome, "answered"))
                    return content, int(length) if length else len(content)
                said = _error_message(content)
                if status not in RETRIED_STATUSES and status < 500 and status != 429:
                    self._record(InferenceAttempt("rest", number, timeout_s, outcome, "refused"))
                    raise InferenceError(self.target, outcome, said, status=status)
                retry_after = parse_retry_after(asked)
                failure = InferenceUnavailableError(
                    self.target,
                    outcome,
                    said,
                    message=f"answered {status} (attempt {number}): {said}",
                    status=status,
                    retry_after=retry_after,
                )
                cause = None
                if status not in RETRIED_STATUSES:
                    self._record(
                        InferenceAttempt("rest", number, timeout_s, outcome, "not retried")
                    )
                    raise failure
            if number >= policy.max_attempts:
                self._record(InferenceAttempt("rest", number, timeout_s, outcome, "attempts"))
                raise failure from cause
            if retry_after is not None:
                wait, reason = retry_after, "retry-after"
            else:
                cap = min(
                    policy.initial_backoff_s * policy.backoff_multiplier ** (number - 1),
                    policy.max_backoff_s,
                )
                wait, reason = self._jitter(cap), "backoff"
            if wait >= deadline - self._clock():
                self._record(InferenceAttempt("rest", number, timeout_s, outcome, "deadline"))
                raise failure from cause
            self._record(InferenceAttempt("rest", number, timeout_s, outcome, reason, wait))
            await asyncio.sleep(wait)

    # -- answers -------------------------------------------------------------------------------

    def _record(self, attempt: InferenceAttempt) -> None:
        if self._on_attempt is not None:
            self._on_attempt(attempt)

    def _embeddings(self, response: InferResponse, count: int) -> list[list[float]]:
        outputs = list(response.outputs)
        found = next((o for o in outputs if o.name == EMBEDDING_OUTPUT), None)
        if found is None:
            _no_embedding(self.target, [o.name for o in outputs])
        _check_embedding(self.target, found.datatype, found.shape, count)
        try:
            array = found.as_numpy()
        except ValueError as error:  # kserve's InvalidInput is one; so is a failed reshape
            raise InferenceOutputError(self.target, f"{EMBEDDING_OUTPUT!r}: {error}") from error
        rows: list[list[float]] = array.tolist()
        return rows


def _no_embedding(target: str, names: Sequence[object]) -> NoReturn:
    listed = ", ".join(repr(name) for name in names) or "none"
    raise InferenceOutputError(target, f"no output tensor {EMBEDDING_OUTPUT!r} (outputs: {listed})")


def _check_embedding(target: str, datatype: object, shape: object, count: int) -> list[int]:
    """The shape of an ``embedding`` output, checked to be FP32 ``[count, dimensions]``."""
    if datatype != "FP32":
        raise InferenceOutputError(target, f"{EMBEDDING_OUTPUT!r} is {datatype}, not FP32")
    try:
        dims = [int(n) for n in shape]  # type: ignore[attr-defined]
    except (TypeError, ValueError) as error:
        raise InferenceOutputError(target, f"{EMBEDDING_OUTPUT!r}: shape {shape!r}") from error
    if len(dims) != 2 or dims[0] != count or dims[1] < 1:
        raise InferenceOutputError(
            target,
            f"{EMBEDDING_OUTPUT!r} has shape {dims}, not [{count}, dimensions] for {count} texts",
        )
    return dims


def _rest_embeddings(target: str, content: bytes, length: int, count: int) -> list[list[float]]:
    """The rows of an OIP REST answer's ``embedding`` output: JSON data (flat or nested), or
    binary tensor data after the ``length`` bytes of JSON (OIP's binary extension)."""
    try:
        answer = json.loads(content[:length])
        outputs = answer["outputs"]
        found = next((o for o in outputs if o.get("name") == EMBEDDING_OUTPUT), None)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InferenceOutputError(target, f"unreadable answer: {error!r}") from error
    if found is None:
        _no_embedding(target, [o.get("name") for o in outputs])
    rows, width = _check_embedding(target, found.get("datatype"), found.get("shape"), count)
    data = found.get("data")
    if data is None:
        raw = _binary_part(target, content, length, outputs, found)
        return _float32_rows(target, raw, rows, width)
    if not isinstance(data, list):
        raise InferenceOutputError(target, f"{EMBEDDING_OUTPUT!r} carries no tensor data")
    flat = [v for row in data for v in row] if data and isinstance(data[0], list) else data
    if len(flat) != rows * width or not all(isinstance(v, int | float) for v in flat):
        raise InferenceOutputError(
            target, f"{EMBEDDING_OUTPUT!r}: {len(flat)} values for shape [{rows}, {width}]"
        )
    return [[float(v) for v in flat[i * width : (i + 1) * width]] for i in range(rows)]


def _binary_size(target: str, output: Mapping[str, Any]) -> int:
    """The bytes of ``output``'s binary tensor data (its ``binary_data_size``)."""
    size = (output.get("parameters") or {}).get("binary_data_size")
    if not isinstance(size, int) or size < 0:
        raise InferenceOutputError(
            target, f"output {output.get('name')!r} has neither data nor binary_data_size"
        )
    return size


def _binary_part(
    target: str,
    content: bytes,
    length: int,
    outputs: Sequence[Mapping[str, Any]],
    found: Mapping[str, Any],
) -> bytes:
    """``found``'s raw bytes: the outputs' binary data follow the JSON part in the outputs'
    order (those with JSON ``data`` take no bytes there)."""
    offset = length
    for output in outputs:
        if output is found:
            break
        if output.get("data") is None:
            offset += _binary_size(target, output)
    size = _binary_size(target, found)
    raw = content[offset : offset + size]
    if len(raw) != size:
        raise InferenceOutputError(
            target, f"{EMBEDDING_OUTPUT!r}: {len(raw)} bytes of binary data, {size} declared"
        )
    return raw


def _float32_rows(target: str, raw: bytes, rows: int, width: int) -> list[list[float]]:
    """Little-endian FP32 ``raw`` (OIP's raw tensors) as ``rows`` rows of ``width``."""
    if len(raw) != rows * width * 4:
        raise InferenceOutputError(
            target,
            f"{EMBEDDING_OUTPUT!r}: {len(raw)} bytes of binary data for shape [{rows}, {width}] "
            "(FP32: 4 bytes a value)",
        )
    values = array.array("f", raw)
    if sys.byteorder == "big":
        values.byteswap()
    # Python floats already: sliced into rows, not checked or converted value by value.
    flat = values.tolist()
    return [flat[i * width : (i + 1) * width] for i in range(rows)]


def _error_message(content: bytes) -> str:
    """What a server said in an error answer: kserve's ``{"error": ...}``, else the text."""
    text = content.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        return text[:2000]
    if isinstance(parsed, dict):
        for key in ("error", "detail"):
            if key in parsed:
                said = parsed[key]
                return said if isinstance(said, str) else json.dumps(said)[:2000]
    return text[:2000]


def _kserve() -> Any:
    return _kserve_module("kserve")


def _kserve_module(name: str) -> Any:
    from agentfn.inference import import_optional  # noqa: PLC0415 - see the module docstring

    return import_optional(name)
