"""The agent runtime, the CLI, and the reference agents.

Declare an agent, its handlers and deployment hints; serve it as an ASGI app (Knative's data
plane), with idempotency by CloudEvent identity, circuit breakers on outbound calls, tracing
and metrics::

    from pydantic import BaseModel
    from functions import Agent, Context

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
"""

from functions._agent import Agent
from functions._asgi import AgentApp
from functions._breaker import (
    BreakerPolicy,
    BreakerState,
    BreakerStore,
    CircuitBreakers,
    InMemoryBreakerStore,
    RedisBreakerStore,
)
from functions._context import Context
from functions._errors import (
    AgentDefinitionError,
    CircuitOpenError,
    PublishError,
    RetryableError,
    StoreUnavailableError,
    UnavailableError,
)
from functions._hints import Delivery, Resources, Scaling
from functions._idempotency import (
    Claim,
    ClaimState,
    IdempotencyStore,
    InMemoryIdempotencyStore,
    RedisIdempotencyStore,
)
from functions._publisher import HTTPClient, HttpPublisher, HTTPResponse, Publisher
from functions._spec import AgentSpec, HandlerSpec
from functions._tracing import configure_from_env as configure_tracing
from functions.settings import Settings

__all__ = [
    "Agent",
    "AgentApp",
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
    "PublishError",
    "Publisher",
    "RedisBreakerStore",
    "RedisIdempotencyStore",
    "Resources",
    "RetryableError",
    "Scaling",
    "Settings",
    "StoreUnavailableError",
    "UnavailableError",
    "configure_tracing",
]
