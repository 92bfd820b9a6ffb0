"""A real ``agentfn model serve`` process on free ports, for the tests that call a model.

Started once per session (the ``model_server`` fixture of tests/conftest.py): importing torch
and sentence-transformers and loading the model take several seconds. Readiness is
``/v2/health/ready`` answering ``{"ready": true}`` (the model is loaded and warmed before the
server listens), waited for with a deadline; a process that exits first fails at once with its
log.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests._servers import free_port
from tests._waiting import wait_until

#: The model every test serves: all-MiniLM-L6-v2, 384 dimensions.
MODEL = "all-minilm-l6-v2"
DIMENSIONS = 384

#: Start-up takes ~8-15 s here (torch and sentence-transformers imports, the model load).
START_TIMEOUT_S = 120.0


@dataclass
class ModelServer:
    """A running model server: where to reach it, and its log for failure messages."""

    http_url: str
    grpc_target: str
    http_port: int
    grpc_port: int
    model: str
    process: subprocess.Popen[bytes]
    log_path: Path
    args: list[str] = field(default_factory=list)

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    stderr = log  # the name other tests reach for when a call fails

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample on ``/metrics`` (0 when absent)."""
        with urllib.request.urlopen(f"{self.http_url}/metrics", timeout=10) as response:
            text = response.read().decode()
        wanted = {"model": self.model, **labels}
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            metric, _, rest = sample.partition("{")
            if metric != name:
                continue
            found = dict(item.split("=", 1) for item in rest.rstrip("}").split(",") if "=" in item)
            if all(found.get(key) == f'"{val}"' for key, val in wanted.items()):
                total += float(value)
        return total


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as response:
            return bool(json.loads(response.read()).get("ready"))
    except (OSError, urllib.error.URLError, ValueError):
        return False


@contextlib.contextmanager
def start_model_server(
    extra_args: Sequence[str] = (), *, env: dict[str, str] | None = None
) -> Iterator[ModelServer]:
    """``agentfn model serve`` on two free ports until the block ends (then SIGTERM)."""
    http_port, grpc_port = free_port(), free_port()
    while grpc_port == http_port:
        grpc_port = free_port()
    args = [
        sys.executable,
        "-m",
        "agentfn.functions.cli",
        "model",
        "serve",
        "--model",
        MODEL,
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        *extra_args,
    ]
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept open for the process's life
        prefix="agentfn-model-server-", suffix=".log", delete=False
    )
    environment = {**os.environ, **(env or {})}
    process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=environment)
    server = ModelServer(
        http_url=f"http://127.0.0.1:{http_port}",
        grpc_target=f"127.0.0.1:{grpc_port}",
        http_port=http_port,
        grpc_port=grpc_port,
        model=MODEL,
        process=process,
        log_path=Path(log_file.name),
        args=args,
    )

    def ready_or_exited() -> bool:
        if process.poll() is not None:  # not an AssertionError: the wait must not swallow it
            raise RuntimeError(
                f"agentfn model serve exited with {process.returncode}:\n{server.log()}"
            )
        return _ready(server.http_url)

    try:
        try:
            wait_until(
                ready_or_exited,
                timeout=START_TIMEOUT_S,
                interval=0.05,
                message="agentfn model serve's /v2/health/ready",
            )
        except AssertionError as error:
            raise AssertionError(f"{error}:\n{server.log()}") from None
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log_file.close()
