"""Real servers for tests: free ports, request bodies, redis-server processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def read_body(receive: Callable[[], Awaitable[dict[str, Any]]]) -> bytes:
    """The whole body of an ASGI request, however many messages it came in."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def wait_for_port(port: int, *, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"nothing listened on {host}:{port} within {timeout}s"
                ) from None
            time.sleep(0.01)


@dataclass
class RedisServer:
    """A redis-server this test session started (or the one REDIS_URL names)."""

    url: str
    port: int
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        """Stop the server (tests of outages); :meth:`start` brings it back on the same port."""
        if self.process is None:
            raise RuntimeError("cannot stop a Redis server this test did not start")
        self.process.terminate()
        self.process.wait(timeout=10)

    def start(self) -> None:
        self.process = _spawn_redis(self.port)
        wait_for_port(self.port)


def _spawn_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found")
    workdir = tempfile.mkdtemp(prefix="agentfn-redis-")
    return subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A running Redis: REDIS_URL when set, else a fresh redis-server on a free port."""
    external = os.environ.get("REDIS_URL")
    if external:
        port = int(external.rsplit(":", 1)[-1].split("/", 1)[0])
        yield RedisServer(url=external, port=port)
        return
    port = free_port()
    server = RedisServer(url=f"redis://127.0.0.1:{port}/0", port=port)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.terminate()
            server.process.wait(timeout=10)
