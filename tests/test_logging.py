"""One logger naming: each library module logs as its import name, each agent as agentfn.agent.*."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

from agentfn.functions import Agent, Settings
from pydantic import BaseModel


class Note(BaseModel):
    text: str


PROJECT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("agentfn", "events", "brokers", "functions", "inference")


def logger_calls() -> list[tuple[str, ast.Call]]:
    return [
        (str(path.relative_to(PROJECT)), node)
        for folder in PACKAGE_FOLDERS
        for path in sorted((PROJECT / folder).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "getLogger"
    ]


def test_library_loggers_are_named_by_their_module() -> None:
    calls = logger_calls()
    assert calls  # the scan finds the loggers there are
    for where, call in calls:
        (argument,) = call.args
        by_module = isinstance(argument, ast.Name) and argument.id == "__name__"
        # The agent's own logger, the one handlers get as ctx.logger.
        by_agent = isinstance(argument, ast.JoinedStr) and ast.unparse(argument).startswith(
            "f'agentfn.agent."
        )
        assert by_module or by_agent, f"{where}:{call.lineno}: {ast.unparse(call)}"


def test_module_names_are_under_agentfn_as_installed() -> None:
    from agentfn.brokers import server
    from agentfn.functions import _breaker, _tracing

    for module in (server, _breaker, _tracing):
        assert module.log.name == module.__name__
        assert module.log.name.startswith("agentfn.")


def test_an_agent_logs_as_agentfn_agent_and_its_name() -> None:
    agent = Agent("namer")

    @agent.on("note.written")
    async def read(note: Note) -> None:
        return None

    app = agent.app(settings=Settings(idempotency="off"))
    assert app.logger.name == "agentfn.agent.namer"
    # Configuring "agentfn" (or "agentfn.agent") reaches every agent's records.
    assert logging.getLogger("agentfn.agent").getChild("namer") is app.logger
