"""``ctx.infer`` and :class:`InferenceClient` against real kserve model servers on loopback.

Two servers: the real ``agentfn model serve`` (all-MiniLM-L6-v2; the session's
``model_server``) for what the model answers, and a kserve ModelServer whose model fails on
demand (tests/functions/_fault_model.py) for retries, deadlines and the breaker. The fault
model logs every call it sees, so the attempts are counted where they arrive; each decision
the client makes is asserted from its record (:class:`InferenceAttempt`), never from how long
anything took.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentfn.functions import (
    Agent,
    BreakerPolicy,
    BreakerState,
    CircuitBreakers,
    CircuitOpenError,
    Context,
    Delivery,
    InferenceAttempt,
    InferenceClient,
    InferenceError,
    InferenceOutputError,
    InferenceUnavailableError,
    RetryableError,
    RpcPolicy,
    Settings,
)
from agentfn.functions._inference import INFERENCE_SERVICE, _rest_embeddings, inference_policy
from agentfn.inference import import_optional
from pydantic import BaseModel, ValidationError

from tests._model_server import DIMENSIONS, ModelServer
from tests._servers import free_port
from tests._waiting import wait_until
from tests.functions._support import FakeClock, event, post, serving

ROOT = Path(__file__).resolve().parents[2]
PROTOCOLS = ("rest", "grpc")
#: Fast retries: what is asserted is each attempt and its wait, never how long it took.
FAST = RpcPolicy(initial_backoff_s=0.01, max_backoff_s=0.04, service=INFERENCE_SERVICE)


@dataclass
class FaultServer:
    http_url: str
    grpc_target: str
    log: Path

    def target(self, protocol: str) -> str:
        return self.http_url if protocol == "rest" else f"grpc://{self.grpc_target}"

    def seen(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def calls(self, text: str) -> int:
        return sum(1 for call in self.seen() if call["text"] == text)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultServer]:
    folder = tmp_path_factory.mktemp("faulty")
    log, output = folder / "calls.jsonl", folder / "server.log"
    http_port, grpc_port = free_port(), free_port()
    with output.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.functions._fault_model",
                str(http_port),
                str(grpc_port),
                str(log),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = FaultServer(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the fault model server exited:\n{output.read_text()}")
        try:
            return httpx.get(f"{server.http_url}/v2/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=60, interval=0.05, message="the fault model server")
        yield server
    finally:
        process.terminate()  # calls of the "slow" kind are still open: kserve's grace is 1 s
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def key(kind: str) -> str:
    """A text of its own for one test (the fault model counts calls per text)."""
    return f"{kind}:{uuid.uuid4().hex[:8]}"


def client(
    target: str, attempts: list[InferenceAttempt] | None = None, **options: Any
) -> InferenceClient:
    options.setdefault("policy", FAST)
    return InferenceClient(
        "faulty",
        target,
        jitter=lambda cap: cap,  # the backoff's ceiling: each wait is known exactly
        on_attempt=None if attempts is None else attempts.append,
        **options,
    )


# -- the real model ----------------------------------------------------------------------------


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


SENTENCES = [
    "A cat is sleeping on the warm windowsill.",
    "A kitten naps in the sun by the window.",
    "The central bank raised interest rates by half a point.",
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_embed_puts_similar_sentences_closer_than_unrelated_ones(
    model_server: ModelServer, protocol: str
) -> None:
    target = model_server.http_url if protocol == "rest" else f"grpc://{model_server.grpc_target}"
    async with InferenceClient(model_server.model, target) as model:
        assert await model.ready()
        cat, kitten, bank = await model.embed(SENTENCES)
    assert len(cat) == len(kitten) == len(bank) == DIMENSIONS
    assert all(isinstance(x, float) for x in cat)
    assert _cosine(cat, kitten) > 0.5
    assert _cosine(cat, kitten) > _cosine(cat, bank) + 0.3
    assert _cosine(cat, kitten) > _cosine(kitten, bank) + 0.3


async def test_rest_and_grpc_answer_the_same_vectors(model_server: ModelServer) -> None:
    async with (
        InferenceClient(model_server.model, model_server.http_url) as rest,
        InferenceClient(model_server.model, model_server.grpc_target) as grpc,
    ):
        over_rest = await rest.embed(SENTENCES[:2])
        over_grpc = await grpc.embed(SENTENCES[:2])
    for a, b in zip(over_rest, over_grpc, strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-5


async def test_a_refused_tensor_is_an_inference_error_with_the_servers_own_message(
    model_server: ModelServer,
) -> None:
    kserve = import_optional("kserve")

    def wrong() -> Any:
        texts = kserve.InferInput(name="txt", shape=[1], datatype="BYTES", data=["hello"])
        return kserve.InferRequest(model_server.model, [texts])

    async with httpx.AsyncClient(timeout=10) as http:
        said = await http.post(
            f"{model_server.http_url}/v2/models/{model_server.model}/infer",
            json=wrong().to_rest()[0],
        )
    assert said.status_code == 400
    breakers = CircuitBreakers(BreakerPolicy(failures=1))
    errors = []
    for target in (model_server.http_url, model_server.grpc_target):
        async with InferenceClient(model_server.model, target, breakers=breakers) as model:
            with pytest.raises(InferenceError) as raised:
                await model.infer(wrong())
        errors.append(raised.value)
        assert breakers.last_state(target) is BreakerState.CLOSED  # not the server's fault
    rest, grpc = errors
    assert (rest.code, rest.status, grpc.code) == ("400", 400, "INVALID_ARGUMENT")
    assert rest.message == grpc.message == said.json()["error"]
    assert "txt" in rest.message
    assert not isinstance(rest, RetryableError)
    assert not isinstance(grpc, RetryableError)


# -- retries -----------------------------------------------------------------------------------


async def test_rest_retries_an_unavailable_server_with_backoff_until_it_answers(
    faulty: FaultServer,
) -> None:
    text = key("down:2")
    attempts: list[InferenceAttempt] = []
    async with client(faulty.http_url, attempts) as model:
        (vector,) = await model.embed([text])
    assert vector == [float(len(text)), 0.0, 1.0]
    assert faulty.calls(text) == 3
    # 0.01 s, then 0.01 * 2: the backoff's ceiling each time (the jitter given here).
    assert [(a.outcome, a.reason, a.wait_s) for a in attempts] == [
        ("503", "backoff", 0.01),
        ("503", "backoff", 0.02),
        ("200", "answered", None),
    ]


async def test_grpc_retries_unavailable_through_the_channels_retry_policy(
    faulty: FaultServer,
) -> None:
    text = key("down:2")
    attempts: list[InferenceAttempt] = []
    async with client(f"grpc://{faulty.grpc_target}", attempts) as model:
        (vector,) = await model.embed([text])
    assert vector == [float(len(text)), 0.0, 1.0]
    assert faulty.calls(text) == 3  # gRPC's own attempts, one call for the client
    assert [(a.protocol, a.outcome) for a in attempts] == [("grpc", "OK")]


async def test_a_bad_gateway_is_retried_and_a_server_error_is_not(faulty: FaultServer) -> None:
    gateway, broken = key("gateway:1"), "broken"
    before = faulty.calls(broken)
    attempts: list[InferenceAttempt] = []
    async with client(faulty.http_url, attempts) as model:
        await model.embed([gateway])
        with pytest.raises(InferenceUnavailableError) as raised:
            await model.embed([broken])
    assert faulty.calls(gateway) == 2
    assert faulty.calls(broken) - before == 1
    assert [(a.outcome, a.reason) for a in attempts] == [
        ("502", "backoff"),
        ("200", "answered"),
        ("500", "not retried"),
    ]
    assert (raised.value.code, raised.value.status) == ("500", 500)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_attempts_run_out_into_a_retryable_error(faulty: FaultServer, protocol: str) -> None:
    text = key("down:9")
    policy = RpcPolicy(max_attempts=3, initial_backoff_s=0.01, service=INFERENCE_SERVICE)
    attempts: list[InferenceAttempt] = []
    async with client(faulty.target(protocol), attempts, policy=policy) as model:
        with pytest.raises(InferenceUnavailableError) as raised:
            await model.embed([text])
    assert faulty.calls(text) == 3
    assert isinstance(raised.value, RetryableError)
    assert str(raised.value).startswith(f"model server {faulty.target(protocol)}: ")
    if protocol == "rest":
        assert raised.value.code == "503"
        assert [a.reason for a in attempts] == ["backoff", "backoff", "attempts"]
    else:
        assert raised.value.code == "UNAVAILABLE"


async def test_a_retry_after_is_waited_instead_of_the_backoff(faulty: FaultServer) -> None:
    text = key("busy:1:1")
    attempts: list[InferenceAttempt] = []
    async with client(faulty.http_url, attempts) as model:
        await model.embed([text])
    assert faulty.calls(text) == 2
    assert [(a.outcome, a.reason, a.wait_s) for a in attempts] == [
        ("503", "retry-after", 1.0),
        ("200", "answered", None),
    ]


async def test_a_retry_after_past_the_deadline_is_not_waited_but_handed_on(
    faulty: FaultServer,
) -> None:
    text = key("busy:7:1")
    attempts: list[InferenceAttempt] = []
    async with client(faulty.http_url, attempts) as model:
        with pytest.raises(InferenceUnavailableError) as raised:
            await model.embed([text], timeout=2.0)
    assert faulty.calls(text) == 1
    assert [(a.outcome, a.reason, a.wait_s) for a in attempts] == [("503", "deadline", None)]
    assert raised.value.retry_after == 7.0  # what the handler's 503 tells the broker


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_unreachable_server_is_a_retryable_error_naming_it(protocol: str) -> None:
    port = free_port()  # nothing listens
    target = f"http://127.0.0.1:{port}" if protocol == "rest" else f"grpc://127.0.0.1:{port}"
    attempts: list[InferenceAttempt] = []
    async with client(target, attempts) as model:
        assert not await model.ready()
        with pytest.raises(InferenceUnavailableError) as raised:
            await model.embed(["x"])
    error = raised.value
    assert isinstance(error, RetryableError)
    assert error.code == "UNAVAILABLE"
    if protocol == "rest":
        assert str(error).startswith(f"model server {target}: unreachable (after 4 attempts)")
        assert [a.outcome for a in attempts] == ["unreachable"] * 4
    else:
        assert str(error).startswith(
            f"model server {target}: unreachable (UNAVAILABLE after 4 attempts)"
        )


# -- deadlines ---------------------------------------------------------------------------------


def test_the_deadline_is_what_is_left_of_the_handlers() -> None:
    now = [40.0]
    model = InferenceClient("m", "http://localhost:1", deadline=100.0, clock=lambda: now[0])
    assert model.timeout() == 60.0
    assert model.timeout(5.0) == 5.0
    assert model.timeout(90.0) == 60.0  # never past the handler's own
    now[0] = 70.0
    assert model.timeout() == 30.0
    policy = inference_policy(Settings(inference_timeout_s=12.0))
    assert InferenceClient("m", "localhost:1", policy=policy).timeout() == 12.0
    assert InferenceClient("m", "localhost:1").timeout() == 30.0  # Settings' default


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_each_call_gets_what_is_left_of_the_deadline(
    faulty: FaultServer, protocol: str
) -> None:
    attempts: list[InferenceAttempt] = []
    options = {"deadline": 100.0, "clock": lambda: 97.5}
    async with client(faulty.target(protocol), attempts, **options) as model:
        await model.embed(["ok one"])
        await model.embed(["ok two"], timeout=1.0)
        await model.embed(["ok three"], timeout=9.0)
    assert [a.timeout_s for a in attempts] == [2.5, 1.0, 2.5]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_call_after_the_deadline_is_not_made(faulty: FaultServer, protocol: str) -> None:
    text = key("ok late")
    async with client(faulty.target(protocol), deadline=10.0, clock=lambda: 10.0) as model:
        with pytest.raises(InferenceUnavailableError) as raised:
            await model.embed([text])
    assert raised.value.code == "DEADLINE_EXCEEDED"
    assert isinstance(raised.value.__cause__, TimeoutError)
    assert faulty.calls(text) == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_server_slower_than_the_deadline_counts_against_it(
    faulty: FaultServer, protocol: str
) -> None:
    target = faulty.target(protocol)
    breakers = CircuitBreakers(BreakerPolicy(failures=1))
    attempts: list[InferenceAttempt] = []
    # A clock that stands still: the attempt's timeout is the 0.2 s given, exactly.
    async with client(target, attempts, breakers=breakers, clock=lambda: 0.0) as model:
        with pytest.raises(InferenceUnavailableError) as raised:
            await model.embed(["slow"], timeout=0.2)
    assert raised.value.code == "DEADLINE_EXCEEDED"
    assert breakers.last_state(target) is BreakerState.OPEN
    expected = (
        ("timeout", "deadline") if protocol == "rest" else ("DEADLINE_EXCEEDED", "unavailable")
    )
    assert [(a.outcome, a.reason, a.timeout_s) for a in attempts] == [(*expected, 0.2)]


# -- the breaker -------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_breaker_opens_after_failures_then_refuses_without_calling(
    faulty: FaultServer, protocol: str
) -> None:
    target = faulty.target(protocol)
    text = key("down:4")
    clock = FakeClock()
    breakers = CircuitBreakers(BreakerPolicy(failures=2, reset_s=30.0), clock=clock)
    policy = RpcPolicy(max_attempts=2, initial_backoff_s=0.01, service=INFERENCE_SERVICE)
    async with client(target, breakers=breakers, policy=policy) as model:
        for calls in (1, 2):
            with pytest.raises(InferenceUnavailableError):
                await model.embed([text])
            assert faulty.calls(text) == 2 * calls  # one verdict per call, whatever its attempts
        assert breakers.last_state(target) is BreakerState.OPEN

        with pytest.raises(CircuitOpenError) as refused:
            await model.embed([text])
        assert refused.value.retry_after == 30.0
        assert faulty.calls(text) == 4  # refused here: the server saw nothing

        clock.advance(30.0)  # half-open: one probe goes through, answers, closes the circuit
        assert await model.embed([text]) == [[float(len(text)), 0.0, 1.0]]
        assert breakers.last_state(target) is BreakerState.CLOSED
    assert faulty.calls(text) == 5


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_half_open_probe_the_server_refuses_still_closes_the_circuit(
    faulty: FaultServer, protocol: str
) -> None:
    target = faulty.target(protocol)
    clock = FakeClock()
    breakers = CircuitBreakers(BreakerPolicy(failures=1, reset_s=30.0), clock=clock)
    policy = RpcPolicy(max_attempts=1, initial_backoff_s=0.01, service=INFERENCE_SERVICE)
    async with client(target, breakers=breakers, policy=policy) as model:
        with pytest.raises(InferenceUnavailableError):
            await model.embed([key("down:1")])
        assert breakers.last_state(target) is BreakerState.OPEN
        clock.advance(30.0)
        with pytest.raises(InferenceError):
            await model.embed(["bad"])  # the probe: refused, but answered
    assert breakers.last_state(target) is BreakerState.CLOSED


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_refusal_is_not_retried_nor_counted_against_the_server(
    faulty: FaultServer, protocol: str
) -> None:
    target = faulty.target(protocol)
    before = faulty.calls("bad")
    breakers = CircuitBreakers(BreakerPolicy(failures=2))
    async with client(target, breakers=breakers) as model:
        for _ in range(3):
            with pytest.raises(InferenceError) as raised:
                await model.embed(["bad"])
    assert faulty.calls("bad") - before == 3
    assert raised.value.message == "input 'text': 'bad' is refused by this model"
    assert raised.value.code == ("400" if protocol == "rest" else "INVALID_ARGUMENT")
    assert breakers.last_state(target) is BreakerState.CLOSED


# -- the answer --------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("kind", "complaint"),
    [
        ("wrong-name", "no output tensor 'embedding' (outputs: 'vectors')"),
        ("wrong-type", "'embedding' is FP64, not FP32"),
        ("wrong-shape", "'embedding' has shape [3], not [1, dimensions] for 1 texts"),
    ],
)
async def test_an_answer_outside_the_embedding_contract_is_refused(
    faulty: FaultServer, protocol: str, kind: str, complaint: str
) -> None:
    async with client(faulty.target(protocol)) as model:
        with pytest.raises(InferenceOutputError) as raised:
            await model.embed([kind])
    assert raised.value.message == complaint
    assert not isinstance(raised.value, RetryableError)


def binary_answer(outputs: list[tuple[str, str, list[int], bytes]]) -> tuple[bytes, int]:
    """An OIP REST answer with binary tensor data: its bytes and the JSON part's length."""
    header = json.dumps(
        {
            "model_name": "m",
            "outputs": [
                {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(r)}}
                for n, d, s, r in outputs
            ],
        }
    ).encode()
    return header + b"".join(raw for *_, raw in outputs), len(header)


def test_binary_tensor_data_is_read_after_the_json_part_in_output_order() -> None:
    rows = [[0.5, -1.0, 3.25], [1e-45, -0.0, 2.0]]
    raw = struct.pack("<6f", *rows[0], *rows[1])
    content, length = binary_answer(
        [
            ("tokens", "INT64", [2, 2], struct.pack("<4q", 1, 2, 3, 4)),
            ("embedding", "FP32", [2, 3], raw),
        ]
    )
    assert _rest_embeddings("http://m", content, length, 2) == [
        list(struct.unpack("<3f", raw[:12])),
        list(struct.unpack("<3f", raw[12:])),
    ]


def test_json_tensor_data_is_read_when_the_server_ignores_the_binary_request() -> None:
    content = json.dumps(
        {"outputs": [{"name": "embedding", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 1]}]}
    ).encode()
    assert _rest_embeddings("http://m", content, len(content), 1) == [[0.25, 1.0]]


@pytest.mark.parametrize(
    ("declared", "sent", "complaint"),
    [
        (24, 20, "'embedding': 20 bytes of binary data, 24 declared"),
        (22, 22, "'embedding': 22 bytes of binary data for shape [2, 3] (FP32: 4 bytes a value)"),
        (20, 20, "'embedding': 20 bytes of binary data for shape [2, 3] (FP32: 4 bytes a value)"),
        (None, 24, "output 'embedding' has neither data nor binary_data_size"),
    ],
)
def test_short_or_undeclared_binary_data_is_refused(
    declared: int | None, sent: int, complaint: str
) -> None:
    parameters = {} if declared is None else {"binary_data_size": declared}
    header = json.dumps(
        {
            "outputs": [
                {"name": "embedding", "datatype": "FP32", "shape": [2, 3], "parameters": parameters}
            ]
        }
    ).encode()
    with pytest.raises(InferenceOutputError) as raised:
        _rest_embeddings("http://m", header + bytes(sent), len(header), 2)
    assert raised.value.message == complaint


async def test_embed_of_nothing_calls_nothing_and_one_string_is_refused() -> None:
    async with InferenceClient("m", f"http://127.0.0.1:{free_port()}") as model:
        assert await model.embed([]) == []
        with pytest.raises(TypeError, match="not one string"):
            await model.embed("one sentence")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_ready_asks_for_the_model(faulty: FaultServer, protocol: str) -> None:
    target = faulty.target(protocol)
    async with client(target) as model, InferenceClient("absent", target) as absent:
        assert await model.ready()
        assert not await absent.ready()


# -- targets and settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "protocol"),
    [
        ("http://models:8080", "rest"),
        ("https://embedder.agentfn.example.com/prefix/", "rest"),
        ("grpc://models:8081", "grpc"),
        ("grpcs://models:443", "grpc"),
        ("models:8081", "grpc"),
        ("dns:///models:8081", "grpc"),
    ],
)
def test_a_targets_scheme_picks_the_protocol(target: str, protocol: str) -> None:
    assert InferenceClient("m", target).protocol == protocol


@pytest.mark.parametrize("target", ["", "http://", "grpc://"])
def test_a_target_without_a_host_fails_at_once(target: str) -> None:
    with pytest.raises(ValueError, match="inference target"):
        InferenceClient("m", target)


def test_inference_targets_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AGENTFN_INFERENCE_TARGETS", "all-minilm-l6-v2=grpc://models:8081, other=http://o:80"
    )
    monkeypatch.setenv("AGENTFN_INFERENCE_MAX_ATTEMPTS", "2")
    settings = Settings()
    assert settings.inference_models == {
        "all-minilm-l6-v2": "grpc://models:8081",
        "other": "http://o:80",
    }
    policy = inference_policy(settings)
    assert (policy.max_attempts, policy.timeout_s) == (2, 30.0)
    (method,) = policy.service_config()["methodConfig"]
    assert method["name"] == [{"service": "inference.GRPCInferenceService"}]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    monkeypatch.setenv("AGENTFN_INFERENCE_TARGETS", "all-minilm-l6-v2")
    with pytest.raises(ValidationError, match="AGENTFN_INFERENCE_TARGETS"):
        Settings()


# -- inside a handler --------------------------------------------------------------------------


class Texts(BaseModel):
    texts: list[str]


class Vectors(BaseModel):
    vectors: list[list[float]]


def _embedder(chosen: dict[str, Any]) -> Agent:
    agent = Agent("embedding-user", delivery=Delivery(timeout=timedelta(seconds=100)))

    @agent.on("t.embed", emits={"t.embedded": Vectors})
    async def embed(texts: Texts, ctx: Context) -> Vectors:
        model = ctx.infer("faulty")
        chosen["target"] = model.target
        chosen["deadline"], chosen["handling"] = model.deadline, ctx.deadline
        return Vectors(vectors=await model.embed(texts.texts))

    return agent


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_ctx_infer_in_a_served_handler_finds_the_model_by_name(
    faulty: FaultServer, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = faulty.target(protocol)
    monkeypatch.setenv("AGENTFN_INFERENCE_TARGETS", f"other=http://nowhere:1,faulty={target}")
    chosen: dict[str, Any] = {}
    text = key("ok served")
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    app = _embedder(chosen).app(settings=Settings(idempotency="off"))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        response = await post(
            http,
            event("t.embed", {"texts": [text, "ok b"]}),
            traceparent=f"00-{trace}-00f067aa0ba902b7-01",
        )
    assert response.status_code == 200, response.text
    assert response.json() == {"vectors": [[float(len(text)), 0.0, 1.0], [4.0, 1.0, 1.0]]}
    assert chosen["target"] == target
    assert chosen["deadline"] == chosen["handling"] is not None  # the handling's own, exactly
    (call,) = [c for c in faulty.seen() if c["text"] == text]
    assert call["traceparent"].startswith(f"00-{trace}-")  # the handler's span carried on


async def test_a_handler_whose_model_server_is_down_answers_503(faulty: FaultServer) -> None:
    target = f"http://127.0.0.1:{free_port()}"
    settings = Settings(
        inference_targets=f"faulty={target}",
        inference_initial_backoff_s=0.01,
        retry_after_s=3.0,
        idempotency="off",
    )
    async with _embedder({}).app(settings=settings) as app:
        status, headers, body = await app.deliver(event("t.embed", {"texts": ["x"]}))
    assert status == 503
    assert (b"retry-after", b"3") in headers
    assert target.encode() in body


async def test_a_model_with_no_target_names_the_setting() -> None:
    agent = Agent("lost")
    raised: list[BaseException] = []

    @agent.on("t.embed")
    async def embed(texts: Texts, ctx: Context) -> None:
        try:
            ctx.infer("faulty")
        except LookupError as error:
            raised.append(error)

    settings = Settings(inference_targets="other=grpc://o:1", idempotency="off")
    async with agent.app(settings=settings) as app:
        assert (await app.deliver(event("t.embed", {"texts": ["x"]})))[0] == 202
    (error,) = raised
    assert "AGENTFN_INFERENCE_TARGETS=faulty=" in str(error)
    assert "configured: other" in str(error)


def test_an_agent_that_does_not_infer_never_imports_kserve(tmp_path: Path) -> None:
    """Built with a model configured and a client made, but no call: no kserve, numpy, grpc."""
    probe = textwrap.dedent(
        """
        import asyncio, json, sys
        from pydantic import BaseModel
        from agentfn.functions import Agent, Context, Settings

        class Asked(BaseModel):
            text: str

        agent = Agent("cold")

        @agent.on("t.asked")
        async def asked(payload: Asked, ctx: Context) -> None:
            ctx.infer("all-minilm-l6-v2")  # a client, never called

        async def main():
            settings = Settings(
                inference_targets="all-minilm-l6-v2=grpc://127.0.0.1:9", idempotency="off"
            )
            async with agent.app(settings=settings) as app:
                from agentfn.events import CloudEvent
                answer = await app.deliver(CloudEvent.new("t.asked", "/t", {"text": "x"}))
            print(json.dumps([answer[0], sorted(sys.modules)]))

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    status, modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert status == 202
    heavy = ("kserve", "numpy", "pandas", "torch", "grpc", "aiohttp")
    assert [m for m in modules if m.split(".")[0] in heavy] == []


def test_embed_over_rest_needs_no_kserve(model_server: ModelServer, tmp_path: Path) -> None:
    """An agent image without the inference-client extra embeds over REST all the same."""
    probe = textwrap.dedent(
        f"""
        import asyncio, json, sys
        sys.modules["kserve"] = None  # as if not installed: importing it raises ImportError
        from agentfn.functions import InferenceClient

        async def main():
            async with InferenceClient({model_server.model!r}, {model_server.http_url!r}) as m:
                cat, kitten, markets = await m.embed(
                    ["A cat sits on the mat", "A kitten rests on a rug", "Stock markets fell"]
                )
            dot = lambda a, b: sum(x * y for x, y in zip(a, b))
            loaded = sorted(n for n in sys.modules if n.split(".")[0] in ("kserve", "numpy"))
            print(json.dumps([len(cat), dot(cat, kitten), dot(cat, markets), loaded]))

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    width, near, far, loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert width == DIMENSIONS
    assert near > far
    assert loaded == ["kserve"]  # only the None placed above: nothing of kserve or numpy ran
