"""Benchmarks against the peers a user would pick instead, side by side, on this machine.

Runs each scenario (``bench/scenarios/``) against our platform and the peers
(``bench/peers/``), alternating systems within each repetition, and writes
``bench/results/<scenario>.json`` (every repetition and the medians), ``bench/results/RESULTS.md``
(the tables, also printed) and ``bench/results/throughput.png``.

Run: ``python bench/harness.py [--quick] [--scenarios throughput,latency] [--systems ours,celery]
[--events N] [--repeats R]``; ``make bench`` runs it all.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._harness import report  # noqa: E402
from bench._harness.core import (  # noqa: E402
    Env,
    discover_scenarios,
    discover_systems,
    run_scenario,
)

T = TypeVar("T")

#: The order scenarios run in: latency takes its offered load from throughput's results.
ORDER = ("throughput", "latency", "retry", "cold_start", "idempotency", "profile")


def _run(main: Coroutine[Any, Any, T]) -> T:
    # uvloop, as our servers and FastStream's workers use: the producer shares the cores with
    # what it measures, so the cheaper loop bills less of its own cost to every side alike.
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(main)
    return uvloop.run(main)


def log(message: str) -> None:
    print(message, flush=True)


def main() -> None:
    scenarios = discover_scenarios()
    names = sorted(scenarios, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--scenarios", default=",".join(names), help=f"comma-separated, of {', '.join(names)}"
    )
    parser.add_argument("--systems", help="comma-separated system keys (default: all)")
    parser.add_argument("--events", type=int, help="events per throughput run (default 10000)")
    parser.add_argument("--repeats", type=int, help="repetitions per system (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: few events, one repetition"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--keep-logs", action="store_true", help="keep the children's logs")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only render RESULTS.md and the plots from the JSON already in --out",
    )
    args = parser.parse_args()
    if args.report_only:
        env = Env(args.out, args.out, events=0, repeats=0, quick=False)
        log(report.write_markdown(env))
        report.write_plots(env)
        return

    chosen = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in scenarios]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(names)}")
    systems = discover_systems()
    if args.systems:
        keys = {k.strip() for k in args.systems.split(",")}
        missing = keys - {s.key for s in systems}
        if missing:
            parser.error(f"unknown system(s) {', '.join(sorted(missing))}")
        systems = [s for s in systems if s.key in keys]

    logs = Path(tempfile.mkdtemp(prefix="agentfn-bench-"))
    env = Env(
        results_dir=args.out,
        logs_dir=logs,
        events=args.events or (1000 if args.quick else 10_000),
        repeats=args.repeats or (1 if args.quick else 3),
        quick=args.quick,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    log(
        f"agentfn peer benchmarks: {', '.join(chosen)}; {env.events} events, "
        f"{env.repeats} repetition(s), {os.cpu_count()} CPUs; logs in {logs}"
    )
    started = time.perf_counter()
    failed = False
    try:
        for name in sorted(chosen, key=names.index):
            scenario = scenarios[name]
            log(f"== {scenario.title}")
            summary = _run(run_scenario(env, scenario, systems, log))
            # A run that failed once still has its other repetitions in the table (and the
            # failure listed under it); a system with no run at all fails the invocation.
            failed = failed or any(s.errors and not s.reps for s in summary.systems)
            report.write_json(env, summary)
        total = time.perf_counter() - started
        text = report.write_markdown(env)
        report.write_plots(env)
        log("")
        log(text)
        log(f"wrote {env.results_dir}; total {total:.0f}s")
    finally:
        if failed or args.keep_logs:
            log(f"children's logs kept in {logs}")
        else:
            shutil.rmtree(logs, ignore_errors=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
