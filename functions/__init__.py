"""The agent runtime, the CLI, and the reference agents.

Declare an agent, its handlers and deployment hints; serve it as an ASGI app (Knative's data
plane), with idempotency by CloudEvent identity, circuit breakers on outbound calls, tracing
and metrics::

    from pydantic import BaseModel
    from agentfn.functions import Agent, Context

    class Question(BaseModel):
        text: str

    class Answer(BaseModel):
        words: int

    agent = Agent("counter")

    @agent.on("qa.asked", emits={"qa.answered": Answer})
    async def count(question: Question, ctx: Context) -> Answer:
        return Answer(words=len(question.text.split()))

Serve it with ``agentfn serve module:agent``, ``uvicorn module:agent``, or functions-framework
(``function = agent.http_function()``; ``functions-framework --asgi --target=function``).

The names below are imported when first used (PEP 562), so ``import agentfn.functions.cli`` and the
commands that never serve an agent do not pay for the runtime's imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from agentfn._lazy import lazy_exports

if TYPE_CHECKING:
    from agentfn.functions._agent import Agent
    from agentfn.functions._asgi import AgentApp
    from agentfn.functions._breaker import (
        BreakerPolicy,
        BreakerState,
        BreakerStore,
        CircuitBreakers,
        InMemoryBreakerStore,
        RedisBreakerStore,
    )
    from agentfn.functions._context import Context
    from agentfn.functions._errors import (
        AgentDefinitionError,
        CircuitOpenError,
        PublishError,
        RetryableError,
        StoreUnavailableError,
        UnavailableError,
    )
    from agentfn.functions._hints import Delivery, Resources, Scaling
    from agentfn.functions._idempotency import (
        Claim,
        ClaimState,
        IdempotencyStore,
        InMemoryIdempotencyStore,
        RedisIdempotencyStore,
    )
    from agentfn.functions._inference import (
        InferenceAttempt,
        InferenceClient,
        InferenceError,
        InferenceOutputError,
        InferenceUnavailableError,
    )
    from agentfn.functions._publisher import HTTPClient, HttpPublisher, HTTPResponse, Publisher
    from agentfn.functions._rpc import (
        AgentClient,
        RpcError,
        RpcPolicy,
        RpcSession,
        RpcUnavailableError,
    )
    from agentfn.functions._spec import AgentSpec, HandlerSpec
    from agentfn.functions._tracing import configure_from_env as configure_tracing
    from agentfn.functions.settings import Settings

#: Module -> the public names it defines (``configure_tracing`` is its configure_from_env).
_MODULES: Final = {
    "agentfn.functions._agent": ("Agent",),
    "agentfn.functions._asgi": ("AgentApp",),
    "agentfn.functions._breaker": (
        "BreakerPolicy",
        "BreakerState",
        "BreakerStore",
        "CircuitBreakers",
        "InMemoryBreakerStore",
        "RedisBreakerStore",
    ),
    "agentfn.functions._context": ("Context",),
    "agentfn.functions._errors": (
        "AgentDefinitionError",
        "CircuitOpenError",
        "PublishError",
        "RetryableError",
        "StoreUnavailableError",
        "UnavailableError",
    ),
    "agentfn.functions._hints": ("Delivery", "Resources", "Scaling"),
    "agentfn.functions._idempotency": (
        "Claim",
        "ClaimState",
        "IdempotencyStore",
        "InMemoryIdempotencyStore",
        "RedisIdempotencyStore",
    ),
    "agentfn.functions._inference": (
        "InferenceAttempt",
        "InferenceClient",
        "InferenceError",
        "InferenceOutputError",
        "InferenceUnavailableError",
    ),
    "agentfn.functions._publisher": ("HTTPClient", "HttpPublisher", "HTTPResponse", "Publisher"),
    "agentfn.functions._rpc": (
        "AgentClient",
        "RpcError",
        "RpcPolicy",
        "RpcSession",
        "RpcUnavailableError",
    ),
    "agentfn.functions._spec": ("AgentSpec", "HandlerSpec"),
    "agentfn.functions._tracing": ("configure_tracing",),
    "agentfn.functions.settings": ("Settings",),
}
_EXPORTS: Final = {name: module for module, names in _MODULES.items() for name in names}
_RENAMED: Final = {"configure_tracing": "configure_from_env"}

__all__ = [
    "Agent",
    "AgentApp",
    "AgentClient",
    "AgentDefinitionError",
    "AgentSpec",
    "BreakerPolicy",
    "BreakerState",
    "BreakerStore",
    "CircuitBreakers",
    "CircuitOpenError",
    "Claim",
    "ClaimState",
    "Context",
    "Delivery",
    "HTTPClient",
    "HTTPResponse",
    "HandlerSpec",
    "HttpPublisher",
    "IdempotencyStore",
    "InMemoryBreakerStore",
    "InMemoryIdempotencyStore",
    "InferenceAttempt",
    "InferenceClient",
    "InferenceError",
    "InferenceOutputError",
    "InferenceUnavailableError",
    "PublishError",
    "Publisher",
    "RedisBreakerStore",
    "RedisIdempotencyStore",
    "Resources",
    "RetryableError",
    "RpcError",
    "RpcPolicy",
    "RpcSession",
    "RpcUnavailableError",
    "Scaling",
    "Settings",
    "StoreUnavailableError",
    "UnavailableError",
    "configure_tracing",
]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, __all__, _RENAMED)
