"""The agentfn demo: reference agents as a chain through the embedded broker, shown as it happens.

`make demo` runs this. It starts `agentfn dev` (the embedded broker, the four reference agents
and the demo's library agent, routed by knative/, the manifests `agentfn render` writes and a
cluster gets, plus the demo's own Triggers: the library agent's, made by the same code, and one
for the "reports" sink; and its dead-letter sink) and the "reports" sink in this process, then:

1. submits a document: planner fans out chunks, workers analyse them, the aggregator joins the
   results into a report, knowing the chain complete by asking the planner over a unary gRPC
   call how many chunks it planned (the demo shows the aggregator's call and the answer), and
   names the document's most representative sentence, asked of the model server `agentfn dev`
   started (all-MiniLM-L6-v2 embeddings over OIP gRPC; the sentence nearest their centroid);
   then sends the model server an embedding request as an event, through the broker (the
   Trigger knative/ has for it), and checks the reply that comes back: similar sentences are
   closer than unrelated ones;
2. delivers the same event again (same id and source, as a broker does after a lost ack): the
   planner's idempotency record answers it, and no second fan-out or report happens;
3. asks the flaky agent for work: it fails twice (503 + Retry-After), the broker backs off and
   retries, the third attempt succeeds;
4. submits an invalid document: the planner answers 422, which is not retried, and the broker
   dead-letters it with knativeerrorcode/knativeerrordata into `agentfn dev`'s dead-letter sink;
5. announces a document that is not in the library yet: the library agent answers 503, the
   broker retries, gives up and dead-letters the notice; `agentfn dlq list` shows both letters;
   the demo then puts the file in the library (the fix) and `agentfn dlq replay KEY` sends the
   notice again: the report for that document arrives.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
import yaml
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.rule import Rule

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentfn.events import CloudEvent, from_http, to_binary  # noqa: E402
from agentfn.functions._cli.dev import inference_installed  # noqa: E402
from agentfn.functions._knative import BROKER_DELIVERY, trigger_documents  # noqa: E402
from agentfn.functions._manifests.options import RenderOptions  # noqa: E402
from agentfn.functions.agents.planner import agent as planner  # noqa: E402

# This folder (scripts/) is on sys.path: the demo's own agent lives beside it.
from demo_library import DOCUMENT_STORED, LIBRARY  # noqa: E402
from demo_library import agent as library_agent  # noqa: E402

console = Console(width=120, highlight=False)

#: The namespace and Broker of knative/ (the render's defaults): the demo's own Triggers join
#: them, and its events go to that Broker's ingress.
RENDERED = RenderOptions()
#: The planner's Trigger as knative/triggers.yaml names it (<agent>-<type>).
PLANNER_TRIGGER = trigger_documents(planner.spec)[0]["metadata"]["name"]
#: Not an agent, so not in knative/: the demo's sink of what the chain ends with.
REPORTS_TRIGGER = {
    "apiVersion": "eventing.knative.dev/v1",
    "kind": "Trigger",
    "metadata": {"name": "reports", "namespace": RENDERED.namespace},
    "spec": {
        "broker": RENDERED.broker,
        "filters": [
            {
                "any": [
                    {"exact": {"type": "agentfn.report.ready"}},
                    {"exact": {"type": "agentfn.flaky.completed"}},
                    {"exact": {"type": "agentfn.embedding.completed"}},
                ]
            }
        ],
        "subscriber": {
            "ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "reports"}
        },
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sink:
    """A CloudEvents sink served in this process; remembers what arrived."""

    def __init__(self, name: str, style: str) -> None:
        self.name = name
        self.style = style
        self.events: list[CloudEvent] = []
        self.port = free_port()
        self.server: uvicorn.Server | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        for event in from_http(headers, body):
            self.events.append(event)
            console.print(f"[{self.style}]{self.name:>12} <- {event.type} id={event.id}[/]")
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def start(self) -> None:
        config = uvicorn.Config(self, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        asyncio.get_running_loop().create_task(self.server.serve())
        await wait_for(f"the {self.name} sink", lambda: bool(self.server and self.server.started))


async def wait_for(
    what: str, condition: Callable[[], bool | Awaitable[bool]], timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while not await _holds(condition):
        if time.monotonic() > deadline:
            raise SystemExit(f"demo failed: timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = condition()
    return await result if inspect.isawaitable(result) else bool(result)


async def counter(session: aiohttp.ClientSession, url: str, name: str, **labels: str) -> float:
    """The sum of counter ``name``'s samples whose labels include ``labels``."""
    async with session.get(url) as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == name
        for sample in family.samples
        if sample.name == f"{name}_total" and labels.items() <= sample.labels.items()
    )


async def post(session: aiohttp.ClientSession, url: str, event: CloudEvent) -> int:
    headers, body = to_binary(event)
    async with session.post(url, data=body, headers=headers) as response:
        return response.status


#: What `agentfn dev` (the broker and every agent's log) has printed so far.
PRINTED: list[str] = []


async def pump(stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip()
        PRINTED.append(text)
        console.print(f"[dim]{text}[/dim]", soft_wrap=True)


def printed(pattern: str) -> re.Match[str] | None:
    """The first match of ``pattern`` in what `agentfn dev` printed (a long log line wraps
    at a space onto the next line: the lines are joined with one)."""
    return re.search(pattern, " ".join(PRINTED))


async def metric_lines(
    session: aiohttp.ClientSession, url: str, names: tuple[str, ...]
) -> list[str]:
    async with session.get(url) as response:
        text = await response.text()
    return [
        line
        for line in text.splitlines()
        if line.startswith(names) and not line.endswith(" 0.0") and "_created" not in line
    ]


async def letters(session: aiohttp.ClientSession, sink: str, **query: str) -> list[Any]:
    """The dead letters the sink holds (its HTTP API, the one `agentfn dlq` talks to)."""
    async with session.get(f"{sink}/v1/letters", params=query) as response:
        response.raise_for_status()
        found: list[Any] = (await response.json())["letters"]
        return found


async def dlq(sink: str, *args: str) -> int:
    """Run `agentfn dlq ARGS --url SINK` as a user would, and show what it printed."""
    console.print(f"[bold]$ agentfn dlq {' '.join(args)} --url {sink}[/bold]")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentfn.functions.cli", "dlq", *args, "--url", sink,
        cwd=ROOT, env=dict(os.environ, COLUMNS="120", NO_COLOR="1"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    for line in output.decode(errors="replace").rstrip().splitlines():
        console.print(f"  {line}", soft_wrap=True)
    assert process.returncode is not None
    return process.returncode


async def _embeddings(
    session: aiohttp.ClientSession, ingress: str, reports: Sink, report: dict[str, Any]
) -> None:
    """Step 1's model part: the report's representative sentence, then the event path."""
    chosen = report.get("representative")
    if not chosen:
        raise SystemExit("demo failed: the report names no representative sentence")
    console.print(
        f"  [bold]most representative sentence[/bold] ({chosen['model']}, nearest the centroid "
        f"of its {chosen['candidates']} sentences' embeddings, cosine "
        f"{chosen['similarity']:.3f}):\n    {chosen['sentence']!r}"
    )
    texts = [
        "The broker retries a failed delivery with backoff.",
        "Failed deliveries are tried again after a pause.",
        "Basil grows best in a sunny window.",
    ]
    request = CloudEvent.new("agentfn.embedding.requested", "/demo", {"texts": texts})
    console.print(
        f"POST embedding.requested id={request.id} ({len(texts)} texts) -> "
        f"{await post(session, ingress, request)}  (Trigger -> the model server's event path)"
    )
    await wait_for(
        "the embeddings",
        lambda: any(e.type == "agentfn.embedding.completed" for e in reports.events),
    )
    reply = next(e for e in reports.events if e.type == "agentfn.embedding.completed")
    vectors = reply.data["embeddings"]
    similar, unrelated = _cosine(vectors[0], vectors[1]), _cosine(vectors[0], vectors[2])
    console.print(
        f"  reply {reply.type} from {reply.source}, {reply.data['dimensions']} dimensions, "
        f"chain id {reply.attributes.get('agentfnchainid')}"
    )
    console.print(f"  cosine({texts[0]!r}, {texts[1]!r}) = {similar:.3f}")
    console.print(f"  cosine({texts[0]!r}, {texts[2]!r}) = {unrelated:.3f}")
    if not similar > unrelated:
        raise SystemExit("demo failed: the similar sentences are not the closer pair")
    console.print("  (the paraphrase is closer than the unrelated sentence)")


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return float(dot / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5))


async def main() -> None:
    with_model = inference_installed()
    if not with_model:
        console.print(
            "[yellow]the inference extra is not installed: no model server, no representative "
            "sentence (pip install -e '.[inference]'; `make demo` installs it)[/yellow]"
        )
    reports = Sink("reports", "bold green")
    await reports.start()
    port, dlq_port, model_port, model_grpc_port = free_port(), free_port(), free_port(), free_port()
    ingress = f"http://127.0.0.1:{port}/{RENDERED.namespace}/{RENDERED.broker}"
    sink = f"http://127.0.0.1:{dlq_port}"
    data_dir = Path(tempfile.mkdtemp(prefix="agentfn-demo-"))
    library = str(data_dir / "library")
    os.mkdir(library)
    demo_triggers = data_dir / "demo-triggers.yaml"
    library_triggers = trigger_documents(
        library_agent.spec, namespace=RENDERED.namespace, broker=RENDERED.broker,
        dead_letter_sink="dead-letters", defaults=BROKER_DELIVERY,
    )  # fmt: skip
    demo_triggers.write_text(
        yaml.safe_dump_all([*library_triggers, REPORTS_TRIGGER]), encoding="utf-8"
    )
    dev = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentfn.functions.cli", "dev",
        "agentfn.functions.agents", str(ROOT / "scripts" / "demo_library.py"),
        "--port", str(port), "--dlq-port", str(dlq_port), "--data-dir", str(data_dir / "dev"),
        "--triggers", str(ROOT / "knative"), "--triggers", str(demo_triggers),
        "--service", f"reports=http://127.0.0.1:{reports.port}/",
        "--model-port", str(model_port), "--model-grpc-port", str(model_grpc_port),
        cwd=ROOT, env={**os.environ, "COLUMNS": "120", "PYTHONUNBUFFERED": "1", LIBRARY: library},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert dev.stdout is not None
    pumping = asyncio.create_task(pump(dev.stdout))
    try:
        async with aiohttp.ClientSession() as session:
            await wait_for("the broker", lambda: _listening(port), timeout=60)
            await _healthy(session, f"http://127.0.0.1:{port}/healthz")
            await _healthy(session, f"{sink}/healthz")

            console.print(Rule("1. a document through planner -> workers -> aggregator"))
            document = CloudEvent.new(
                "agentfn.task.submitted",
                "/demo",
                {
                    "title": "agentfn in five sentences",
                    "text": (
                        "Each agent is a scale-to-zero Knative Service. CloudEvents flow "
                        "through a Kafka-backed broker with Triggers and retries. Redis keys "
                        "make every handler idempotent, so a duplicate delivery has no second "
                        "side effect. Circuit breakers stop a failing agent from dragging the "
                        "others down. OpenTelemetry follows an event across every hop."
                    ),
                    "max_words_per_chunk": 12,
                    "top_terms": 3,
                },
            )
            console.print(
                f"POST task.submitted id={document.id} -> {await post(session, ingress, document)}"
            )
            await wait_for(
                "the report", lambda: any(e.type == "agentfn.report.ready" for e in reports.events)
            )
            report = next(e for e in reports.events if e.type == "agentfn.report.ready")
            data = report.data
            console.print(
                f"  report: {data['chunks']} chunks, {data['words']} words, "
                f"top terms {[t['term'] for t in data['top_terms']]}; chain id "
                f"{report.attributes.get('agentfnchainid')}"
            )
            # The aggregator knew the chain was complete by asking the planner, over gRPC.
            chain = re.escape(str(report.attributes.get("agentfnchainid")))
            call = rf"asked the planner over gRPC \((\S+)\): chain {chain} has (\d+)"
            await wait_for("the aggregator's gRPC call", lambda: printed(call) is not None)
            asked = printed(call)
            if asked is None or int(asked[2]) != data["chunks"]:
                raise SystemExit("demo failed: the planner's count is not the report's")
            console.print(
                f"  [bold]the aggregator asked the planner over gRPC[/bold] (unary Call to "
                f"{asked[1]}, agentfn.plan.requested -> agentfn.plan.described): "
                f"{asked[2]} chunks planned for this chain"
            )
            if with_model:
                await _embeddings(session, ingress, reports, data)

            console.print(Rule("2. the same event delivered again (a lost ack)"))
            metrics = f"http://127.0.0.1:{port}/metrics"
            answered = await counter(
                session,
                metrics,
                "broker_filter_event_count",
                trigger_name=PLANNER_TRIGGER,
                response_code_class="2xx",
            )
            accepted = await counter(session, metrics, "broker_ingress_event_count")
            console.print(f"POST the same id again -> {await post(session, ingress, document)}")

            async def duplicate_answered() -> bool:
                now = await counter(
                    session,
                    metrics,
                    "broker_filter_event_count",
                    trigger_name=PLANNER_TRIGGER,
                    response_code_class="2xx",
                )
                return now > answered

            await wait_for("the planner to answer the duplicate", duplicate_answered)
            # A planner that ran again would have published its fan-out before answering, so
            # by now the ingress would count those events beside the duplicate itself.
            fanned_out = await counter(session, metrics, "broker_ingress_event_count") - (
                accepted + 1
            )
            count = sum(1 for e in reports.events if e.type == "agentfn.report.ready")
            console.print(
                f"  the planner answered the duplicate (2xx), publishing {fanned_out:.0f} events; "
                f"reports received: {count}"
            )
            if fanned_out or count != 1:
                raise SystemExit("demo failed: the duplicate was handled a second time")
            console.print("  (answered from the planner's idempotency record, not run again)")

            console.print(Rule("3. the flaky agent: two 503s, backoff, then success"))
            flaky = CloudEvent.new(
                "agentfn.flaky.requested",
                "/demo",
                {"text": "retries with backoff", "fail_attempts": 2},
            )
            console.print(
                f"POST flaky.requested id={flaky.id} -> {await post(session, ingress, flaky)}"
            )
            await wait_for(
                "the flaky result",
                lambda: any(e.type == "agentfn.flaky.completed" for e in reports.events),
            )
            done = next(e for e in reports.events if e.type == "agentfn.flaky.completed")
            console.print(f"  flaky agent succeeded on attempt {done.data['attempts']}")

            console.print(Rule("4. an invalid document: 422, no retry, dead letter"))
            invalid = CloudEvent.new("agentfn.task.submitted", "/demo", {"text": ""})
            console.print(
                f"POST task.submitted with empty text -> {await post(session, ingress, invalid)}"
            )

            async def arrived(event: CloudEvent) -> list[Any]:
                return await letters(session, sink, event_id=event.id)

            (letter,) = await _until(f"the dead letter of {invalid.id}", lambda: arrived(invalid))
            error = letter["error"]
            console.print(
                f"  dead letter of trigger {letter['trigger']}: knativeerrorcode={error['code']} "
                f"knativeerrordest={error['dest']}\n"
                f"  knativeerrordata: {json.loads(error['data']['text'])}"
            )

            console.print(
                Rule("5. a document announced before it is stored: dead letter, fix, replay")
            )
            notice = CloudEvent.new(
                DOCUMENT_STORED,
                "/demo",
                {
                    "name": "field-notes.txt",
                    "title": "field notes",
                    "max_words_per_chunk": 12,
                    "top_terms": 3,
                },
            )
            console.print(
                f"POST document.stored id={notice.id} (not in the library yet) -> "
                f"{await post(session, ingress, notice)}"
            )
            (held,) = await _until(f"the dead letter of {notice.id}", lambda: arrived(notice))
            console.print(
                f"  the library agent answered {held['error']['code']}; after its retries the "
                f"broker dead-lettered the notice (trigger {held['trigger']})"
            )
            if await dlq(sink, "list"):
                raise SystemExit("demo failed: agentfn dlq list")
            await asyncio.to_thread(_store_field_notes, library)
            console.print(f"  the fix: field-notes.txt is now in the library ({library})")
            if await dlq(sink, "replay", held["key"]):
                raise SystemExit("demo failed: the replay was not accepted")

            def field_notes() -> list[CloudEvent]:
                return [
                    e
                    for e in reports.events
                    if e.type == "agentfn.report.ready" and e.data["title"] == "field notes"
                ]

            await wait_for("the report of the replayed document", field_notes)
            (replayed_report,) = field_notes()
            console.print(
                f"  report: {replayed_report.data['chunks']} chunks, "
                f"{replayed_report.data['words']} words, top terms "
                f"{[t['term'] for t in replayed_report.data['top_terms']]}"
            )
            (after,) = await arrived(notice)
            if after["replayed_at"] is None:
                raise SystemExit("demo failed: the letter is not marked replayed")
            await dlq(sink, "list")

            console.print(Rule("broker metrics"))
            for line in await metric_lines(
                session,
                f"http://127.0.0.1:{port}/metrics",
                (
                    "broker_ingress_event_count",
                    "broker_filter_event_count",
                    "broker_filter_event_retry",
                    "broker_filter_dead_letter",
                ),
            ):
                console.print(f"  {line}")
            console.print(Rule("[green]demo complete[/green]"))
    finally:
        dev.terminate()
        await dev.wait()
        pumping.cancel()
        if reports.server is not None:
            reports.server.should_exit = True
        await asyncio.sleep(0.2)


def _store_field_notes(library: str) -> None:
    Path(library, "field-notes.txt").write_text(
        "Dead letters are kept whole by the sink. Each one names its trigger and its error. "
        "A replay sends the original event again, with its id. An idempotent agent applies it "
        "at most once.",
        encoding="utf-8",
    )


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _until(what: str, found: Callable[[], Awaitable[list[Any]]]) -> list[Any]:
    """``found()`` once it is not empty (within the deadline of :func:`wait_for`)."""
    result: list[Any] = []

    async def check() -> bool:
        result[:] = await found()
        return bool(result)

    await wait_for(what, check)
    return result


async def _healthy(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("demo failed: the broker never became healthy")
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main())
