"""Declaring an agent: an :class:`Agent` object and its ``@agent.on(...)`` handlers."""

from __future__ import annotations

import inspect
import re
import sys
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from agentfn.events import CloudEvent, InvalidEventError, validate_attributes
from agentfn.functions._asgi import AgentApp
from agentfn.functions._errors import AgentDefinitionError
from agentfn.functions._hints import Delivery, Resources, Scaling
from agentfn.functions._spec import AgentSpec, HandlerSpec
from agentfn.functions.settings import Settings
from pydantic import BaseModel

from agentfn._asgi import Receive, Scope, Send

if TYPE_CHECKING:
    from agentfn.functions._breaker import CircuitBreakers
    from agentfn.functions._idempotency import IdempotencyStore
    from agentfn.functions._publisher import Publisher
    from opentelemetry.trace import TracerProvider

__all__ = ["Agent"]

HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])

# A Knative Service name is a DNS-1035 label.
_AGENT_NAME: Final = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
# Attributes a filter may not name: the type is what ``on`` dispatches by.
_UNFILTERABLE: Final = frozenset({"type", "data", "data_base64"})


class Agent:
    """An agent: a name, handlers for the events it consumes, and its deployment hints.

    ::

        agent = Agent("summarizer", scaling=Scaling(max_scale=5))

        @agent.on("doc.submitted", emits={"doc.summarized": Summary})
        async def summarize(doc: Document, ctx: Context) -> Summary:
            return Summary(text=doc.text[:100])

    The object is itself an ASGI app configured from the environment (``uvicorn mod:agent``);
    :meth:`app` builds one with explicit parts, :meth:`http_function` is a
    functions-framework ``--asgi`` target. ``grpc=True`` declares that peers call it over gRPC
    too: ``agentfn render`` then adds an ``<name>-rpc`` Service speaking h2c.
    """

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        source: str | None = None,
        scaling: Scaling | None = None,
        resources: Resources | None = None,
        delivery: Delivery | None = None,
        grpc: bool = False,
    ) -> None:
        if not _AGENT_NAME.fullmatch(name):
            raise AgentDefinitionError(
                f"agent name {name!r} must be a DNS label (a-z, 0-9, '-', at most 63, "
                "starting with a letter): it names the Knative Service"
            )
        self.name = name
        self.description = description
        self.source = source if source is not None else f"/agentfn/agents/{name}"
        try:
            validate_attributes(
                {"id": "x", "specversion": "1.0", "type": "x", "source": self.source}
            )
        except InvalidEventError as error:
            raise AgentDefinitionError(f"source {self.source!r}: {error}") from None
        self.scaling = scaling or Scaling()
        self.resources = resources or Resources()
        self.delivery = delivery or Delivery()
        # Also served over gRPC (h2c): render adds the ``<name>-rpc`` Service.
        self.grpc = bool(grpc)
        self._handlers: list[HandlerSpec] = []
        self._default: AgentApp | None = None

    # -- declaring ---------------------------------------------------------------------------

    def on(
        self,
        event_type: str | Sequence[str],
        *,
        emits: Mapping[str, type[BaseModel]] | None = None,
        filters: Mapping[str, str] | None = None,
        input: type[BaseModel] | None = None,
        retry_on: Sequence[type[BaseException]] = (),
    ) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function as the handler of ``event_type``.

        The handler takes the payload (validated against ``input``, or the annotation of its
        first parameter; annotate :class:`agentfn.events.CloudEvent` to get the raw event) and
        optionally a :class:`Context`. It returns a model of one of the ``emits`` types (the
        reply), a list of them (each published to the broker; the answer carries none), or
        ``None``. ``filters`` are exact attribute matches, like a Trigger's
        ``filter.attributes``. Exceptions of a ``retry_on`` type answer 503 (retried later).

        A handler written as an async generator (``async def`` with ``yield``) yields models of
        its ``emits`` types: over a gRPC ``Session`` each streams out as it is yielded; over
        HTTP, the broker's in-process call and a unary gRPC ``Call`` they are what a returned
        list is (published to the broker; the answer carries none). A plain generator is
        refused: it would block a thread per event between yields.
        """
        types = (event_type,) if isinstance(event_type, str) else tuple(event_type)
        if not types or not all(isinstance(t, str) and t for t in types):
            raise AgentDefinitionError("event_type must be a non-empty string or strings")
        emitted = dict(emits or {})
        for emit_type, model in emitted.items():
            if not (isinstance(emit_type, str) and emit_type):
                raise AgentDefinitionError(f"emitted type {emit_type!r} must be a non-empty string")
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise AgentDefinitionError(f"emits[{emit_type!r}] must be a pydantic model class")
        exact = dict(filters or {})
        for name, value in exact.items():
            if name in _UNFILTERABLE or not re.fullmatch(r"[a-z0-9]{1,20}", name):
                raise AgentDefinitionError(f"cannot filter on attribute {name!r}")
            if not isinstance(value, str):
                raise AgentDefinitionError(f"filter {name}={value!r} must be a string")
        for error_type in retry_on:
            if not (isinstance(error_type, type) and issubclass(error_type, BaseException)):
                raise AgentDefinitionError(f"retry_on holds {error_type!r}, not an exception type")

        # Handlers declared inside a function (tests, factories) annotate with local names that
        # postponed annotations can only resolve through the declaring frame.
        declaring_locals = dict(sys._getframe(1).f_locals)

        def register(function: HandlerT) -> HandlerT:
            model, takes_context = _inspect_handler(function, input, declaring_locals)
            is_generator = inspect.isasyncgenfunction(function)
            if inspect.isgeneratorfunction(function):
                raise AgentDefinitionError(
                    f"handler {getattr(function, '__qualname__', function)!r} is a generator; "
                    "write it as an async generator (async def ... yield) to stream replies"
                )
            spec = HandlerSpec(
                name=getattr(function, "__qualname__", repr(function)),
                function=function,
                event_types=types,
                input_model=model,
                emits=MappingProxyType(emitted),
                filters=MappingProxyType(exact),
                takes_context=takes_context,
                is_async=inspect.iscoroutinefunction(function),
                is_generator=is_generator,
                retry_on=tuple(retry_on),
            )
            self._check_overlap(spec)
            self._handlers.append(spec)
            return function

        return register

    def _check_overlap(self, new: HandlerSpec) -> None:
        for known in self._handlers:
            shared = set(known.event_types) & set(new.event_types)
            if shared and dict(known.filters) == dict(new.filters):
                raise AgentDefinitionError(
                    f"{new.name} and {known.name} both handle {sorted(shared)} with the same "
                    "filters; give one of them a filter or merge them"
                )

    @property
    def spec(self) -> AgentSpec:
        return AgentSpec(
            name=self.name,
            source=self.source,
            description=self.description,
            handlers=tuple(self._handlers),
            scaling=self.scaling,
            resources=self.resources,
            delivery=self.delivery,
            grpc=self.grpc,
        )

    # -- serving -----------------------------------------------------------------------------

    def app(
        self,
        *,
        settings: Settings | None = None,
        store: IdempotencyStore | None = None,
        breakers: CircuitBreakers | None = None,
        publisher: Publisher | None = None,
        tracer_provider: TracerProvider | None = None,
        configure_tracing: bool = False,
    ) -> AgentApp:
        """An ASGI app serving this agent.

        Parts not given are made as ``settings`` configure (:meth:`AgentApp.from_settings`;
        without ``settings``, read from the environment now): the idempotency store, the
        breakers, the broker publisher. The app takes
        the handlers declared so far. ``configure_tracing`` lets the app install an
        OpenTelemetry SDK from ``OTEL_*`` variables (process entry points only).
        """
        if not self._handlers:
            raise AgentDefinitionError(f"agent {self.name!r} declares no handler")
        return AgentApp.from_settings(
            self.spec,
            settings if settings is not None else Settings(),
            store=store,
            breakers=breakers,
            publisher=publisher,
            tracer_provider=tracer_provider,
            configure_tracing=configure_tracing,
        )

    def _default_app(self) -> AgentApp:
        if self._default is None:
            self._default = self.app(configure_tracing=True)
        return self._default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point: the app configured from the environment, built on first use."""
        await self._default_app()(scope, receive, send)

    def http_function(self) -> Callable[[Any], Awaitable[Any]]:
        """A functions-framework HTTP function serving this agent (``--asgi`` mode).

        Expose it at module level and point functions-framework at it::

            function = agent.http_function()
            # functions-framework --asgi --target=function --source=path/to/module.py

        It answers exactly as the ASGI app does (same codes, headers and bodies).
        """
        agent = self

        async def function(request: Any) -> Any:
            # functions-framework's ASGI mode hands in a Starlette request; starlette comes
            # with it, so it is imported only when that mode actually calls.
            from starlette.responses import Response  # noqa: PLC0415

            app = agent._default_app()
            status, headers, body = await app.respond(
                request.method, request.url.path, request.scope["headers"], await request.body()
            )
            response = Response(body, status_code=status)
            # Starlette added content-length for the body; the rest are ours, unchanged.
            response.raw_headers.extend(headers)
            return response

        function.__name__ = function.__qualname__ = f"{self.name.replace('-', '_')}_function"
        return function

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, consumes={list(self.spec.consumes)!r})"


def _inspect_handler(
    function: Callable[..., Any],
    declared: type[BaseModel] | None,
    declaring_locals: Mapping[str, Any],
) -> tuple[type[BaseModel] | None, bool]:
    """The input model (``None``: raw CloudEvent) and whether the handler takes a Context."""
    if not callable(function):
        raise AgentDefinitionError(f"{function!r} is not callable")
    signature = inspect.signature(function)
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required = [
        p
        for p in signature.parameters.values()
        if p.default is p.empty and p.kind in (p.KEYWORD_ONLY,)
    ]
    name = getattr(function, "__qualname__", repr(function))
    if not 1 <= len(positional) <= 2 or required:
        raise AgentDefinitionError(
            f"handler {name} must take (payload) or (payload, ctx), got {signature}"
        )
    try:
        try:
            hints = typing.get_type_hints(function)
        except NameError:
            hints = typing.get_type_hints(function, localns=dict(declaring_locals))
    except Exception as error:  # an annotation naming something not importable
        raise AgentDefinitionError(f"cannot resolve the annotations of {name}: {error}") from None
    annotation = hints.get(positional[0].name)
    model: type[BaseModel] | None
    if declared is not None:
        if not (isinstance(declared, type) and issubclass(declared, BaseModel)):
            raise AgentDefinitionError(f"input of {name} must be a pydantic model class")
        model = declared
    elif annotation is CloudEvent:
        model = None
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        model = annotation
    else:
        raise AgentDefinitionError(
            f"handler {name}: annotate its first parameter with a pydantic model (or "
            "agentfn.events.CloudEvent), or pass input=Model"
        )
    return model, len(positional) == 2
