"""The broker contract suite against the embedded SQLite backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from agentfn.brokers.embedded import SqliteEventLog
from agentfn.brokers.log import EventLog

from tests.brokers.contract import (
    BrokerContract,
    RunningBroker,
    agentfn_command,
)


class TestEmbeddedBroker(BrokerContract):
    _locks: list[sqlite3.Connection]

    def make_log(self, directory: Path) -> EventLog:
        return SqliteEventLog(directory, busy_timeout=0.2, write_timeout=3.0)

    async def break_store(self, broker: RunningBroker) -> None:
        # Another process holding the database's write lock: a real way for writes to fail.
        path = broker.server._log.path  # type: ignore[attr-defined]
        holder = sqlite3.connect(path, isolation_level=None, timeout=5)
        holder.execute("BEGIN EXCLUSIVE")
        self._locks = [holder]

    async def repair_store(self, broker: RunningBroker) -> None:
        for holder in self._locks:
            holder.rollback()
            holder.close()
        self._locks = []

    def broker_command(self, data_dir: Path, port: int, triggers: Path) -> list[str]:
        return [
            *agentfn_command(),
            "broker",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--triggers",
            str(triggers),
        ]

    @pytest.fixture(autouse=True)
    def _release_locks(self):  # type: ignore[no-untyped-def]
        self._locks = []
        yield
        for holder in self._locks:
            holder.rollback()
            holder.close()
