"""``agentfn agents`` and ``agentfn serve``, and functions-framework serving an agent module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from agentfn.functions.agents.models import WORK_COMPLETED, WORK_REQUESTED
from agentfn.functions.cli import app
from typer.testing import CliRunner

from tests._servers import free_port, wait_for_port
from tests.functions._support import binary, event

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_agents_lists_the_reference_agents_with_their_types() -> None:
    result = runner.invoke(app, ["agents", "--json"])
    assert result.exit_code == 0, result.output
    described = {a["name"]: a for a in json.loads(result.stdout)}
    assert set(described) == {"planner", "worker", "aggregator", "flaky"}
    assert described["worker"]["target"] == "agentfn.functions.agents.worker:agent"
    assert described["worker"]["consumes"] == [WORK_REQUESTED]
    assert described["worker"]["emits"] == [WORK_COMPLETED]
    assert described["planner"]["delivery"]["retry"] == 5
    assert described["worker"]["resources"]["memory"] == "256Mi"


def test_agents_prints_a_table() -> None:
    result = runner.invoke(app, ["agents", "agentfn.functions.agents"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("planner", "worker", "aggregator", "flaky", WORK_REQUESTED, "WorkRequested"):
        assert name in result.stdout


def test_agents_reads_a_file_or_a_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(
        "from pydantic import BaseModel\n"
        "from agentfn import Agent\n"
        "class In(BaseModel):\n    x: int\n"
        "agent = Agent('mine')\n"
        "@agent.on('mine.in', filters={'subject': 'a'})\n"
        "async def handle(item: In) -> None:\n    return None\n",
        encoding="utf-8",
    )
    (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n", encoding="utf-8")
    folder = runner.invoke(app, ["agents", str(tmp_path), "--json"])
    assert folder.exit_code == 0
    assert [a["name"] for a in json.loads(folder.stdout)] == ["mine"]
    assert "skipped" in folder.stderr
    assert "broken.py" in folder.stderr
    single = runner.invoke(app, ["agents", str(tmp_path / "mine.py"), "--json"])
    (agent,) = json.loads(single.stdout)
    assert agent["handlers"][0]["filters"] == {"subject": "a"}


def test_agents_takes_one_agent_as_module_colon_agent() -> None:
    result = runner.invoke(app, ["agents", "agentfn.functions.agents.worker:agent", "--json"])
    assert result.exit_code == 0, result.output
    (described,) = json.loads(result.output)
    assert (described["target"], described["name"]) == (
        "agentfn.functions.agents.worker:agent",
        "worker",
    )
    # Wide enough that the error box does not wrap the message.
    missing = runner.invoke(
        app, ["agents", "agentfn.functions.agents.worker:nothing"], env={"COLUMNS": "200"}
    )
    assert missing.exit_code == 2
    assert "has no attribute 'nothing'" in missing.output


def test_agents_without_any_agent_fails(tmp_path: Path) -> None:
    assert runner.invoke(app, ["agents", str(tmp_path)]).exit_code == 1
    assert runner.invoke(app, ["agents", "no.such.module"]).exit_code == 2


def test_serve_refuses_a_target_that_is_no_agent() -> None:
    result = runner.invoke(app, ["serve", "agentfn.functions.agents.models:TaskSubmitted"])
    assert result.exit_code == 2
    assert "not an agentfn Agent" in result.output


def _env() -> dict[str, str]:
    # The editable install may predate functions/__init__.py; the checkout comes first anyway.
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def served_worker() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from agentfn.functions.cli import main; main()",
            "serve",
            "agentfn.functions.agents.worker",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=10)
        # uvicorn shuts down (lifespan included) and re-raises SIGTERM, so no exit code 0.
        assert b"Traceback" not in errors, errors.decode()


@pytest.mark.slow
def test_serve_runs_one_agent_over_http(served_worker: str) -> None:
    work = event(WORK_REQUESTED, {"index": 0, "total": 1, "text": "Agents reply. Agents retry."})
    headers, body = binary(work)
    with httpx.Client(base_url=served_worker, timeout=10) as client:
        assert client.get("/healthz").text == "ok"
        assert client.get("/readyz").status_code == 200
        answer = client.post("/", headers=headers, content=body)
        again = client.post("/", headers=headers, content=body)
        metrics = client.get("/metrics").text
    assert answer.status_code == 200
    assert answer.headers["ce-type"] == WORK_COMPLETED
    assert answer.json()["words"] == 4
    assert again.headers["ce-id"] == answer.headers["ce-id"]  # embedded dedupe by default
    assert (
        'agentfn_events_duplicate_total{agent="worker",type="agentfn.work.requested"} 1.0'
        in metrics
    )


@pytest.mark.slow
def test_functions_framework_serves_an_agent_module_in_asgi_mode() -> None:
    port = free_port()
    framework = Path(sys.executable).parent / "functions-framework"
    process = subprocess.Popen(
        [
            str(framework),
            "--asgi",
            "--target=function",
            f"--source={ROOT / 'functions' / 'agents' / 'worker.py'}",
            f"--port={port}",
            "--host=127.0.0.1",
        ],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, timeout=30)
        work = event(WORK_REQUESTED, {"index": 0, "total": 1, "text": "One two three."})
        headers, body = binary(work)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            answer = client.post("/", headers=headers, content=body)
            invalid = client.post("/", headers={"ce-id": "x"}, content=b"")
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["ce-type"] == WORK_COMPLETED
    assert answer.json()["words"] == 3
    assert invalid.status_code == 400
