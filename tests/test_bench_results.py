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


def _mib(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"


def _inference_document() -> dict[str, Any]:
    document = _load("bench_inference.json", "bench/bench_inference.py")
    assert not document["params"]["quick"], "the README quotes a full run, not a --quick one"
    detail = document["machine_detail"]
    assert detail["torch_threads"] >= 1
    assert detail["versions"]["torch"]
    # A run on a GPU names the card; a CPU run says none was visible.
    assert detail["gpu"] if detail["device"] != "cpu" else detail["gpu_note"]
    # Both sides computed the same embeddings.
    assert document["agreement_min_cosine"] > 0.999
    return document


def _inference_cells(document: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    cells = {(row["side"], row["batch_size"]): row for row in document["rows"]}
    for (side, size), row in cells.items():
        if side != "bare":
            bare = cells[("bare", size)]
            assert row["p50_vs_bare"] == pytest.approx(row["p50_ms"] / bare["p50_ms"])
            assert row["items_per_s_vs_bare"] == pytest.approx(
                row["items_per_s"] / bare["items_per_s"]
            )
    return cells


def _inference() -> list[str]:
    document = _inference_document()
    params = document["params"]
    cells = _inference_cells(document)

    def p(row: dict[str, Any]) -> str:
        return f"p50 {row['p50_ms']:.1f} / p99 {row['p99_ms']:.1f} ms"

    figures = []
    for size in params["batch_sizes"]:
        bare, rest, grpc = (cells[(side, size)] for side in ("bare", "ours-rest", "ours-grpc"))
        figures += [
            f"batch {size} ({params['reps_per_round'][str(size)]} calls per side and round, "
            f"best of {params['rounds']} alternated rounds)",
            f"bare {p(bare)} ({bare['items_per_s']:.0f} texts/s)",
            f"REST {p(rest)} ({rest['p50_vs_bare']:.2f}x bare's p50, "
            f"{rest['items_per_s']:.0f} texts/s)",
            f"gRPC {p(grpc)} ({grpc['p50_vs_bare']:.2f}x, {grpc['items_per_s']:.0f} texts/s)",
        ]
        if ("nowait-grpc", size) in cells:
            nowait = cells[("nowait-grpc", size)]
            figures.append(
                f"gRPC with `--max-batch-wait-ms 0` p50 {nowait['p50_ms']:.1f} ms "
                f"({nowait['p50_vs_bare']:.2f}x)"
            )
    concurrent = {row["side"]: row for row in document["concurrent"]}
    clients = params["concurrency"]
    for side in ("ours-rest", "ours-grpc"):
        row = concurrent[side]
        other = concurrent[side.replace("ours", "unbatched")]
        assert row["batching_gain"] == pytest.approx(row["items_per_s"] / other["items_per_s"])
    ours_grpc, ours_rest = concurrent["ours-grpc"], concurrent["ours-rest"]
    figures += [
        f"{clients} concurrent clients, 1 text each ({params['concurrent_texts_per_round']} "
        f"texts per round, best of {params['rounds']})",
        f"gRPC {ours_grpc['items_per_s']:.0f} texts/s "
        f"({ours_grpc['texts_per_model_call']:.1f} texts per model call, "
        f"p50 {ours_grpc['p50_ms']:.0f} ms), REST {ours_rest['items_per_s']:.0f}",
        f"`--max-batch-size 1`: gRPC {concurrent['unbatched-grpc']['items_per_s']:.0f}, "
        f"REST {concurrent['unbatched-rest']['items_per_s']:.0f}",
        f"batching buys {ours_grpc['batching_gain']:.2f}x / {ours_rest['batching_gain']:.2f}x",
        f"no wait (`--max-batch-wait-ms 0`) gRPC {concurrent['nowait-grpc']['items_per_s']:.0f} "
        f"({concurrent['nowait-grpc']['texts_per_model_call']:.1f} texts per model call)",
        f"bare encode of {clients} texts in one call: {concurrent['bare']['items_per_s']:.0f} "
        f"texts/s",
    ]
    probe, memory = document["probe"], document["memory"]
    assert probe["tokens_per_text"] == [256]
    figures += [
        f"{probe['batch']} texts x 256 tokens",
        f"bare p50 {probe['bare']['p50_ms']:.0f} ms, gRPC {probe['ours-grpc']['p50_ms']:.0f} ms "
        f"({probe['ours-grpc']['p50_vs_bare']:.2f}x)",
        f"peak RSS: server {_mib(memory['servers']['ours']['peak_rss_bytes'])}, "
        f"bare {_mib(memory['bare']['end']['peak_rss_bytes'])}",
    ]
    return figures


def test_the_readme_mig_table_is_the_stored_result() -> None:
    """The "Which MIG profile" table: model size, peak memory, p50 per batch size and the
    chosen profile with its arithmetic, all from ``bench/results/bench_inference.json``."""
    document = _inference_document()
    model, mig = document["model"], document["mig"]
    memory = document["memory"]
    start = README.index("### Which MIG profile\n")
    end = README.find("\n#", start + 1)
    text = " ".join(README[start : end if end != -1 else len(README)].split())
    assert "`bench/results/bench_inference.json`" in text
    cells = _inference_cells(document)
    assert mig["weights_bytes"] == model["parameters"] * 4
    assert mig["estimate_bytes"] == (
        mig["weights_bytes"] + mig["activations"]["bytes"] + mig["cuda_context_bytes"]
    )
    chosen = mig["chosen"]
    for card, choice in chosen.items():
        assert choice["profile"] in mig["profiles"][card]
        assert choice["slice_gb"] * 1e9 >= mig["headroom"] * mig["need_bytes"]
    figures = [
        f"{model['safetensors_bytes'] / 1e6:.1f} MB",
        f"{model['parameters'] / 1e6:.1f}M parameters",
        _mib(memory["servers"]["ours"]["peak_rss_bytes"]),
        _mib(memory["servers"]["ours"]["rss_idle_after_load_bytes"]),
        *(f"{cells[('ours-grpc', size)]['p50_ms']:.1f} ms" for size in (1, 8, 32)),
        f"{mig['weights_bytes'] / 1e6:.1f} MB",
        f"{mig['activations']['bytes'] / 1e6:.0f} MB",
        f"{mig['cuda_context_bytes'] / 2**30:.1f} GiB",
        f"{mig['estimate_bytes'] / 1e9:.2f} GB",
        *(f"`nvidia.com/mig-{choice['profile']}`" for choice in chosen.values()),
        f"{chosen['A100-80GB / H100-80GB']['times_the_need']:.1f}x",
        f"{mig['worst_case_gflop']:.0f} GFLOP",
        f"{mig['a100_1g_worst_case_ms_at_peak']:.0f} ms",
    ]
    missing = [figure for figure in figures if figure not in text]
    assert not missing, f"the MIG table lacks {missing}:\n{text}"


@pytest.mark.parametrize(
    ("result_file", "figures"),
    [
        ("bench_broker.json", _broker),
        ("bench_idempotency.json", _idempotency),
        ("bench_kafka.json", _kafka),
        ("bench_cesql.json", _cesql),
        ("bench_deadletters.json", _deadletters),
        ("bench_grpc.json", _grpc),
        ("bench_inference.json", _inference),
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
