"""The ``agentfn`` command line: the one place that composes brokers and agents."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from functions._cli.agents import agents
from functions._cli.broker import broker
from functions._cli.dev import dev
from functions._cli.display import display
from functions._cli.send import send
from functions._cli.serve import serve

__all__ = ["app", "main"]

app = typer.Typer(
    name="agentfn",
    help="Event-driven AI agents on Knative: send CloudEvents, run the embedded broker and agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version() -> str:
    try:
        return version("agentfn")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0.0.0+unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"agentfn {_version()}")
        raise typer.Exit


@app.callback()
def _root(
    _version_flag: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version."),
    ] = False,
    log_level: Annotated[str, typer.Option(help="Logging level of the process")] = "INFO",
) -> None:
    # The CLI owns the process, so it (and only it) configures the root logger.
    logging.basicConfig(  # noqa: TID251
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


app.command()(send)
app.command()(display)
app.command()(broker)
app.command()(serve)
app.command()(agents)
app.command()(dev)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
