"""CESQL evaluation cost per event: compiled expressions against evaluating from the string.

For a handful of typical Trigger filters, prints ns per operation for

* ``matches``: ``compile(e).matches(event)``, what a Trigger runs per event;
* ``evaluate``: ``compile(e).evaluate(event)``, value and error list;
* ``evaluate(str)``: ``cesql.evaluate(e, event)``, which reuses a cached compilation;
* ``cold``: parsing and compiling from scratch, then evaluating once;

and, as a floor, a hand-written Python predicate equivalent to the first filter.

Every timing, the floor's included, goes to ``bench/results/bench_cesql.json`` (``--json``
elsewhere). Run: ``python bench/bench_cesql.py [--repeat R]``.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from agentfn.brokers import cesql  # noqa: E402
from agentfn.brokers.cesql._expression import CompiledExpression  # noqa: E402

from bench._harness import report  # noqa: E402

EVENT: dict[str, object] = {
    "specversion": "1.0",
    "id": "a7c3",
    "source": "agents/planner",
    "type": "agent.task.created",
    "subject": "task-42",
    "time": "2024-05-01T12:00:00Z",
    "priority": 7,
    "tenant": "acme",
    "retry": "2",
}

EXPRESSIONS = [
    "type = 'agent.task.created' AND source LIKE 'agents/%'",
    "type = 'agent.task.created'",
    "tenant IN ('acme', 'globex', 'initech') AND priority >= 5",
    "EXISTS subject AND subject LIKE 'task-_%' AND NOT (tenant = 'test')",
    "INT(retry) < 3 AND LOWER(type) LIKE '%.created'",
    "missingext = 'x' OR type LIKE 'agent.%.created'",
]


def _floor(event: dict[str, object]) -> bool:
    source = event.get("source")
    return (
        event.get("type") == "agent.task.created"
        and isinstance(source, str)
        and source.startswith("agents/")
    )


def _ns_per_op(function: Callable[[], object], repeat: int) -> float:
    timer = timeit.Timer(function)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e9


def _cold(expression: str) -> Callable[[], object]:
    def run() -> object:
        return CompiledExpression(expression).evaluate(EVENT)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timing runs; the best is shown")
    parser.add_argument(
        "--json",
        type=Path,
        default=report.script_result_path("bench_cesql"),
        help="write the results here (default: %(default)s)",
    )
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    first_matches = 0.0

    print(f"Python {sys.version.split()[0]}, best of {args.repeat}, ns per operation\n")
    header = f"{'matches':>9} {'evaluate':>9} {'eval(str)':>9} {'cold':>9}  expression"
    print(header)
    print("-" * len(header))
    for expression in EXPRESSIONS:
        compiled = cesql.compile(expression)
        value, errors = compiled.evaluate(EVENT)
        assert (value is True and not errors) or expression.startswith("missing"), expression
        timings = [
            _ns_per_op(partial(compiled.matches, EVENT), args.repeat),
            _ns_per_op(partial(compiled.evaluate, EVENT), args.repeat),
            _ns_per_op(partial(cesql.evaluate, expression, EVENT), args.repeat),
            _ns_per_op(_cold(expression), args.repeat),
        ]
        print(" ".join(f"{t:9.0f}" for t in timings), "", expression)
        matches, evaluate, evaluate_str, cold = timings
        first_matches = first_matches or matches
        rows.append(
            {
                "expression": expression,
                "matches_ns": matches,
                "evaluate_ns": evaluate,
                "evaluate_str_ns": evaluate_str,
                "cold_ns": cold,
            }
        )
    floor = _ns_per_op(partial(_floor, EVENT), args.repeat)
    print(f"{floor:9.0f} {'':9} {'':9} {'':9}  hand-written Python predicate for the first filter")
    path = report.write_script(
        "bench_cesql",
        {"repeat": args.repeat},
        {
            "expressions": rows,
            "floor": {"predicate": "hand-written Python for the first filter", "ns": floor},
            "first_matches_over_floor": first_matches / floor,
        },
        args.json,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
