"""The broker contract suite against the Kafka backend, on a real Kafka-protocol server.

Each test gets a Tansu of its own (memory storage, ~10 ms to start) behind a relay that can cut
it off (see ``tests/brokers/_tansu.py``), so the fixed names the broker uses (Knative's topic and
group names) never meet a previous test's state. With ``KAFKA_BOOTSTRAP_SERVERS`` the tests share
that Kafka and prefix their names instead; it cannot be cut off, so the store-failure test skips.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentfn.brokers.log import EventLog
from agentfn.events import to_binary

from tests._waiting import async_wait_until
from tests.brokers._tansu import KafkaServer, broker_cli, kafka_log, kafka_server
from tests.brokers.contract import BrokerContract, Harness, RunningBroker, event, trigger

pytestmark = pytest.mark.kafka


class TestKafkaBroker(BrokerContract):
    kafka: KafkaServer
    log_options: dict[str, Any]

    @pytest.fixture(autouse=True)
    def _kafka(self) -> Iterator[None]:
        self.log_options = {}
        with kafka_server() as server:
            self.kafka = server
            yield

    def make_log(self, directory: Path) -> EventLog:
        return kafka_log(self.kafka, **self.log_options)

    async def test_an_event_kafka_cannot_hold_is_413_and_never_stored(
        self, harness: Harness
    ) -> None:
        # Within the ingress's body limit but over the log's record limit: a 503 would have the
        # client retry an event that can never fit.
        self.log_options = {"max_record_bytes": 64 * 1024}
        sub = await harness.subscriber()
        broker = await harness.broker([trigger("all", sub.url)])
        status, _, answer = await harness.post(
            broker.url(), *to_binary(event(data={"blob": "x" * 64 * 1024}))
        )
        assert status == 413
        assert json.loads(answer)["error"].startswith("the event is larger than a Kafka record")
        marker = event(type_="marker")
        assert await harness.send(broker.url(), marker) == 202
        await async_wait_until(lambda: sub.arrivals, message="the marker")
        assert sub.ids() == [marker.id], "the refused event is not in the log"

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
