"""What ``agentfn serve`` imports: only what serving needs (its cold start is Knative's).

Each case runs in a fresh interpreter: ``import agentfn.functions.cli``, then the ``serve``
command as the CLI runs it, with uvicorn's ``run`` replaced by a stand-in that starts the app
(lifespan), answers ``GET /healthz`` and handles one event, then reports ``sys.modules``. No
timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentfn import functions

ROOT = Path(__file__).resolve().parents[2]

_AGENT = """
from pydantic import BaseModel

from agentfn.functions import Agent


class Asked(BaseModel):
    text: str


class Answered(BaseModel):
    words: int


agent = Agent("cold")


@agent.on("cold.asked", emits={"cold.answered": Answered})
async def answer(asked: Asked) -> Answered:
    return Answered(words=len(asked.text.split()))
"""

_PROBE = """
import asyncio, json, sys

import agentfn.functions.cli

after_cli = sorted(sys.modules)

import uvicorn

report = {"cli": after_cli}


def run(app, **options):
    async def serve_once():
        await app.start()
        health = await app.respond("GET", "/healthz", [], b"")
        report["healthz"] = health[0]
        if report["send_event"]:
            headers = [
                (b"ce-specversion", b"1.0"),
                (b"ce-id", b"cold-1"),
                (b"ce-source", b"/tests/cold"),
                (b"ce-type", b"cold.asked"),
                (b"content-type", b"application/json"),
            ]
            answer = await app.respond("POST", "/", headers, b'{"text": "one two three"}')
            report["event"] = [answer[0], json.loads(answer[2])]
        await app.aclose()

    asyncio.run(serve_once())
    report["served"] = sorted(sys.modules)


uvicorn.run = run
report["send_event"] = sys.argv[1] == "event"
try:
    agentfn.functions.cli.app(["serve", *sys.argv[2:]], standalone_mode=False)
finally:
    print(json.dumps(report))
"""

#: Never in a serving process: the broker, Kafka, the other commands, rich (help and tables).
_NEVER = (
    "brokers",
    "kafka",
    "rich",
    "agentfn.functions._cli.agents",
    "agentfn.functions._cli.broker",
    "agentfn.functions._cli.dev",
    "agentfn.functions._cli.display",
    "agentfn.functions._cli.dlq",
    "agentfn.functions._cli._dlq_client",
    "agentfn.functions._cli.send",
    "agentfn.functions._knative",
    # gRPC (grpcio, protobuf, the server) loads only where it is served or called.
    "grpc",
    "google.protobuf",
    "agentfn.functions._grpc",
)


def _probe(tmp_path: Path, *args: str, event: bool = True, **env: str) -> dict[str, Any]:
    (tmp_path / "cold_agent.py").write_text(_AGENT, encoding="utf-8")
    clean = {
        k: v
        for k, v in os.environ.items()
        if k != "PORT" and not k.startswith(("OTEL_", "AGENTFN_"))
    }
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE,
            "event" if event else "-",
            str(tmp_path / "cold_agent.py"),
            *args,
        ],
        cwd=tmp_path,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def _loaded(modules: list[str], *names: str) -> list[str]:
    """Which of ``names`` (each a module or package) appear among ``modules``."""
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


def test_importing_the_cli_imports_no_command_and_no_runtime(tmp_path: Path) -> None:
    report = _probe(tmp_path)
    cli = report["cli"]
    assert (
        _loaded(cli, *_NEVER, "agentfn.functions._cli.serve", "agentfn.functions._agent", "uvicorn")
        == []
    )
    assert _loaded(cli, "aiohttp", "redis", "opentelemetry", "pydantic") == []


def test_serve_loads_only_what_serving_needs(tmp_path: Path) -> None:
    report = _probe(tmp_path)
    assert report["healthz"] == 200
    assert report["event"] == [200, {"words": 3}]
    served = report["served"]
    assert _loaded(
        served, "agentfn.functions._cli.serve", "agentfn.functions._asgi", "uvicorn"
    ) == [
        "agentfn.functions._cli.serve",
        "agentfn.functions._asgi",
        "uvicorn",
    ]
    assert _loaded(served, *_NEVER) == []
    # Tracing export is not configured: the SDK's tracer provider is never imported.
    assert _loaded(served, "opentelemetry.sdk.trace") == []


def test_serve_without_redis_broker_or_tracing_loads_none_of_them(tmp_path: Path) -> None:
    served = _probe(tmp_path)["served"]
    assert _loaded(served, "aiohttp", "redis", "opentelemetry.sdk", "yarl") == []


def test_what_is_configured_is_loaded(tmp_path: Path) -> None:
    # Nothing listens there, and nothing connects before an event needs it.
    report = _probe(
        tmp_path,
        "--redis",
        "redis://127.0.0.1:9/0",
        event=False,
        OTEL_TRACES_EXPORTER="console",
    )
    assert report["healthz"] == 200
    served = report["served"]
    assert _loaded(served, "redis", "opentelemetry.sdk.trace") == [
        "redis",
        "opentelemetry.sdk.trace",
    ]
    assert _loaded(served, *_NEVER) == []


def test_every_public_name_resolves_lazily() -> None:
    # __all__ (what type checkers read) and the lazy table (what runs) list the same names.
    assert sorted(functions.__all__) == sorted(functions._EXPORTS)
    assert set(functions.__all__) <= set(dir(functions))
    for name in functions.__all__:
        assert getattr(functions, name) is not None
    with pytest.raises(AttributeError):
        _ = functions.NoSuchName  # type: ignore[attr-defined]
