"""Declaring agents: what is accepted, what fails at import time, what the spec says."""

from __future__ import annotations

from datetime import timedelta

import pytest
from agentfn.events import CloudEvent
from agentfn.functions import (
    Agent,
    AgentDefinitionError,
    Context,
    Delivery,
    Resources,
    Scaling,
)
from pydantic import BaseModel, ValidationError


class Question(BaseModel):
    text: str


class Answer(BaseModel):
    words: int


def test_a_handler_declares_types_input_and_emits() -> None:
    agent = Agent("qa", description="answers", scaling=Scaling(max_scale=3, target_concurrency=10))

    @agent.on("qa.asked", emits={"qa.answered": Answer})
    async def answer(question: Question, ctx: Context) -> Answer:
        return Answer(words=len(question.text.split()))

    spec = agent.spec
    assert spec.name == "qa"
    assert spec.source == "/agentfn/agents/qa"
    assert spec.consumes == ("qa.asked",)
    assert spec.emits == ("qa.answered",)
    (handler,) = spec.handlers
    assert handler.input_model is Question
    assert handler.takes_context
    assert handler.is_async
    assert handler.function is answer  # the decorator hands the function back unchanged
    described = spec.describe()
    assert described["handlers"][0]["input"] == "Question"
    assert described["handlers"][0]["emits"] == {"qa.answered": "Answer"}
    assert described["scaling"]["max_scale"] == 3


def test_handlers_may_be_sync_take_no_context_or_the_raw_event() -> None:
    agent = Agent("mixed")

    @agent.on("a")
    def sync_payload_only(question: Question) -> None:
        return None

    @agent.on(["b", "c"])
    async def raw(event: CloudEvent, ctx: Context) -> None:
        return None

    sync, raw_ = agent.spec.handlers
    assert not sync.is_async
    assert not sync.takes_context
    assert sync.input_model is Question
    assert raw_.input_model is None
    assert raw_.event_types == ("b", "c")
    assert agent.spec.consumes == ("a", "b", "c")


def test_models_local_to_a_function_resolve_under_postponed_annotations() -> None:
    class Local(BaseModel):
        n: int

    agent = Agent("local")

    @agent.on("t")
    async def handle(item: Local) -> None:
        return None

    assert agent.spec.handlers[0].input_model is Local


def test_input_overrides_the_annotation() -> None:
    agent = Agent("explicit")

    @agent.on("t", input=Question)
    async def handle(item, ctx):  # type: ignore[no-untyped-def]
        return None

    assert agent.spec.handlers[0].input_model is Question


@pytest.mark.parametrize(
    "name", ["", "Upper", "1starts-with-digit", "has_underscore", "x" * 64, "ends-"]
)
def test_agent_names_are_dns_labels(name: str) -> None:
    with pytest.raises(AgentDefinitionError, match="DNS label"):
        Agent(name)


def test_the_source_must_be_a_uri_reference() -> None:
    with pytest.raises(AgentDefinitionError, match="source"):
        Agent("ok", source="not a uri")


def test_a_handler_without_a_model_is_refused() -> None:
    agent = Agent("untyped")
    with pytest.raises(AgentDefinitionError, match="annotate its first parameter"):

        @agent.on("t")
        async def handle(item: dict, ctx: Context) -> None:  # type: ignore[type-arg]
            return None


def test_a_handler_with_three_parameters_is_refused() -> None:
    agent = Agent("wide")
    with pytest.raises(AgentDefinitionError, match=r"\(payload\) or \(payload, ctx\)"):

        @agent.on("t")
        async def handle(item: Question, ctx: Context, extra: int) -> None:
            return None


@pytest.mark.parametrize(
    ("emits", "message"),
    [
        ({"": Answer}, "non-empty"),
        ({"t.out": dict}, "pydantic model"),
    ],
)
def test_emits_must_name_types_and_models(emits: dict, message: str) -> None:  # type: ignore[type-arg]
    agent = Agent("emitter")
    with pytest.raises(AgentDefinitionError, match=message):
        agent.on("t", emits=emits)


@pytest.mark.parametrize("filters", [{"type": "x"}, {"Bad": "x"}, {"source": 1}])
def test_filters_are_exact_string_matches_on_attributes(filters: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(AgentDefinitionError):
        Agent("filtered").on("t", filters=filters)


def test_two_handlers_for_the_same_events_are_refused_unless_filters_differ() -> None:
    agent = Agent("overlap")

    @agent.on("t")
    async def first(item: Question) -> None:
        return None

    @agent.on("t", filters={"subject": "special"})
    async def special(item: Question) -> None:
        return None

    with pytest.raises(AgentDefinitionError, match="both handle"):

        @agent.on(["u", "t"])
        async def again(item: Question) -> None:
            return None


def test_retry_on_takes_exception_types_only() -> None:
    with pytest.raises(AgentDefinitionError, match="exception type"):
        Agent("r").on("t", retry_on=[int])  # type: ignore[list-item]


def test_an_agent_without_handlers_cannot_be_served() -> None:
    with pytest.raises(AgentDefinitionError, match="no handler"):
        Agent("empty").app()


def test_scaling_bounds_are_validated() -> None:
    with pytest.raises(ValidationError, match="below min_scale"):
        Scaling(min_scale=3, max_scale=2)
    with pytest.raises(ValidationError, match="hard limit"):
        Scaling(target_concurrency=20, container_concurrency=10)
    assert Scaling(min_scale=1, max_scale=0).max_scale == 0  # 0: unbounded


def test_resources_are_kubernetes_quantities() -> None:
    assert Resources(cpu="250m", memory="512Mi", cpu_limit="1", memory_limit="1.5Gi").cpu == "250m"
    with pytest.raises(ValidationError, match="quantity"):
        Resources(memory="lots")


def test_delivery_durations_parse_and_bound_the_handler() -> None:
    delivery = Delivery(
        retry=3, backoff_policy="exponential", backoff_delay="PT0.2S", timeout="PT10S"
    )  # type: ignore[arg-type]
    assert delivery.backoff_delay == timedelta(milliseconds=200)
    assert delivery.handler_deadline() == pytest.approx(9.0)
    assert Delivery(timeout=timedelta(seconds=2)).handler_deadline() == pytest.approx(1.8)
    assert Delivery().handler_deadline() is None
    with pytest.raises(ValidationError, match="positive"):
        Delivery(timeout=timedelta(0))
    with pytest.raises(ValidationError):
        Delivery(ordering="sometimes")  # type: ignore[arg-type]


def test_hints_are_frozen() -> None:
    scaling = Scaling()
    with pytest.raises(ValidationError):
        scaling.min_scale = 2
