"""Dead-letter sink: letters/s into both stores, and the replay rate through the broker.

Real servers on loopback, each in its own process: the sink (``agentfn dlq serve``) once over the
embedded SQLite store and once over Redis, the broker (``agentfn broker``, embedded SQLite log,
fsync on), and a ``redis-server`` (append-only file, ``appendfsync always`` by default, so all
three acknowledge only what is on disk). This script is the load generator: C keep-alive
connections, every letter a distinct event with the extensions a Knative broker adds when it
gives up (``knativeerrordest``, ``knativeerrorcode``, ``knativeerrordata`` of a 422 body), posted
to ``/<namespace>/<broker>/<trigger>`` as a Trigger's ``deadLetterSink`` does.

* **store**: letters/s into each sink over HTTP, from an empty store, next to the reference
  measured in the same run, the broker's own ingress taking the same requests (same event, size
  and concurrency): a sink should keep up with the broker that feeds it. Each store's raw
  ``append`` rate in this process (no HTTP, no depth re-read, the same concurrency) shows what
  the sink adds to its store; the same load onto a backlog of as many waiting letters shows
  what a backlog costs (the depth per Trigger is re-read after every change, off the 202).
* **replay**: N letters stored, then replayed through the sink's API (``POST
  /v1/letters/KEY/replay``, C at once) to the broker's ingress; the reference is the same N
  events posted straight to that ingress.

Writes every run, the references included, and the ratios to
``bench/results/bench_deadletters.json`` (``--json`` elsewhere). Run: ``python
bench/bench_deadletters.py [--letters N] [--replay-letters N] [--concurrency C] [--rounds R]
[--quick]`` (about 50 s; ``--quick``: about 10 s, a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from agentfn.brokers._http1 import Http1Pool  # noqa: E402
from agentfn.brokers._transport import Answer  # noqa: E402
from agentfn.brokers.deadletters import (  # noqa: E402
    DeadLetter,
    DeadLetterStore,
    RedisLetterStore,
    SqliteLetterStore,
    TriggerRef,
    letter_key,
)
from agentfn.events import from_http  # noqa: E402

from bench._harness import report  # noqa: E402
from bench._harness.http import binary_headers  # noqa: E402
from tests._servers import free_port, wait_for_port  # noqa: E402

STORES: Final = ("sqlite", "redis")
#: Where the letters come from: four Triggers of one broker, as the reference agents have.
TRIGGERS: Final = ("planner", "worker", "aggregator", "flaky")
#: The attributes a broker adds on the way in and when it gives up: a replay sends none of them.
_BROKER_ADDED: Final = (
    "ce-knativeerrordest",
    "ce-knativeerrorcode",
    "ce-knativeerrordata",
    "ce-knativebrokerttl",
)
#: What an agent answers a payload that fails its input model (422), as knativeerrordata
#: carries it: base64 of the body.
_ERROR_BODY: Final = json.dumps(
    {
        "error": "payload does not match the input model of com.example.order.created",
        "detail": [
            {"loc": ["quantity"], "msg": "Input should be a valid integer", "type": "int_parsing"}
        ],
    }
).encode()

Request = tuple[str, dict[str, str], bytes]  # request-target, headers, body


# -- the letters -------------------------------------------------------------------------------


def _letter(run: str, i: int) -> tuple[str, dict[str, str], bytes]:
    """Trigger, headers and body of dead letter ``i`` of ``run``: a distinct event each."""
    trigger = TRIGGERS[i % len(TRIGGERS)]
    headers = binary_headers(
        f"{run}-{i:06d}",
        "com.example.order.created",
        source="/apis/v1/namespaces/default/orders",
        time="2026-12-01T12:00:00.000000Z",
        traceparent=f"00-{i:032x}-{i:016x}-01",
        knativebrokerttl="254",
        knativeerrordest=f"http://{trigger}.default.svc.cluster.local/",
        knativeerrorcode="422",
        knativeerrordata=base64.b64encode(_ERROR_BODY).decode(),
    )
    body = json.dumps(
        {"order": f"o-{run}-{i}", "sku": "a1-blue", "quantity": "two", "customer": f"c-{i % 97}"}
    ).encode()
    return trigger, headers, body


def _to_sink(run: str, n: int) -> list[Request]:
    """``n`` letters as the broker posts them to a Trigger's deadLetterSink."""
    requests = []
    for i in range(n):
        trigger, headers, body = _letter(run, i)
        requests.append((f"/default/default/{trigger}", headers, body))
    return requests


def _to_ingress(run: str, n: int, *, as_replayed: bool = False) -> list[Request]:
    """The same letters posted to the broker's ingress; ``as_replayed``: as a replay sends
    them (without what the broker added)."""
    requests = []
    for i in range(n):
        _, headers, body = _letter(run, i)
        if as_replayed:
            headers = {k: v for k, v in headers.items() if k not in _BROKER_ADDED}
        requests.append(("/default/default", headers, body))
    return requests


def _keys(run: str, n: int) -> list[str]:
    keys = []
    for i in range(n):
        _, headers, _ = _letter(run, i)
        keys.append(
            letter_key(headers["ce-source"], headers["ce-id"], headers["ce-knativeerrordest"])
        )
    return keys


def _size(request: Request) -> int:
    """Bytes of a request's CloudEvent headers and body, as on the wire."""
    _, headers, body = request
    return sum(len(k) + len(v) + 4 for k, v in headers.items()) + len(body)


# -- the load generator ------------------------------------------------------------------------


def _accepted(answer: Answer) -> None:
    if answer.status != 202:
        raise RuntimeError(f"answered {answer.status}: {answer.body[:300]!r} {answer.error or ''}")


def _replayed(answer: Answer) -> None:
    if answer.status != 200:
        raise RuntimeError(f"replay answered {answer.status}: {answer.body[:300]!r}")
    replay = json.loads(answer.body)["replay"]
    if not replay or not replay["ok"]:
        raise RuntimeError(f"the ingress refused a replay: {replay}")


async def _post_all(
    port: int, requests: Sequence[Request], concurrency: int, check: Callable[[Answer], None]
) -> float:
    """POST every request over ``concurrency`` keep-alive connections; requests/s.

    The generator shares the machine's cores with what it measures, so it uses the broker's
    lean HTTP/1.1 client and builds every request before the clock starts.
    """
    pool = Http1Pool()
    pending = iter(requests)

    async def worker() -> None:
        for target, headers, body in pending:
            check(await pool.post("127.0.0.1", port, target, headers, body, timeout=60))

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        pool.close()
    return len(requests) / (time.perf_counter() - started)


def _load(
    port: int, requests: Sequence[Request], concurrency: int, check: Callable[[Answer], None]
) -> float:
    return asyncio.run(_post_all(port, requests, concurrency, check))


def _replays(keys: Sequence[str], ingress: str) -> list[Request]:
    body = json.dumps({"to": ingress}).encode()
    headers = {"content-type": "application/json"}
    return [(f"/v1/letters/{key}/replay", headers, body) for key in keys]


def _raw_store(kind: str, url: str, run: str) -> DeadLetterStore:
    """A fresh, empty store of ``kind`` for one raw run: its own file, or its own key prefix."""
    if kind == "sqlite":
        return SqliteLetterStore(f"{url}/raw-{run}.sqlite3")
    return RedisLetterStore(url, prefix=f"bench:raw:{run}")


async def _raw_appends(store: DeadLetterStore, run: str, n: int, concurrency: int) -> float:
    """``store.append`` of ``n`` letters in this process, ``concurrency`` at once; letters/s."""
    letters = []
    for i in range(n):
        trigger, headers, body = _letter(run, i)
        (event,) = from_http(headers, body)
        letters.append(
            DeadLetter.received(event, TriggerRef("default", "default", trigger), at=time.time())
        )
    await store.start()
    pending = iter(letters)

    async def worker() -> None:
        for letter in pending:
            _, new = await store.append(letter)
            if not new:
                raise RuntimeError(f"{letter.key} was stored before")

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - started)
    finally:
        await store.aclose()


def _api(port: int, method: str, path: str) -> Any:
    """One request to a sink's API, its JSON answer (the untimed parts of a run)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


def _emptied(port: int) -> None:
    """Purge every letter of a sink, so each timed run starts from the same (empty) store."""
    _api(port, "DELETE", "/v1/letters?all=true")
    if _waiting(port):
        raise RuntimeError(f"the sink on {port} still has letters after a purge")


def _waiting(port: int) -> int:
    return sum(row["depth"] for row in _api(port, "GET", "/v1/depth")["depth"])


# -- the servers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Servers:
    broker: int
    sinks: dict[str, int]  # store -> sink port
    raw: dict[str, str]  # store -> where raw runs make their own fresh stores


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until ``GET /healthz`` answers 200 (the store is open), or fail naming the server."""
    wait_for_port(port, timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"127.0.0.1:{port}/healthz not 200 within {timeout}s")
        time.sleep(0.05)


@contextmanager
def _servers(appendfsync: str) -> Iterator[Servers]:
    data = Path(tempfile.mkdtemp(prefix="agentfn-bench-dlq-"))
    python = sys.executable
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        redis_port = free_port()
        (data / "redis").mkdir()
        redis = shutil.which("redis-server")
        if redis is None:
            raise RuntimeError("redis-server not found (make test installs it)")
        procs.append(
            subprocess.Popen(
                [
                    redis,
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    appendfsync,
                    "--dir",
                    str(data / "redis"),
                    "--daemonize",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        wait_for_port(redis_port)
        redis_url = f"redis://127.0.0.1:{redis_port}"
        broker_port = free_port()
        (data / "broker.yaml").write_text(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\n"
            "metadata: {name: default, namespace: default}\n"
        )
        broker = subprocess.Popen(
            [
                python,
                "-m",
                "agentfn.functions.cli",
                "--log-level",
                "WARNING",
                "broker",
                "--port",
                str(broker_port),
                "--data-dir",
                str(data / "broker"),
                "--triggers",
                str(data / "broker.yaml"),
                "--fsync",
            ],
            cwd=ROOT,
            env=env,
        )
        procs.append(broker)
        stores = {"sqlite": f"sqlite:///{data}/sink.sqlite3", "redis": f"{redis_url}/0"}
        sinks: dict[str, int] = {}
        for name, url in stores.items():
            port = free_port()
            sink = subprocess.Popen(
                [
                    python,
                    "-m",
                    "agentfn.functions.cli",
                    "--log-level",
                    "WARNING",
                    "dlq",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--store",
                    url,
                ],
                cwd=ROOT,
                env=env,
            )
            procs.append(sink)
            sinks[name] = port
        _wait_healthy(broker_port, broker)
        for proc, port in zip(procs[2:], sinks.values(), strict=True):
            _wait_healthy(port, proc)
        yield Servers(
            broker_port,
            sinks,
            {"sqlite": str(data), "redis": f"{redis_url}/1"},
        )
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            proc.wait(timeout=15)
        shutil.rmtree(data, ignore_errors=True)


# -- the run -------------------------------------------------------------------------------------


def _row(case: str, round_: int, letters: int, rate: float, **extra: Any) -> dict[str, Any]:
    return {"case": case, "round": round_, "letters": letters, "per_s": rate, **extra}


def _run(args: argparse.Namespace) -> dict[str, Any]:
    c, n, replay_n = args.concurrency, args.letters, args.replay_letters
    rows: list[dict[str, Any]] = []
    with _servers(args.redis_appendfsync) as servers:
        ingress = f"http://127.0.0.1:{servers.broker}/default/default"
        warm = max(100, n // 20)
        _load(servers.broker, _to_ingress("warm", warm), c, _accepted)
        for store, port in servers.sinks.items():
            _load(port, _to_sink(f"warm-{store}", warm), c, _accepted)

        # Rounds alternate the cases, and each keeps its best run, so a burst of load from
        # elsewhere on the machine hurts one run, not one case. Every sink run starts from an
        # empty store: the sink re-reads the depth after each change, so a backlog slows it
        # (measured on its own below).
        for round_ in range(args.rounds):
            run = f"r{round_}"
            rate = _load(servers.broker, _to_ingress(f"{run}-ingress", n), c, _accepted)
            rows.append(_row("ingress", round_, n, rate))
            for store, port in servers.sinks.items():
                _emptied(port)
                rate = _load(port, _to_sink(f"{run}-{store}", n), c, _accepted)
                rows.append(_row(f"sink/{store}", round_, n, rate, waiting_before=0))
            for store, where in servers.raw.items():
                fresh = _raw_store(store, where, f"{run}-{store}")
                rate = asyncio.run(_raw_appends(fresh, f"{run}-raw-{store}", n, c))
                rows.append(_row(f"raw/{store}", round_, n, rate))
            for store, port in servers.sinks.items():
                _emptied(port)
                letters = f"{run}-replay-{store}"
                _load(port, _to_sink(letters, replay_n), c, _accepted)  # stored, not timed
                rate = _load(port, _replays(_keys(letters, replay_n), ingress), c, _replayed)
                if _waiting(port):
                    raise RuntimeError(f"{store}: letters still waiting after their replay")
                rows.append(_row(f"replay/{store}", round_, replay_n, rate))
            direct = _to_ingress(f"{run}-direct", replay_n, as_replayed=True)
            rate = _load(servers.broker, direct, c, _accepted)
            rows.append(_row("direct", round_, replay_n, rate))
        # The same load on top of a backlog of as many letters waiting.
        for store, port in servers.sinks.items():
            _emptied(port)
            _load(port, _to_sink(f"backlog-{store}", n), c, _accepted)
            waiting = _waiting(port)
            rate = _load(port, _to_sink(f"onto-backlog-{store}", n), c, _accepted)
            rows.append(_row(f"backlog/{store}", 0, n, rate, waiting_before=waiting))

    def best(case: str) -> float:
        return max(float(row["per_s"]) for row in rows if row["case"] == case)

    summary: dict[str, Any] = {"ingress_per_s": best("ingress"), "direct_per_s": best("direct")}
    for store in STORES:
        sink, raw, replay = best(f"sink/{store}"), best(f"raw/{store}"), best(f"replay/{store}")
        backlog = next(row for row in rows if row["case"] == f"backlog/{store}")
        summary[store] = {
            "sink_per_s": sink,
            "raw_append_per_s": raw,
            "sink_over_ingress": sink / summary["ingress_per_s"],
            "sink_over_raw": sink / raw,
            "sink_us_over_raw": 1e6 / sink - 1e6 / raw,
            "backlog_waiting": backlog["waiting_before"],
            "backlog_sink_per_s": backlog["per_s"],
            "replay_per_s": replay,
            "replay_over_direct": replay / summary["direct_per_s"],
        }
    return {"summary": summary, "results": rows}


def _print(figures: dict[str, Any]) -> None:
    summary = figures["summary"]
    print(f"{'case':24} {'letters/s':>10}  best of the rounds; ratios to the reference")
    print(f"{'broker ingress (ref)':24} {summary['ingress_per_s']:10.0f}")
    for store in STORES:
        s = summary[store]
        print(
            f"{'sink, ' + store:24} {s['sink_per_s']:10.0f}  {s['sink_over_ingress']:.2f}x ingress"
        )
        print(
            f"{'raw append, ' + store:24} {s['raw_append_per_s']:10.0f}  the sink adds "
            f"{s['sink_us_over_raw']:.0f} us/letter ({s['sink_over_raw']:.2f}x of raw)"
        )
        print(
            f"{'sink, ' + store + ' on backlog':24} {s['backlog_sink_per_s']:10.0f}  "
            f"with {s['backlog_waiting']} letters waiting"
        )
    print(f"{'straight to ingress (ref)':24} {summary['direct_per_s']:10.0f}")
    for store in STORES:
        s = summary[store]
        print(
            f"{'replay, ' + store:24} {s['replay_per_s']:10.0f}  "
            f"{s['replay_over_direct']:.2f}x straight to the ingress"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--letters", type=int, default=2000, help="letters per store run")
    parser.add_argument("--replay-letters", type=int, default=500, help="letters per replay run")
    parser.add_argument("--concurrency", type=int, default=32, help="connections / appenders")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many runs per case")
    parser.add_argument(
        "--redis-appendfsync",
        choices=("always", "everysec", "no"),
        default="always",
        help="the Redis store's durability (default: %(default)s, as fsync on elsewhere)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: small and one round")
    parser.add_argument(
        "--json",
        type=Path,
        default=report.script_result_path("bench_deadletters"),
        help="write the results here (default: %(default)s)",
    )
    args = parser.parse_args()
    if args.quick:
        args.letters, args.replay_letters, args.rounds = 300, 100, 1
    started = time.perf_counter()
    figures = _run(args)
    _print(figures)
    params = {
        "letters": args.letters,
        "replay_letters": args.replay_letters,
        "concurrency": args.concurrency,
        "best_of": args.rounds,
        "broker_fsync": True,
        "sqlite_synchronous": "FULL",
        "redis_appendfsync": args.redis_appendfsync,
        "letter_bytes": _size(_to_sink("size", 1)[0]),
        "quick": args.quick,
        "seconds": round(time.perf_counter() - started, 1),
    }
    path = report.write_script("bench_deadletters", params, figures, args.json)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
