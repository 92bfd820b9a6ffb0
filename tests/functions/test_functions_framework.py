"""The README's other way to serve an agent: functions-framework's ASGI mode, behind the broker.

``functions-framework --asgi --target=function --source=functions/agents/worker.py`` runs in a
subprocess as a container would run it; the embedded broker delivers to it through the worker's
own Trigger, and its reply goes back through the broker to a sink, as on Knative.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from agentfn.brokers import BrokerServer, SqliteEventLog, parse_documents
from agentfn.events import extensions
from agentfn.functions._knative import trigger_documents
from agentfn.functions.agents import worker
from agentfn.functions.agents.models import WORK_COMPLETED, WORK_REQUESTED

from tests._servers import free_port, wait_for_port
from tests._waiting import async_wait_until
from tests.functions._support import Sink, binary, event, serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def framework_url(tmp_path: Path) -> Iterator[str]:
    """The worker module served by the functions-framework command, as the README says."""
    port = free_port()
    log = tmp_path / "functions-framework.log"
    output = log.open("wb")  # a file, not a pipe nobody reads while it serves
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "functions-framework"),
            "--asgi",
            "--target=function",
            f"--source={ROOT / 'functions' / 'agents' / 'worker.py'}",
            f"--port={port}",
            "--host=127.0.0.1",
        ],
        cwd=tmp_path,  # not the checkout: the installed package is what it imports
        stdout=subprocess.DEVNULL,
        stderr=output,
    )
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        output.close()
        if process.returncode not in (0, -15):
            pytest.fail(f"functions-framework exited {process.returncode}: {log.read_text()}")


def sink_trigger(event_type: str, url: str) -> dict[str, object]:
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "completed"},
        "spec": {
            "broker": "default",
            "filter": {"attributes": {"type": event_type}},
            "subscriber": {"uri": url},
        },
    }


async def test_the_broker_delivers_to_functions_framework_and_routes_its_reply(
    framework_url: str, tmp_path: Path
) -> None:
    completed = Sink()
    port = free_port()
    async with serving(completed) as sink_url:
        documents = [
            *trigger_documents(worker.agent.spec),  # the worker's own Trigger, as deployed
            sink_trigger(WORK_COMPLETED, sink_url),
        ]
        server = BrokerServer(
            parse_documents(documents),
            SqliteEventLog(tmp_path / "log", fsync=False),
            services={worker.agent.name: framework_url},  # the Trigger's Service ref, resolved
        )
        await server.start()
        await server.listen("127.0.0.1", port)
        try:
            work = event(WORK_REQUESTED, {"index": 0, "total": 1, "text": "One two three."})
            headers, body = binary(work)
            async with httpx.AsyncClient(timeout=10) as client:
                accepted = await client.post(
                    f"http://127.0.0.1:{port}/default/default", headers=headers, content=body
                )
            assert accepted.status_code == 202
            await async_wait_until(lambda: completed.events, timeout=20, message="the reply")
        finally:
            await server.stop()
    (reply,) = completed.events
    assert reply.type == WORK_COMPLETED
    assert reply.source == worker.agent.spec.source
    assert reply.data["words"] == 3  # type: ignore[index]
    assert reply.data["sentences"] == 1  # type: ignore[index]
    assert reply.attributes[extensions.CHAIN_ID]  # the runtime inside functions-framework
