"""The ``agentfn`` command line: the one place that composes brokers and agents.

Each command lives in its own module under :mod:`agentfn.functions._cli`, imported only when that
command runs (or when help lists it): ``agentfn serve``, the process Knative scales from zero,
never pays for the broker's imports, nor ``agentfn send`` for uvicorn's.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Annotated, Any, Final

import typer
from typer.core import TyperGroup

__all__ = ["COMMANDS", "app", "main"]

#: Command name -> module of :mod:`agentfn.functions._cli` defining a function of that name, in the
#: order ``agentfn --help`` lists them.
COMMANDS: Final = (
    "send",
    "display",
    "broker",
    "serve",
    "agents",
    "dev",
    "dlq",
    "model",
    "render",
    "deploy",
)


def _load(name: str) -> Any:
    """The click command of ``agentfn.functions._cli.<name>``, importing that module now.

    The module defines a function of that name (one command) or a ``typer.Typer`` (a group of
    subcommands, such as ``agentfn dlq``).
    """
    function = getattr(importlib.import_module(f"agentfn.functions._cli.{name}"), name)
    if isinstance(function, typer.Typer):
        return typer.main.get_command(function)
    # Built as a one-command Typer with the root's settings: what `app.command()(function)`
    # registered before, so every command's help and options stay the same.
    single = typer.Typer(
        add_completion=False,
        rich_markup_mode=app.rich_markup_mode,
        pretty_exceptions_short=app.pretty_exceptions_short,
    )
    single.command()(function)
    return typer.main.get_command(single)


class _LazyCommands(MutableMapping[str, Any]):
    """A group's commands, each built from its module the first time it is looked up."""

    def __init__(self, loaded: Mapping[str, Any]) -> None:
        self._loaded: dict[str, Any] = dict(loaded)
        self._names = [*COMMANDS, *(name for name in loaded if name not in COMMANDS)]

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        found = self._loaded.get(name)
        if found is None:
            found = self._loaded[name] = _load(name)
        return found

    def __setitem__(self, name: str, command: Any) -> None:
        if name not in self._names:
            self._names.append(name)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self._names:
            raise KeyError(name)
        self._names.remove(name)
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names


class _LazyGroup(TyperGroup):
    """The root group: a command is imported when resolved (or listed by help), not before."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _LazyCommands(self.commands)


app = typer.Typer(
    name="agentfn",
    cls=_LazyGroup,
    help="Event-driven AI agents on Knative: send CloudEvents, run the embedded broker and agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # only --version needs it

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
