"""``agentfn dev --in-process``: the reference chain with every agent inside the broker process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from agentfn.functions._knative import trigger_documents
from agentfn.functions.agents import _text, aggregator, planner, worker
from agentfn.functions.agents.models import REPORT_READY, TASK_SUBMITTED

from tests._servers import free_port, wait_for_port
from tests._waiting import async_wait_until
from tests.functions._support import Sink, event, serving
from tests.functions.test_e2e_broker import publish, sink_trigger

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> list[str]:
    """Processes ``pid``'s main thread started (Linux /proc; agents are spawned from it)."""
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


async def test_the_reference_chain_runs_with_the_agents_hosted_in_the_broker(
    tmp_path: Path,
) -> None:
    reports = Sink()
    async with serving(reports) as sink_url:
        documents = [
            d
            for agent in (planner.agent, worker.agent, aggregator.agent)
            for d in trigger_documents(agent.spec)
        ]
        documents.append(sink_trigger("reports", REPORT_READY, sink_url))
        triggers = tmp_path / "triggers.yaml"
        triggers.write_text(yaml.safe_dump_all(documents))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFN_")}
        process = subprocess.Popen(
            [
                sys.executable, "-m", "agentfn.functions.cli", "dev", "agentfn.functions.agents",
                "--in-process", "--no-model",
                "--triggers", str(triggers), "--port", str(port),
                "--data-dir", str(tmp_path / "data"), "--dlq-port", str(free_port()),
            ],
            cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            ingress = f"http://127.0.0.1:{port}/default/default"
            await asyncio.to_thread(wait_for_port, port, timeout=60)
            assert process.poll() is None
            assert children_of(process.pid) == []  # no agent process: they are hosted
            text = " ".join(f"Sentence {i} is about agents." for i in range(9))
            await publish(ingress, event(TASK_SUBMITTED, {"text": text, "max_words_per_chunk": 10}))
            await async_wait_until(lambda: reports.events, timeout=30, message="the report")
            (report,) = reports.events
            assert report.data["chunks"] == len(_text.chunk(text, 10))
            assert report.data["words"] == len(_text.words(text))
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = await asyncio.to_thread(process.communicate, timeout=30)
        assert process.returncode == 0, output
        assert "inprocess://planner" in output  # the table says where each agent runs
