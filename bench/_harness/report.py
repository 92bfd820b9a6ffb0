"""Results: ``<scenario>.json`` (raw repetitions + medians), ``RESULTS.md``, PNG plots.

``RESULTS.md`` and the plots are rendered from every ``<scenario>.json`` in the results folder,
so re-running one scenario (``--scenarios retry``) refreshes its section and keeps the others.
The single-script benchmarks (``bench/bench_*.py``) write ``bench_<name>.json`` beside them
(:func:`write_script`), stamped the same way; the README quotes those files.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from bench._harness.core import Env, ScenarioSummary

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
ORDER = ("throughput", "latency", "retry", "cold_start", "idempotency", "profile")
ROLE_ORDER = {"ours": 0, "floor": 1, "peer": 2}


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _when() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def script_result_path(script: str, results_dir: Path = RESULTS_DIR) -> Path:
    """Where ``bench/<script>.py`` writes its result (``bench_broker`` -> ``bench_broker.json``).

    Named after the script, not a scenario, so it never shadows a harness ``<scenario>.json``.
    """
    return results_dir / f"{script}.json"


def write_script(script: str, params: dict[str, Any], figures: dict[str, Any], path: Path) -> Path:
    """A single-script benchmark's result: when, on what machine, with which knobs, and every
    figure of the run (our cases and the floors or peers measured beside them, and the ratios).
    """
    document = {
        "script": f"bench/{script}.py",
        "when": _when(),
        "machine": machine(),
        "params": params,
        **figures,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


def write_json(env: Env, summary: ScenarioSummary) -> Path:
    document = {
        "scenario": summary.name,
        "title": summary.title,
        "description": summary.description,
        "when": _when(),
        "machine": machine(),
        "events": env.events,
        "repeats": env.repeats,
        "quick": env.quick,
        "seconds": round(summary.seconds, 1),
        "params": summary.params,
        "primary": summary.primary,
        "columns": [
            {"metric": c.metric, "label": c.label, "fmt": c.fmt, "higher": c.higher_is_better}
            for c in summary.columns
        ],
        "systems": [
            {
                "key": s.key,
                "label": s.label,
                "role": s.role,
                "knobs": vars(s.knobs),
                "stats": {k: v.as_dict() for k, v in s.stats().items()},
                "reps": s.reps,
                "errors": s.errors,
            }
            for s in summary.systems
        ],
        "notes": summary.notes,
    }
    path = env.results_dir / f"{summary.name}.json"
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


def _load(results_dir: Path) -> list[dict[str, Any]]:
    documents = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(document, dict) and "scenario" in document and "systems" in document:
            documents.append(document)
    known = {name: i for i, name in enumerate(ORDER)}
    documents.sort(key=lambda d: known.get(d["scenario"], len(ORDER)))
    return documents


def _cell(stats: dict[str, Any] | None, fmt: str) -> str:
    if not stats:
        return "n/a"
    median = fmt.format(stats["median"])
    if stats["n"] < 2:
        return median
    return f"{median} ({fmt.format(stats['min'])}-{fmt.format(stats['max'])})"


def _best_peer(document: dict[str, Any], metric: str, higher: bool) -> tuple[str, float] | None:
    values = [
        (s["key"], s["stats"][metric]["median"])
        for s in document["systems"]
        if s["role"] == "peer" and metric in s["stats"]
    ]
    values = [(k, v) for k, v in values if v]
    if not values:
        return None
    return max(values, key=lambda kv: kv[1] if higher else -kv[1])


def render_scenario(document: dict[str, Any]) -> str:
    columns = document["columns"]
    primary = document.get("primary")
    primary_col = next((c for c in columns if c["metric"] == primary), None)
    best = (
        _best_peer(document, primary, primary_col["higher"])
        if primary and primary_col is not None
        else None
    )
    header = ["system", *[c["label"] for c in columns]]
    if best:
        header.append(f"vs best peer ({best[0]})")
    lines = [
        f"### {document['title']}",
        "",
        document["description"],
        "",
        f"Median (min-max) of {_reps(document)} alternated repetition(s); "
        f"{document['machine']['cpus']} CPUs ({document['machine']['processor']}); "
        f"run {document['when']}, {document['seconds']:.0f} s"
        + (f"; parameters: {_params(document['params'])}" if document.get("params") else "")
        + ".",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    systems = sorted(document["systems"], key=lambda s: ROLE_ORDER.get(s["role"], 9))
    for system in systems:
        stats = system["stats"]
        cells = [f"**{system['label']}**" if system["role"] == "ours" else system["label"]]
        cells += [_cell(stats.get(c["metric"]), c["fmt"]) for c in columns]
        if best and primary_col is not None:
            value = stats.get(primary, {}).get("median")
            if "@" in system["key"]:
                cells.append("n/a (other load)")
            elif value:
                ratio = value / best[1] if primary_col["higher"] else best[1] / value
                cells.append(f"{ratio:.2f}x")
            else:
                cells.append("n/a")
        if system["errors"]:
            cells[0] += f" ({len(system['errors'])} failed run(s))"
        lines.append("| " + " | ".join(cells) + " |")
    errors = [f"{s['key']}: {e}" for s in document["systems"] for e in s["errors"]]
    if document.get("notes"):
        lines += ["", *[f"- {note}" for note in document["notes"]]]
    if errors:
        lines += ["", "Failed runs:", "", *[f"- {e}" for e in errors]]
    return "\n".join(lines)


def _reps(document: dict[str, Any]) -> int:
    """Repetitions actually run (a scenario may cap them below ``--repeats``)."""
    return max((len(s["reps"]) + len(s["errors"]) for s in document["systems"]), default=0)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if not isinstance(v, dict | list))


def render_knobs(documents: list[dict[str, Any]]) -> str:
    seen: dict[str, dict[str, Any]] = {}
    for document in documents:
        for system in document["systems"]:
            if "@" not in system["key"]:  # a load variant, configured as its base system
                seen.setdefault(system["key"], system)
    lines = [
        "### How each system was set up",
        "",
        "| system | processes | concurrency | guarantees |",
        "|---|---|---|---|",
    ]
    for system in sorted(seen.values(), key=lambda s: ROLE_ORDER.get(s["role"], 9)):
        knobs = system["knobs"]
        lines.append(
            f"| {system['label']} | {knobs['processes']} | {knobs['concurrency']} | "
            f"{knobs['guarantees']} |"
        )
    return "\n".join(lines)


def write_markdown(env: Env) -> str:
    documents = _load(env.results_dir)
    parts = [
        "## Results",
        "",
        "Generated by `make bench` (`bench/harness.py`): within each scenario every system ran "
        "on this machine in the same invocation, alternating, each repetition on freshly "
        "started processes.",
        "",
    ]
    if (env.results_dir / "throughput.png").exists() or any(
        d["scenario"] == "throughput" for d in documents
    ):
        parts += ["![throughput](throughput.png)", ""]
    for document in documents:
        parts += [render_scenario(document), ""]
    parts.append(render_knobs(documents))
    text = "\n".join(parts) + "\n"
    (env.results_dir / "RESULTS.md").write_text(text)
    return text


def write_plots(env: Env) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # no display where benchmarks run
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colours = {"ours": "#2b7bba", "floor": "#9e9e9e", "peer": "#e07b39"}
    written = []
    for document in _load(env.results_dir):
        plot = _PLOTS.get(document["scenario"])
        if plot is None:
            continue
        metrics, xlabel = plot
        systems = [s for s in document["systems"] if any(m in s["stats"] for m in metrics)]
        # Run order within each role (ours first); reversed, since barh draws bottom-up.
        systems.sort(key=lambda s: ROLE_ORDER.get(s["role"], 9))
        systems.reverse()
        if not systems:
            continue
        fig, axes = plt.subplots(
            1, len(metrics), figsize=(6 * len(metrics) + 2, 0.55 * len(systems) + 1.6)
        )
        axes = [axes] if len(metrics) == 1 else list(axes)
        for axis, metric in zip(axes, metrics, strict=True):
            labels, medians, low, high, bar_colours = [], [], [], [], []
            for system in systems:
                stats = system["stats"].get(metric)
                labels.append(system["label"])
                if stats is None:
                    medians.append(0.0)
                    low.append(0.0)
                    high.append(0.0)
                else:
                    medians.append(stats["median"])
                    low.append(stats["median"] - stats["min"])
                    high.append(stats["max"] - stats["median"])
                bar_colours.append(colours.get(system["role"], "#777777"))
            positions = range(len(labels))
            axis.barh(
                positions,
                medians,
                xerr=[low, high],
                color=bar_colours,
                capsize=3,
                error_kw={"elinewidth": 1},
            )
            for y, value, above in zip(positions, medians, high, strict=True):
                # Right of the error bar, so the number never sits on it.
                text = f" {value:,.0f}" if value >= 10 else f" {value:.2f}"
                axis.text(value + above, y, text, va="center", fontsize=8)
            axis.set_yticks(list(positions), labels if axis is axes[0] else [""] * len(labels))
            column = next(
                (c for c in document["columns"] if c["metric"] == metric),
                {"label": metric, "higher": True},
            )
            direction = "more is better" if column["higher"] else "less is better"
            axis.set_xlabel(xlabel or f"{column['label']} ({direction})")
            positive = [m for m in medians if m > 0]
            if positive and max(positive) / min(positive) > 50:
                # Latencies spanning milliseconds to seconds: linear would flatten the fast ones.
                axis.set_xscale("log")
                axis.margins(x=0.35)
            else:
                axis.margins(x=0.18)
        names = {"ours": "agentfn", "floor": "floor (no broker)", "peer": "peers"}
        present = {s["role"] for s in systems}
        fig.legend(
            handles=[Patch(color=colours[r], label=n) for r, n in names.items() if r in present],
            loc="lower center",
            ncol=3,
            fontsize=8,
            frameon=False,
        )
        fig.suptitle(
            f"{document['title']}\nmedian of {_reps(document)}, bars: min-max; "
            f"{document['machine']['cpus']} CPUs shared by producer, broker and workers",
            fontsize=9,
        )
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        path = env.results_dir / f"{document['scenario']}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


#: Scenario -> (metrics plotted side by side, x label when one).
_PLOTS: dict[str, tuple[tuple[str, ...], str]] = {
    "throughput": (("eps", "total_cpu_us"), ""),
    "latency": (("p50_ms", "p99_ms"), ""),
}
