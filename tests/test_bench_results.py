"""The README's single-script benchmark figures are the ones in ``bench/results/bench_*.json``.

Each table row of "Measured here" names the result file its figures come from; this test renders
those figures from the file, at the precision the README shows, and requires them in that row.
A README edited without a run, or a run written without updating the README, fails here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RESULTS = ROOT / "bench" / "results"


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


def _rows(result_file: str) -> str:
    """The table rows of "Measured here" that cite ``result_file``, joined."""
    rows = [
        line
        for line in _section("Measured here").splitlines()
        if line.startswith("|") and f"`bench/results/{result_file}`" in line
    ]
    assert rows, f"no row of the README's 'Measured here' table cites bench/results/{result_file}"
    return "\n".join(rows)


def _load(result_file: str, script: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((RESULTS / result_file).read_text())
    assert document["script"] == script
    machine = document["machine"]
    assert machine["cpus"] >= 1
    assert machine["python"]
    assert machine["processor"]
    assert document["when"]
    return document


def _k(value: float) -> str:
    return f"{value / 1000:.1f}k"


def _k_range(values: list[float]) -> str:
    low, high = min(values), max(values)
    if f"{low / 1000:.1f}" == f"{high / 1000:.1f}":
        return _k(low)
    return f"{low / 1000:.1f}-{high / 1000:.1f}k"


def _broker() -> list[str]:
    document = _load("bench_broker.json", "bench/bench_broker.py")
    summary, params = document["summary"], document["params"]
    return [
        f"({params['events']} events, {params['concurrency']} connections, "
        f"best of {params['best_of']})",
        f"(open loop, {summary['paced_rate']:.0f} events/s for 5 s)",
        f"{_k(summary['broker_eps'])} events/s end to end",
        f"straight to the subscriber: {_k(summary['floor_eps'])}/s",
        f"{summary['broker_over_floor']:.2f}x the floor",
        f"broker p50 {summary['paced_broker_p50_ms']:.1f} ms, "
        f"p99 {summary['paced_broker_p99_ms']:.1f} ms",
        f"(floor {summary['paced_floor_p50_ms']:.2f} / {summary['paced_floor_p99_ms']:.2f} ms)",
    ]


def _idempotency() -> list[str]:
    document = _load("bench_idempotency.json", "bench/bench_idempotency.py")
    rows, params = document["rows"], document["params"]
    at16 = {row["mode"]: row for row in rows if row["concurrency"] == 16}
    assert at16["plain"]["vs_plain"] == 1.0
    for row in at16.values():
        assert row["vs_plain"] == pytest.approx(row["events_per_s"] / at16["plain"]["events_per_s"])
    return [
        f"16 connections ({params['events']} events, best of {params['best_of']})",
        f"plain ASGI handler {_k(at16['plain']['events_per_s'])} events/s",
        f"{at16['off']['vs_plain']:.0%} with dedupe off",
        f"{at16['embedded']['vs_plain']:.0%} embedded dedupe",
        f"{at16['redis']['vs_plain']:.0%} Redis dedupe",
    ]


def _kafka() -> list[str]:
    document = _load("bench_kafka.json", "bench/bench_kafka.py")
    summary, params = document["summary"], document["params"]
    dispatch, raw = summary["dispatch_eps"], summary["raw_consume_eps"]
    assert summary["dispatch_over_raw_consume"] == pytest.approx(
        (sum(dispatch) / len(dispatch)) / (sum(raw) / len(raw))
    )
    return [
        f"({params['events']} events, two alternated runs each)",
        f"({params['concurrency']} connections, {params['http_events']} events,",
        f"{_k_range(dispatch)} vs {_k_range(raw)} events/s",
        f"{summary['dispatch_over_raw_consume']:.2f}x on average",
        f"{_k_range(summary['ingress_eps'])} events/s",
    ]


def _cesql() -> list[str]:
    document = _load("bench_cesql.json", "bench/bench_cesql.py")
    first = document["expressions"][0]
    assert first["expression"] == "type = 'agent.task.created' AND source LIKE 'agents/%'"
    return [
        f"(best of {document['params']['repeat']})",
        f"{first['matches_ns'] / 1000:.1f} µs per match",
        f"a hand-written Python predicate: {document['floor']['ns'] / 1000:.1f} µs",
    ]


def _deadletters() -> list[str]:
    document = _load("bench_deadletters.json", "bench/bench_deadletters.py")
    summary, params = document["summary"], document["params"]
    assert not params["quick"], "the README quotes a full run, not a --quick one"
    sqlite, redis = summary["sqlite"], summary["redis"]
    for store in (sqlite, redis):
        assert store["sink_over_ingress"] == pytest.approx(
            store["sink_per_s"] / summary["ingress_per_s"]
        )
        assert store["replay_over_direct"] == pytest.approx(
            store["replay_per_s"] / summary["direct_per_s"]
        )
    assert sqlite["backlog_waiting"] == redis["backlog_waiting"] == params["letters"]
    return [
        f"({params['letters']} letters per run from an empty store, "
        f"{params['concurrency']} connections, best of {params['best_of']})",
        f"Redis `appendfsync {params['redis_appendfsync']}`",
        f"SQLite {sqlite['sink_per_s']:.0f} letters/s ({sqlite['sink_over_ingress']:.2f}x the "
        f"ingress: {summary['ingress_per_s']:.0f}/s), Redis {redis['sink_per_s']:.0f} "
        f"({redis['sink_over_ingress']:.2f}x)",
        f"raw `append` in-process {sqlite['raw_append_per_s']:.0f} / "
        f"{redis['raw_append_per_s']:.0f}",
        f"onto {sqlite['backlog_waiting']} waiting letters {sqlite['backlog_sink_per_s']:.0f} / "
        f"{redis['backlog_sink_per_s']:.0f}",
        f"({params['replay_letters']} letters, {params['concurrency']} at once)",
        f"SQLite {sqlite['replay_per_s']:.0f} letters/s, Redis {redis['replay_per_s']:.0f}",
        f"straight to the ingress: {summary['direct_per_s']:.0f}/s "
        f"({sqlite['replay_over_direct']:.2f}x / {redis['replay_over_direct']:.2f}x)",
    ]


def _grpc() -> list[str]:
    document = _load("bench_grpc.json", "bench/bench_grpc.py")
    params = document["params"]
    assert not params["quick"], "the README quotes a full run, not a --quick one"
    assert params["idempotency"].startswith("embedded")
    cells = {(row["case"], row["concurrency"]): row for row in document["rows"]}
    for row in cells.values():
        if "floor" in row:
            floor = cells[(row["floor"], row["concurrency"])]
            assert row["throughput_vs_floor"] == pytest.approx(
                row["calls_per_s"] / floor["calls_per_s"]
            )
            assert row["p50_vs_floor"] == pytest.approx(row["p50_us"] / floor["p50_us"])

    def figures(case: str) -> str:
        one, many = cells[(case, 1)], cells[(case, 16)]
        text = (
            f"p50 {one['p50_us']:.0f} / p99 {one['p99_us']:.0f} µs at 1 caller, "
            f"{many['calls_per_s']:.0f} calls/s at 16"
        )
        if "floor" in one:
            text += (
                f" ({one['p50_vs_floor']:.2f}x the floor's p50, "
                f"{many['throughput_vs_floor']:.2f}x its calls/s)"
            )
        return text

    return [
        f"({params['calls']} calls per cell, best of {params['best_of']}",
        *(
            figures(case)
            for case in (
                "floor_unary",
                "floor_session",
                "grpc_unary",
                "grpc_client",
                "grpc_session",
                "http",
                "grpc_unary@uvloop",
            )
        ),
    ]


@pytest.mark.parametrize(
    ("result_file", "figures"),
    [
        ("bench_broker.json", _broker),
        ("bench_idempotency.json", _idempotency),
        ("bench_kafka.json", _kafka),
        ("bench_cesql.json", _cesql),
        ("bench_deadletters.json", _deadletters),
        ("bench_grpc.json", _grpc),
    ],
)
def test_the_readme_quotes_the_stored_result(result_file: str, figures: Any) -> None:
    rows = _rows(result_file)
    missing = [figure for figure in figures() if figure not in rows]
    assert not missing, f"README rows citing {result_file} lack {missing}:\n{rows}"


def test_every_cited_result_file_exists() -> None:
    cited = {
        part.split("`", 1)[0] for part in _section("Measured here").split("`bench/results/")[1:]
    }
    assert cited
    for name in cited:
        assert (RESULTS / name).is_file(), f"the README cites bench/results/{name}, not there"


def test_bench_results_md_quotes_the_stored_kafka_latency() -> None:
    latency = _load("bench_kafka.json", "bench/bench_kafka.py")["latency"]

    def p50s(case: str) -> str:
        values = [row["p50_ms"] for row in latency if row["case"] == case]
        assert values, case
        return f"{min(values):.1f}-{max(values):.1f}"

    ours = p50s("latency: KafkaEventLog append -> fetch")
    raw = p50s("latency: raw kafka-python produce -> poll")
    text = " ".join((ROOT / "bench" / "RESULTS.md").read_text().split())
    assert f"(p50 {ours} vs {raw} ms in two alternated runs" in text
    assert "`results/bench_kafka.json`" in text
