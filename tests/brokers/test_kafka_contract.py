"""The broker contract suite against the Kafka backend, on a real Kafka-protocol server.

Each test gets a Tansu of its own (memory storage, ~10 ms to start) behind a relay that can cut
it off (see ``tests/brokers/_tansu.py``), so the fixed names the broker uses (Knative's topic and
group names) never meet a previous test's state. With ``KAFKA_BOOTSTRAP_SERVERS`` the tests share
that Kafka and prefix their names instead; it cannot be cut off, so the store-failure test skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from brokers.log import EventLog
from tests.brokers._tansu import KafkaServer, broker_cli, kafka_log, kafka_server
from tests.brokers.contract import BrokerContract, RunningBroker

pytestmark = pytest.mark.kafka


class TestKafkaBroker(BrokerContract):
    kafka: KafkaServer

    @pytest.fixture(autouse=True)
    def _kafka(self) -> Iterator[None]:
        with kafka_server() as server:
            self.kafka = server
            yield

    def make_log(self, directory: Path) -> EventLog:
        return kafka_log(self.kafka)

    async def break_store(self, broker: RunningBroker) -> None:
        if not self.kafka.is_tansu:
            pytest.skip("an external Kafka cannot be cut off by the tests")
        # Every connection to Kafka closed and new ones refused: the producer cannot get an
        # acknowledgement, and what it could not send is never written later.
        self.kafka.cut()

    async def repair_store(self, broker: RunningBroker) -> None:
        self.kafka.restore()

    def broker_command(self, data_dir: Path, port: int, triggers: Path) -> list[str]:
        return broker_cli(self.kafka, port, triggers)
