"""``agentfn serve``: one agent over HTTP, as ``func run`` runs a Knative function locally."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
import uvicorn
from agentfn.functions._cli._process import tune_gc_for_serving
from agentfn.functions._loader import load_agent
from agentfn.functions.settings import Settings

_Target = Annotated[
    str | None,
    typer.Argument(
        help="MODULE:AGENT (dotted module or .py file; AGENT defaults to 'agent') "
        "[default: $AGENTFN_AGENT]",
        show_default=False,
    ),
]
_Port = Annotated[int | None, typer.Option(help="Port to listen on (default: $PORT, else 8080)")]
_Host = Annotated[str, typer.Option(help="Interface to bind")]
_Redis = Annotated[
    str | None,
    typer.Option(
        "--redis",
        help="Redis URL for idempotency records (default: $AGENTFN_REDIS_URL, else embedded)",
    ),
]
_Broker = Annotated[
    str | None,
    typer.Option(
        "--broker", help="Broker ingress URL for published events (default: $AGENTFN_BROKER_URL)"
    ),
]


def serve(
    target: _Target = None,
    port: _Port = None,
    host: _Host = "0.0.0.0",
    redis: _Redis = None,
    broker: _Broker = None,
) -> None:
    """Serve one agent: POST CloudEvents to it; GET /healthz, /readyz, /metrics."""
    # One image runs every agent: each Knative Service names its own in AGENTFN_AGENT.
    target = target or os.environ.get("AGENTFN_AGENT")
    if not target:
        raise typer.BadParameter("give a TARGET or set AGENTFN_AGENT", param_hint="TARGET")
    # Like uvicorn's --app-dir: the user's modules live where the command runs.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        agent = load_agent(target)
    except LookupError as error:
        raise typer.BadParameter(str(error), param_hint="TARGET") from None
    overrides: dict[str, object] = {}
    if port is not None:
        overrides["port"] = port
    if redis is not None:
        overrides["redis_url"] = redis
    if broker is not None:
        overrides["broker_url"] = broker
    settings = Settings(**overrides)  # type: ignore[arg-type]
    app = agent.app(settings=settings, configure_tracing=True)
    spec = agent.spec
    # Through click, not rich: importing rich would cost the cold start ~20 ms.
    name = typer.style(f"agent {spec.name}", fg="green")
    typer.echo(
        f"{name} on http://{host}:{settings.port} "
        f"consumes {', '.join(spec.consumes)}; emits {', '.join(spec.emits) or 'nothing'}; "
        f"idempotency: {settings.idempotency_backend}",
        err=True,
    )
    tune_gc_for_serving()
    uvicorn.run(
        app,
        host=host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws="none",  # an agent serves no WebSockets: not loading an implementation saves ~10 ms
    )
