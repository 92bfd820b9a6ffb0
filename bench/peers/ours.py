"""Our platform as deployed: producer -> ``agentfn broker`` -> Trigger -> ``agentfn serve``.

Processes: the broker (embedded SQLite log, default settings; or ``--kafka`` on a Tansu
server), one agent process (``agentfn serve bench/agents.py:agent``), a dead-letter sink
(``bench/_subscriber.py``, idle unless something is dead-lettered), and a private Redis for the
handler work. One Trigger per hop type, each with the delivery policy every side gets: retry 5,
exponential, ``backoffDelay`` = the workload's base, dead-letter sink. The in-process variant
runs ``agentfn dev --in-process`` instead: broker and agent in one process.

Durability is matched to the peers': their queue is a Redis with ``appendfsync everysec``,
which keeps an acknowledged write through a crash of the process but may lose the last second
on a crash of the machine. The embedded log's match is ``AGENTFN_BROKER_FSYNC=false`` (SQLite
WAL with ``synchronous=NORMAL``: committed before the 202, not fsynced); the default, an fsync
per group commit (survives power loss), runs as its own row, ``ours-fsync``.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from agentfn.brokers.inprocess import inprocess_url

from bench._harness import procs
from bench._harness.core import ColdStart, Env, Knobs, Running, Workload, system_run
from bench._harness.http import CONCURRENCY, CloudEventSender
from bench.agents import AGENT_NAME, HOP_TYPES

SCENARIOS = frozenset({"throughput", "latency", "retry", "cold_start", "idempotency", "profile"})
#: Tansu answers a pending fetch only after about half its wait even when records arrive (Apache
#: Kafka answers at once), so Knative's 0.5 s would add ~0.25 s per hop that a real Kafka does
#: not. Both Kafka clients on Tansu (ours and FastStream's aiokafka) get the same short wait.
TANSU_FETCH_MAX_WAIT_S = 0.02
#: Tansu answers a JoinGroup after about half the session timeout; Knative's 10 s would only
#: make every start slower (both Kafka clients get the same).
TANSU_SESSION_TIMEOUT_S = 2.0


def triggers_yaml(agent_url: str, dead_letter_url: str, workload: Workload) -> str:
    """One Trigger per hop; ``agent_url`` is the agent's HTTP URL or ``inprocess://NAME``."""
    documents = []
    for hop_type in HOP_TYPES[: workload.hops]:
        name = hop_type.replace(".", "-")
        documents.append(
            "apiVersion: eventing.knative.dev/v1\n"
            "kind: Trigger\n"
            f"metadata: {{name: {name}, namespace: default}}\n"
            "spec:\n"
            "  broker: default\n"
            f"  filter: {{attributes: {{type: {hop_type}}}}}\n"
            f"  subscriber: {{uri: '{agent_url}'}}\n"
            "  delivery:\n"
            f"    retry: {workload.retries}\n"
            "    backoffPolicy: exponential\n"
            f"    backoffDelay: PT{workload.backoff_s}S\n"
            f"    deadLetterSink: {{uri: '{dead_letter_url}'}}\n"
        )
    return "---\n".join(documents)


def agent_argv(port: int, redis_url: str) -> list[str]:
    return [
        procs.AGENTFN,
        "--log-level",
        "WARNING",
        "serve",
        "bench/agents.py:agent",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--redis",
        redis_url,
    ]


async def start_agent(
    group: procs.Procs, redis_url: str, idempotency: str, port: int
) -> procs.Proc:
    """``agentfn serve`` of the bench agent; returns once it listens."""
    proc = group.spawn(
        "agent",
        agent_argv(port, redis_url),
        env=procs.base_env(AGENTFN_IDEMPOTENCY=idempotency),
    )
    await procs.wait_for_port(port, proc)
    return proc


async def delivery_failures(broker_port: int) -> int:
    """Delivery attempts that failed, counted by the broker (``broker_filter_event_count``
    not in the 2xx class: error answers and no answer), whether the agent is a process or
    hosted in the broker."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{broker_port}/metrics") as response,
    ):
        text = await response.text()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("broker_filter_event_count_total{")
            and 'response_code_class="2xx"' not in line
        )
    )


@dataclass
class Ours:
    key: str
    label: str
    kafka: bool = False
    #: The agent hosted in the broker's process (``agentfn dev --in-process``).
    in_process: bool = False
    idempotency: str | None = None  # None: the workload's
    #: fsync each group commit of the embedded log (the product's default); off matches the
    #: peers' Redis (``appendfsync everysec``), see the module docstring.
    fsync: bool = False
    role: str = "ours"
    scenarios: frozenset[str] = SCENARIOS

    def knobs(self) -> Knobs:
        backend = (
            f"Kafka backend on Tansu, 10 partitions, fetch wait {TANSU_FETCH_MAX_WAIT_S} s"
            if self.kafka
            else "embedded SQLite log, "
            + ("fsync per group commit" if self.fsync else "no fsync (as Redis everysec)")
        )
        processes = (
            f"one process: broker ({backend}) with the agent in it (agentfn dev --in-process)"
            if self.in_process
            else f"broker ({backend}) + 1 agent process (uvicorn)"
        )
        return Knobs(
            processes=processes,
            concurrency=f"producer {CONCURRENCY} HTTP connections; broker defaults "
            "(512 in flight, 128 per subscriber)",
            guarantees="202 once committed to the log; Trigger retry 5 exponential + "
            f"dead-letter sink; runtime dedupe store: {self.idempotency or 'embedded'}",
        )

    async def cold_start(self, group: procs.Procs, redis_url: str) -> ColdStart:
        """One agent process (the unit Knative scales from zero), its first event POSTed."""
        port = procs.free_port()
        return ColdStart(
            name="agent",
            argv=agent_argv(port, redis_url),
            env=procs.base_env(AGENTFN_IDEMPOTENCY=self.idempotency or "embedded"),
            url=f"http://127.0.0.1:{port}/",
        )

    @contextlib.asynccontextmanager
    async def running(self, env: Env, workload: Workload) -> AsyncIterator[Running]:
        async with system_run(env, self.key) as (group, teardown):
            redis_url = await procs.start_redis(group)
            sink_port, agent_port, broker_port = (procs.free_port() for _ in range(3))
            sink = group.spawn(
                "dead-letter-sink",
                [procs.PYTHON, str(procs.ROOT / "bench" / "_subscriber.py"), str(sink_port)],
            )
            data_dir = Path(tempfile.mkdtemp(prefix="broker-", dir=group.logs))
            triggers = data_dir / "triggers.yaml"
            agent_url = (
                inprocess_url(AGENT_NAME) if self.in_process else f"http://127.0.0.1:{agent_port}/"
            )
            triggers.write_text(
                triggers_yaml(agent_url, f"http://127.0.0.1:{sink_port}/", workload)
            )
            idempotency = self.idempotency or workload.idempotency
            command = (
                # --no-dlq: the peers keep no dead letters either, and port 8081 stays free.
                ["dev", "bench.agents:agent", "--in-process", "--no-dlq", "--redis", redis_url]
                if self.in_process
                else ["broker"]
            )
            argv = [
                procs.AGENTFN,
                "--log-level",
                "WARNING",
                *command,
                "--port",
                str(broker_port),
                "--triggers",
                str(triggers),
            ]
            if self.kafka:
                bootstrap = await procs.start_tansu(group)
                argv += [
                    "--kafka",
                    bootstrap,
                    "--kafka-fetch-max-wait",
                    str(TANSU_FETCH_MAX_WAIT_S),
                    "--kafka-session-timeout",
                    str(TANSU_SESSION_TIMEOUT_S),
                ]
            else:
                argv += ["--data-dir", str(data_dir)]
            watched: dict[str, procs.Proc] = {}
            if not self.in_process:
                watched["agent"] = await start_agent(group, redis_url, idempotency, agent_port)
            broker = group.spawn(
                "broker",
                argv,
                env=procs.base_env(
                    AGENTFN_IDEMPOTENCY=idempotency,
                    AGENTFN_BROKER_FSYNC="true" if self.fsync else "false",
                ),
            )
            watched["broker"] = broker
            await procs.wait_for_port(broker_port, broker, timeout=60)
            await procs.wait_for_port(sink_port, sink)
            sender = CloudEventSender(f"http://127.0.0.1:{broker_port}/default/default", "bench.a")
            teardown.defer(sender.close)
            running = Running(
                redis_url=redis_url,
                group=group,
                send_one=sender.send_one,
                send_all=sender.send_all,
                watched=list(watched.values()),
                pids={role: proc.pid for role, proc in watched.items()},
                extra={"dead_letter_port": sink_port},
                failures=lambda: delivery_failures(broker_port),
            )
            teardown.defer(running.aclose)
            yield running


SYSTEMS = [
    Ours("ours", "agentfn (embedded broker + agent)"),
    Ours(
        "ours-fsync",
        "agentfn, fsync per commit (the default)",
        fsync=True,
        scenarios=frozenset({"throughput", "latency"}),
    ),
    Ours(
        "ours-inprocess",
        "agentfn in-process (embedded broker with the agent in it)",
        in_process=True,
        scenarios=frozenset({"throughput", "latency", "retry", "profile"}),
    ),
    Ours(
        "ours-kafka",
        "agentfn (Kafka backend on Tansu + agent)",
        kafka=True,
        scenarios=frozenset({"throughput", "latency"}),
    ),
    Ours(
        "ours-dedupe-off",
        "agentfn, dedupe store off",
        idempotency="off",
        scenarios=frozenset({"idempotency"}),
    ),
    Ours(
        "ours-dedupe-redis",
        "agentfn, Redis dedupe store",
        idempotency="redis",
        scenarios=frozenset({"idempotency"}),
    ),
]
