"""Runtime configuration: every environment variable the agent runtime reads, named here once.

The runtime reads the environment once, when an agent's app is built (``Settings()``), and
passes the result down; no other module of :mod:`functions` reads these variables.

``PORT`` (8080)
    Port ``agentfn serve`` listens on (Knative sets it).
``AGENTFN_REDIS_URL`` (unset)
    Redis for idempotency records (and, with ``AGENTFN_BREAKER_SHARED``, breaker state);
    handlers see the client as ``ctx.redis``.
``AGENTFN_REDIS_TIMEOUT_S`` (2)
    Socket timeout of Redis calls: during an outage an event is answered 503 within this.
``AGENTFN_BROKER_URL`` (unset), else ``K_SINK``
    Broker ingress, e.g. ``http://localhost:8080/default/default``: where fan-out lists and
    ``ctx.publish`` send events. On Knative the rendered SinkBinding sets ``K_SINK`` to the
    Broker's address in every agent's pod, so the variable is needed only to override it.
``AGENTFN_PROTOCOL`` (http1)
    What ``agentfn serve`` speaks on ``PORT`` (``--protocol``): ``http1``, the CloudEvents
    HTTP server the broker delivers to, or ``h2c``, only the gRPC service (HTTP/2 cleartext),
    for the ``<agent>-rpc`` Knative Service whose one port is named ``h2c``.
``AGENTFN_GRPC_PORT`` (unset)
    With ``http1``, serve gRPC on this port as well (``--grpc-port``): one process, one
    runtime, both front doors (idempotency records and breakers shared).
``AGENTFN_GRPC_GRACE_S`` (5)
    At shutdown, how long gRPC calls in flight may finish; health answers ``NOT_SERVING`` at
    once.
``AGENTFN_AGENT`` (unset)
    The agent ``agentfn serve`` serves when given no TARGET (``module:attribute``, as the
    argument): one image runs every agent, each Knative Service naming its own. Read by the
    command, not by :class:`Settings`.
``AGENTFN_IDEMPOTENCY`` (auto)
    ``auto`` (Redis when a URL is set, else embedded), ``embedded``, ``redis`` or ``off``.
``AGENTFN_IDEMPOTENCY_TTL_S`` (86400)
    How long a handled event's outcome is kept to answer its duplicates.
``AGENTFN_IDEMPOTENCY_LEASE_S`` (60)
    In-flight lease: a crashed handler's event can run again after this long (raised to the
    handler's deadline plus 5 s when its delivery timeout is longer).
``AGENTFN_IDEMPOTENCY_PATH`` (unset)
    File the embedded store appends outcomes to, so they survive a restart.
``AGENTFN_IDEMPOTENCY_MAX_RECORDS`` (1000000)
    Outcomes the embedded store keeps at most; the oldest go first (bounded memory).
``AGENTFN_BREAKER_FAILURES`` (5), ``AGENTFN_BREAKER_WINDOW_S`` (60)
    Failures within the rolling window that open a destination's circuit breaker.
``AGENTFN_BREAKER_RESET_S`` (30)
    How long a breaker stays open before one half-open probe.
``AGENTFN_BREAKER_SHARED`` (false)
    Keep breaker state in Redis, so every replica of the agent agrees.
``AGENTFN_RETRY_AFTER_S`` (1)
    ``Retry-After`` of a 503 whose cause names no delay of its own.
``AGENTFN_OUTBOUND_TIMEOUT_S`` (10)
    Total timeout of ``ctx.http`` calls and of publishing to the broker.
``AGENTFN_MAX_BODY_BYTES`` (33554432: 32 MiB)
    Largest request body the agent reads; a larger one is answered 413 (as the broker's
    ``AGENTFN_BROKER_MAX_BODY_BYTES`` bounds what its ingress accepts).
``AGENTFN_RPC_TIMEOUT_S`` (10)
    Deadline of a ``ctx.rpc`` call (or stream) made outside a handler, or by a handler with
    no deadline of its own; a handler's calls default to what is left of its deadline.
``AGENTFN_RPC_MAX_ATTEMPTS`` (4), ``AGENTFN_RPC_INITIAL_BACKOFF_S`` (0.1),
``AGENTFN_RPC_MAX_BACKOFF_S`` (2), ``AGENTFN_RPC_BACKOFF_MULTIPLIER`` (2)
    gRPC's own retry of a call answered ``UNAVAILABLE`` (and of no other code): attempts in
    all (1 to 5; 1 is no retry) and the exponential backoff between them (from at least
    0.01 s), within the deadline.
``AGENTFN_RPC_TARGETS`` (unset)
    Peers by name, ``name=target,...`` (a target as ``ctx.rpc`` takes it: ``host:port`` or a
    Knative URL): ``ctx.rpc("planner")`` calls the target named ``planner``. ``agentfn render``
    writes it into every agent's Service, ``--compose`` into every Compose service, and
    ``agentfn dev`` into every agent it starts.
``AGENTFN_RPC_KEEPALIVE_TIME_S`` (30), ``AGENTFN_RPC_KEEPALIVE_TIMEOUT_S`` (20)
    HTTP/2 pings on every gRPC channel, also while no call is open: a connection that died
    silently (an activator or gateway pod replaced, a load balancer's idle entry dropped) is
    found within their sum rather than by the next call's deadline (the README's gRPC
    section says why these values).
``AGENTFN_INFERENCE_TARGETS`` (unset)
    Model servers by model name, ``model=target,...``: ``ctx.infer("all-minilm-l6-v2")`` calls
    the target named for that model. ``http://host:8080`` (or ``https://``) speaks the Open
    Inference Protocol over REST, ``grpc://host:8081`` (``grpcs://`` for TLS, or a bare
    ``host:port``) over gRPC.
``AGENTFN_INFERENCE_TIMEOUT_S`` (30)
    Deadline of a ``ctx.infer`` call made outside a handler, or by a handler with no deadline
    of its own (longer than ``AGENTFN_RPC_TIMEOUT_S``: a model server woken from zero loads
    its model first); a handler's calls default to what is left of its deadline.
``AGENTFN_INFERENCE_MAX_ATTEMPTS`` (4), ``AGENTFN_INFERENCE_INITIAL_BACKOFF_S`` (0.1),
``AGENTFN_INFERENCE_MAX_BACKOFF_S`` (2), ``AGENTFN_INFERENCE_BACKOFF_MULTIPLIER`` (2)
    Retries of an inference call the model server could not take: over REST a 502, 503, 504
    or a refused connection, over gRPC ``UNAVAILABLE`` (gRPC's own retry policy): attempts in
    all (1 to 5; 1 is no retry) and the exponential backoff between them (from at least
    0.01 s, jittered as gRPC does), within the deadline; a ``Retry-After`` the server sends
    is waited instead.

Tracing export is configured by the standard OpenTelemetry variables, which the OpenTelemetry
SDK reads itself: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console`` or ``none``),
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SDK_DISABLED``. With none of them set, tracing stays a
no-op (trace context is still carried from event to reply).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_MAX_BODY_BYTES", "ENV_PREFIX", "IdempotencyMode", "ServeProtocol", "Settings"]

ENV_PREFIX = "AGENTFN_"
#: Above any event a default broker delivers (its ingress takes 1 MiB), so an agent refuses
#: only what no broker it is likely to sit behind would have let through.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024

IdempotencyMode = Literal["auto", "embedded", "redis", "off"]
ServeProtocol = Literal["http1", "h2c"]


class Settings(BaseSettings):
    """The runtime's configuration (see the module docstring for the variables)."""

    # populate_by_name: ``Settings(broker_url=...)`` by name, while the environment is read
    # only under the aliases (never a bare BROKER_URL).
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", populate_by_name=True
    )

    port: int = Field(default=8080, ge=1, le=65535, validation_alias=AliasChoices("PORT", "port"))
    protocol: ServeProtocol = "http1"
    grpc_port: int | None = Field(default=None, ge=1, le=65535)
    grpc_grace_s: float = Field(default=5.0, ge=0)
    redis_url: str | None = None
    redis_timeout_s: float = Field(default=2.0, gt=0)
    broker_url: str | None = Field(
        default=None, validation_alias=AliasChoices(f"{ENV_PREFIX}BROKER_URL", "K_SINK")
    )
    idempotency: IdempotencyMode = "auto"
    idempotency_ttl_s: float = Field(default=86_400.0, gt=0)
    idempotency_lease_s: float = Field(default=60.0, gt=0)
    idempotency_path: str | None = None
    idempotency_max_records: int = Field(default=1_000_000, ge=1)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_window_s: float = Field(default=60.0, gt=0)
    breaker_reset_s: float = Field(default=30.0, gt=0)
    breaker_shared: bool = False
    retry_after_s: float = Field(default=1.0, ge=0)
    outbound_timeout_s: float = Field(default=10.0, gt=0)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1)
    rpc_timeout_s: float = Field(default=10.0, gt=0)
    rpc_max_attempts: int = Field(default=4, ge=1, le=5)
    rpc_initial_backoff_s: float = Field(default=0.1, ge=0.01)
    rpc_max_backoff_s: float = Field(default=2.0, gt=0)
    rpc_backoff_multiplier: float = Field(default=2.0, gt=0)
    rpc_keepalive_time_s: float = Field(default=30.0, gt=0)
    rpc_keepalive_timeout_s: float = Field(default=20.0, gt=0)
    rpc_targets: str = ""
    inference_targets: str = ""
    inference_timeout_s: float = Field(default=30.0, gt=0)
    inference_max_attempts: int = Field(default=4, ge=1, le=5)
    inference_initial_backoff_s: float = Field(default=0.1, ge=0.01)
    inference_max_backoff_s: float = Field(default=2.0, gt=0)
    inference_backoff_multiplier: float = Field(default=2.0, gt=0)

    @field_validator("rpc_targets")
    @classmethod
    def _peers_parse(cls, text: str) -> str:
        _parse_peers(text)  # a malformed entry fails here, when the app is built
        return text

    @field_validator("inference_targets")
    @classmethod
    def _models_parse(cls, text: str) -> str:
        _parse_peers(text, variable=f"{ENV_PREFIX}INFERENCE_TARGETS")
        return text

    @model_validator(mode="after")
    def _redis_when_required(self) -> Settings:
        if self.idempotency == "redis" and not self.redis_url:
            raise ValueError("AGENTFN_IDEMPOTENCY=redis needs AGENTFN_REDIS_URL")
        if self.breaker_shared and not self.redis_url:
            raise ValueError("AGENTFN_BREAKER_SHARED needs AGENTFN_REDIS_URL")
        if self.grpc_port is not None and self.protocol == "h2c":
            raise ValueError("AGENTFN_PROTOCOL=h2c serves gRPC on PORT; unset AGENTFN_GRPC_PORT")
        if self.grpc_port == self.port:
            raise ValueError(f"AGENTFN_GRPC_PORT and PORT are both {self.port}")
        return self

    @property
    def rpc_peers(self) -> dict[str, str]:
        """``AGENTFN_RPC_TARGETS`` as a mapping: peer name -> gRPC target."""
        return _parse_peers(self.rpc_targets)

    @property
    def inference_models(self) -> dict[str, str]:
        """``AGENTFN_INFERENCE_TARGETS`` as a mapping: model name -> model server target."""
        return _parse_peers(self.inference_targets, variable=f"{ENV_PREFIX}INFERENCE_TARGETS")

    @property
    def idempotency_backend(self) -> Literal["embedded", "redis", "off"]:
        """The store ``auto`` resolves to."""
        if self.idempotency == "auto":
            return "redis" if self.redis_url else "embedded"
        return self.idempotency


def _parse_peers(text: str, *, variable: str = f"{ENV_PREFIX}RPC_TARGETS") -> dict[str, str]:
    """``name=target,...``; blank entries are skipped, a malformed one raises naming it."""
    peers: dict[str, str] = {}
    for entry in text.split(","):
        if not entry.strip():
            continue
        name, sep, target = entry.partition("=")
        if not (sep and name.strip() and target.strip()):
            raise ValueError(f"{variable}: {entry!r} is not NAME=TARGET")
        peers[name.strip()] = target.strip()
    return peers
