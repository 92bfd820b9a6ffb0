"""OpenTelemetry for agents: continue the chain's trace, one span per handled event.

The trace context comes from the event's ``traceparent`` (CloudEvents distributed-tracing
extension) or, failing that, the HTTP ``traceparent`` header, and goes onto every reply,
published event and outbound call, so one chain of agents is one trace.

Nothing here configures OpenTelemetry unless asked: with no SDK installed as the global tracer
provider, spans are the API's no-op spans (which still carry the incoming context forward).
:func:`configure_from_env` is for process entry points (``agentfn serve``, the
functions-framework target) and acts only when ``OTEL_*`` variables ask for export; it alone
imports the SDK, so a process that exports nothing never loads it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from agentfn.events import CloudEvent, extensions
from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanContext,
    SpanKind,
    Tracer,
    TracerProvider,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.context import Context as TraceContext
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "ATTR_AGENT",
    "ATTR_CHAIN_ID",
    "ATTR_DUPLICATE",
    "ATTR_EVENT_ID",
    "ATTR_EVENT_SOURCE",
    "ATTR_EVENT_SPEC_VERSION",
    "ATTR_EVENT_SUBJECT",
    "ATTR_EVENT_TYPE",
    "Tracing",
    "configure_from_env",
    "trace_headers",
]

log = logging.getLogger(__name__)

# OpenTelemetry semantic conventions for CloudEvents.
ATTR_EVENT_ID: Final = "cloudevents.event_id"
ATTR_EVENT_SOURCE: Final = "cloudevents.event_source"
ATTR_EVENT_SPEC_VERSION: Final = "cloudevents.event_spec_version"
ATTR_EVENT_TYPE: Final = "cloudevents.event_type"
ATTR_EVENT_SUBJECT: Final = "cloudevents.event_subject"
ATTR_AGENT: Final = "agentfn.agent"
ATTR_CHAIN_ID: Final = "agentfn.chain_id"
ATTR_DUPLICATE: Final = "agentfn.duplicate"

_PROPAGATOR: Final = TraceContextTextMapPropagator()


def _w3c_only(textmap: TextMapPropagator) -> bool:
    """Whether ``textmap`` writes W3C trace context and baggage, nothing else."""
    parts = getattr(textmap, "_propagators", None) if type(textmap) is CompositePropagator else None
    kinds = {type(p) for p in parts} if parts is not None else {type(textmap)}
    return kinds <= {TraceContextTextMapPropagator, W3CBaggagePropagator}


#: The global propagator OpenTelemetry built from ``OTEL_PROPAGATORS`` (default: tracecontext,
#: baggage) when it is W3C only: for a span and no baggage it writes exactly what
#: :func:`_w3c_headers` does, at a third of the cost per event.
_W3C_DEFAULT: Final = (
    propagate.get_global_textmap() if _w3c_only(propagate.get_global_textmap()) else None
)
#: What a carrier key must look like to travel as a CloudEvent extension attribute.
_ATTRIBUTE_NAME: Final = re.compile(r"[a-z0-9]{1,20}")
_dropped: set[str] = set()


def trace_headers(span: Span) -> dict[str, str]:
    """The trace context of ``span`` as the configured propagator writes it; empty if invalid.

    The propagator is OpenTelemetry's global one (``OTEL_PROPAGATORS``, or
    ``opentelemetry.propagate.set_global_textmap``), given ``span`` in the current context,
    so baggage set there travels too. The result goes out as HTTP headers and as the extension
    attributes of replies and published events, so names are lowercased and a name that is
    not a valid attribute name (b3multi's ``x-b3-traceid``) is left out with a warning: use a
    single-header format (``b3``) there.
    """
    context = span.get_span_context()
    if not context.is_valid:
        return {}
    textmap = propagate.get_global_textmap()
    if textmap is _W3C_DEFAULT and not baggage.get_all():
        return _w3c_headers(context)
    carrier: dict[str, str] = {}
    textmap.inject(carrier, context=trace.set_span_in_context(span))
    headers: dict[str, str] = {}
    for name, value in carrier.items():
        key = name.lower()
        if _ATTRIBUTE_NAME.fullmatch(key):
            headers[key] = value
        elif key not in _dropped:
            _dropped.add(key)
            log.warning(
                "trace context field %r is not a CloudEvent attribute name; not carried", name
            )
    return headers


def _w3c_headers(context: SpanContext) -> dict[str, str]:
    headers = {
        extensions.TRACEPARENT: (
            f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        )
    }
    if context.trace_state:
        headers[extensions.TRACESTATE] = context.trace_state.to_header()
    return headers


class Tracing:
    """The tracer of one agent app and how it reads and writes trace context.

    With no tracer provider given and none installed globally when the app starts, spans are
    :class:`NonRecordingSpan` s of the incoming context: what the API's no-op tracer would
    make, without its cost on every event. Install a provider before the app starts.
    """

    __slots__ = ("_agent", "_provider", "_tracer")

    def __init__(self, agent: str, provider: TracerProvider | None = None) -> None:
        self._agent = agent
        self._provider = provider
        self._tracer: Tracer | None = None
        self.resolve()

    def resolve(self) -> None:
        """Pick up the global provider if one was installed since (called at app start)."""
        source = self._provider if self._provider is not None else trace.get_tracer_provider()
        recording = not isinstance(source, ProxyTracerProvider | NoOpTracerProvider)
        self._tracer = source.get_tracer("agentfn.functions") if recording else None

    @staticmethod
    def parent(
        event: CloudEvent,
        http_traceparent: str | None,
        *,
        tracestate: str | None = None,
        transport_first: bool = False,
    ) -> TraceContext | None:
        """The context to continue: the event's trace context wins over the HTTP header's.

        ``transport_first`` reverses that for a gRPC call, whose metadata (``traceparent``,
        ``tracestate``) is the calling span itself, the nearer parent.
        """
        attributes = event.attributes
        traceparent = attributes.get(extensions.TRACEPARENT)
        carrier: dict[str, str]
        if transport_first and http_traceparent:
            carrier = {extensions.TRACEPARENT: http_traceparent}
            if tracestate:
                carrier[extensions.TRACESTATE] = tracestate
        elif traceparent is not None:
            carrier = {extensions.TRACEPARENT: str(traceparent)}
            state = attributes.get(extensions.TRACESTATE)
            if state is not None:
                carrier[extensions.TRACESTATE] = str(state)
        elif http_traceparent:
            carrier = {extensions.TRACEPARENT: http_traceparent}
        else:
            return None
        return _PROPAGATOR.extract(carrier)

    def start(self, event: CloudEvent, parent: TraceContext | None, chain_id: str) -> Span:
        """The span of handling ``event`` (ended by the caller)."""
        if self._tracer is None:
            if parent is None:
                return INVALID_SPAN
            return NonRecordingSpan(trace.get_current_span(parent).get_span_context())
        attributes = event.attributes
        span_attributes: dict[str, str] = {
            ATTR_EVENT_ID: event.id,
            ATTR_EVENT_SOURCE: event.source,
            ATTR_EVENT_SPEC_VERSION: str(attributes["specversion"]),
            ATTR_EVENT_TYPE: event.type,
            ATTR_AGENT: self._agent,
            ATTR_CHAIN_ID: chain_id,
        }
        subject = attributes.get("subject")
        if subject is not None:
            span_attributes[ATTR_EVENT_SUBJECT] = str(subject)
        return self._tracer.start_span(
            f"CloudEvents Process {event.type}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=span_attributes,
        )


def configure_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Install an SDK tracer provider exporting as the ``OTEL_*`` variables say.

    Acts only when ``OTEL_TRACES_EXPORTER`` (other than ``none``) or an OTLP endpoint is set
    and no SDK provider is installed yet; returns whether it installed one. ``otlp`` export
    needs the ``otlp`` extra (``opentelemetry-exporter-otlp-proto-http``).
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter_names = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not exporter_names:
        if not endpoint:
            return False
        exporter_names = "otlp"
    names = [name.strip() for name in exporter_names.split(",") if name.strip()]
    if names == ["none"]:
        return False

    # The SDK only now: a process that exports no traces never imports it.
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
        BatchSpanProcessor,
        ConsoleSpanExporter,
    )

    if isinstance(trace.get_tracer_provider(), SdkTracerProvider):
        return False
    provider = SdkTracerProvider(resource=Resource.create())
    for name in names:
        exporter: SpanExporter
        if name == "otlp":
            try:
                # The exporter is the optional 'otlp' extra.
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                    OTLPSpanExporter,
                )
            except ImportError as error:
                raise RuntimeError(
                    "OTLP trace export needs the 'otlp' extra: pip install 'agentfn[otlp]'"
                ) from error
            exporter = OTLPSpanExporter()
        elif name == "console":
            exporter = ConsoleSpanExporter()
        elif name == "none":
            continue
        else:
            log.warning("OTEL_TRACES_EXPORTER=%s is not supported here; ignored", name)
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True
