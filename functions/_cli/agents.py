"""``agentfn agents``: the declared agents, what they consume and what they emit."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer
from agentfn.functions._loader import discover_agents
from rich.console import Console
from rich.table import Table

console = Console()
errors_console = Console(stderr=True)


_Path = Annotated[
    str, typer.Argument(help="Dotted module or package, .py file, folder, or MODULE:AGENT")
]
_Json = Annotated[bool, typer.Option("--json", help="Print JSON (one object per agent)")]


def agents(path: _Path = "agentfn.functions.agents", as_json: _Json = False) -> None:
    """List the agents declared under PATH with their event types and deployment hints."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found, errors = discover_agents(path)
    except (ModuleNotFoundError, LookupError) as error:
        raise typer.BadParameter(str(error), param_hint="PATH") from None
    for problem in errors:
        errors_console.print(f"[yellow]skipped {problem}[/yellow]")
    if as_json:
        described = [{"target": f.target, **f.agent.spec.describe()} for f in found]
        typer.echo(json.dumps(described, indent=2))
        return
    if not found:
        errors_console.print(f"no agents under {path}")
        raise typer.Exit(1)
    table = Table(title=f"agents in {path}")
    for column in ("agent", "target", "consumes", "emits", "scale", "concurrency"):
        table.add_column(column, overflow="fold")
    for item in found:
        spec = item.agent.spec
        consumes: list[str] = []
        for handler in spec.handlers:
            filters = "".join(f" [{k}={v}]" for k, v in handler.filters.items())
            model = handler.input_model.__name__ if handler.input_model else "CloudEvent"
            consumes.extend(f"{t}{filters} ({model})" for t in handler.event_types)
        emits = [f"{t} ({m.__name__})" for h in spec.handlers for t, m in h.emits.items()]
        scaling = spec.scaling
        scale = f"{scaling.min_scale}..{scaling.max_scale or 'inf'}"
        concurrency = str(scaling.target_concurrency or "default")
        table.add_row(
            spec.name, item.target, "\n".join(consumes), "\n".join(emits) or "-", scale, concurrency
        )
    console.print(table)
