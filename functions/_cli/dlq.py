"""``agentfn dlq``: the dead-letter sink (``serve``) and its clients (list, show, replay, purge).

The clients talk only to the sink's HTTP API (:mod:`agentfn.functions._cli._dlq_client`), so they
work the same against the sink of ``agentfn dev`` and one port-forwarded from a cluster. They
exit 2 when the sink cannot be reached or the command line is wrong, 1 when the sink refused
what was asked (or a replay was not accepted).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Final, NoReturn

import typer
from agentfn.functions._cli._dlq_client import (
    DEFAULT_URL,
    LetterClient,
    ReplayConflictError,
    SinkError,
    SinkUnreachableError,
)
from rich.console import Console
from rich.json import JSON
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

__all__ = ["dlq"]

#: Seconds since the epoch now: ages are ``clock() - arrived_at`` (tests set a fixed one).
clock: Callable[[], float] = time.time

#: The broker's extensions the ``error`` section shows (decoded), not the attributes table.
_ERROR_ATTRIBUTES: Final = ("knativeerrordest", "knativeerrorcode", "knativeerrordata")


class _Group(TyperGroup):
    """``serve`` (the sink, uvicorn, the stores) is imported only when it runs or help lists it.

    The clients need none of it: they are a few HTTP requests.
    """

    # Typed loosely, as cli.py's group: typer bundles its own click, whose types vary by version.
    def list_commands(self, ctx: Any) -> list[str]:
        return ["serve", *(name for name in super().list_commands(ctx) if name != "serve")]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name == "serve" and "serve" not in self.commands:
            from agentfn.functions._cli._dlq_serve import serve

            single = typer.Typer(add_completion=False, rich_markup_mode=dlq.rich_markup_mode)
            single.command("serve")(serve)
            self.commands["serve"] = typer.main.get_command(single)
        return super().get_command(ctx, cmd_name)


dlq = typer.Typer(
    name="dlq",
    cls=_Group,
    help="Dead letters: run the sink that keeps them, list, show, replay and purge them.",
    no_args_is_help=True,
    add_completion=False,
)


Url = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="AGENTFN_DLQ_URL",
        help="The dead-letter sink (agentfn dev serves one on port 8081)",
    ),
]


def _stdout() -> Console:
    # Built per command, not at import: the width comes from the environment it runs in.
    return Console(highlight=False)


def _fail(message: str, code: int) -> NoReturn:
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[red]error:[/red] {escape(message)}"
    )
    raise typer.Exit(code)


@contextlib.contextmanager
def _talking() -> Iterator[None]:
    """The sink's failures as the CLI reports them: unreachable exits 2, refused exits 1."""
    try:
        yield
    except SinkUnreachableError as error:
        _fail(str(error), 2)
    except SinkError as error:
        _fail(error.message, 1)


# -- formatting ---------------------------------------------------------------------------------


def humanise(seconds: float) -> str:
    """A short age: ``42s``, ``3m``, ``2h``, ``5d`` (whole units, rounded down)."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _ago(at: float) -> str:
    return f"{humanise(clock() - at)} ago"


def _timestamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _answer(replay: dict[str, Any]) -> str:
    """A replay's answer in a few words: ``accepted 202``, ``refused 503``, ``unanswered``."""
    status = replay.get("status")
    if replay.get("ok"):
        return f"accepted {status}"
    if status is not None:
        return f"refused {status}"
    return "unanswered"


def _replayed(letter: dict[str, Any]) -> str:
    """The ``replayed`` column: when, or why the last try did not count, or ``no``."""
    if letter.get("replayed_at") is not None:
        return _ago(float(letter["replayed_at"]))
    replays = letter.get("replays") or []
    if replays and not replays[-1].get("ok"):
        return _answer(replays[-1])
    return "no"


def _origin(letter: dict[str, Any]) -> str:
    return "/".join(letter.get(part) or "?" for part in ("namespace", "broker", "trigger"))


def _letters_table(letters: Sequence[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False)
    # Long ids, types and names fold; the short columns never break mid-word.
    for column in ("key", "id", "type", "source", "trigger", "code", "age", "replayed"):
        short = column in ("key", "code", "age", "replayed")
        table.add_column(column, overflow="fold", no_wrap=short)
    for letter in letters:
        table.add_row(
            *(
                Text(str(value))
                for value in (
                    letter["key"],
                    letter["id"],
                    letter["type"],
                    letter["source"],
                    letter.get("trigger") or "-",
                    (letter.get("error") or {}).get("code") or "-",
                    humanise(clock() - float(letter["arrived_at"])),
                    _replayed(letter),
                )
            )
        )
    return table


def _print_data(console: Console, event: dict[str, Any]) -> None:
    if "data_base64" in event:
        body = _b64(str(event["data_base64"]))
        length = "?" if body is None else str(len(body))
        kind = event.get("datacontenttype", "no content type")
        console.print(Text(f"  binary ({kind}): {length} bytes"))
    elif "data" not in event or event["data"] is None:
        console.print("  none")
    elif isinstance(event["data"], str):
        _print_body(console, event["data"].encode())
    else:
        console.print(JSON.from_data(event["data"]))


def _print_body(console: Console, body: bytes) -> None:
    """A body as JSON (pretty) when it is JSON, as text when it is text, else its size."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        console.print(Text(f"  binary: {len(body)} bytes"))
        return
    try:
        parsed = json.loads(text)
    except ValueError:
        console.print(Text(text))
        return
    console.print(JSON.from_data(parsed))


def _print_error(console: Console, letter: dict[str, Any]) -> None:
    error = letter.get("error") or {}
    console.print(Text(f"  knativeerrordest  {error.get('dest') or '-'}"))
    console.print(Text(f"  knativeerrorcode  {error.get('code') or '-'}"))
    data = error.get("data")
    if data is None:
        console.print("  knativeerrordata  none")
        return
    if data.get("redacted"):
        console.print(
            Text(f"  knativeerrordata  redacted: {data['length']} bytes, sha256 {data['sha256']}")
        )
        return
    console.print(Text(f"  knativeerrordata  {data['length']} bytes, decoded:"))
    raw = data.get("raw")
    body = None if raw is None else _b64(str(raw))
    if body is None:  # not base64: kept as the broker sent it
        console.print(Text(str(raw)))
    else:
        _print_body(console, body)


def _b64(raw: str) -> bytes | None:
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None


def _print_letter(console: Console, letter: dict[str, Any]) -> None:
    event = letter.get("event") or {}
    console.print(Text(f"letter {letter['key']} from {_origin(letter)}", style="bold"))
    console.print("[bold]attributes[/bold]")
    attributes = Table.grid(padding=(0, 2))
    attributes.add_column(style="cyan")
    attributes.add_column(overflow="fold")
    for name, value in event.items():
        if name not in ("data", "data_base64", *_ERROR_ATTRIBUTES):
            attributes.add_row(Text(f"  {name}"), Text(str(value)))
    console.print(attributes)
    console.print("[bold]data[/bold]")
    _print_data(console, event)
    console.print("[bold]error[/bold]")
    _print_error(console, letter)
    console.print("[bold]arrivals[/bold]")
    first, latest = float(letter["first_arrived_at"]), float(letter["arrived_at"])
    console.print(
        Text(
            f"  {letter.get('arrivals', 1)}: first {_timestamp(first)} ({_ago(first)}), "
            f"latest {_timestamp(latest)} ({_ago(latest)})"
        )
    )
    replayed_at = letter.get("replayed_at")
    state = "waiting" if replayed_at is None else f"replayed {_timestamp(float(replayed_at))}"
    console.print(Text(f"  state: {state}"))
    console.print("[bold]replays[/bold]")
    replays = letter.get("replays") or []
    if not replays:
        console.print("  none")
        return
    history = Table(box=None, pad_edge=False)
    for column in ("at", "to", "event id", "new id", "answer", "error"):
        history.add_column(column, overflow="fold")
    for replay in replays:
        history.add_row(
            *(
                Text(str(value))
                for value in (
                    _timestamp(float(replay["at"])),
                    replay["to"],
                    replay["event_id"],
                    "yes" if replay.get("new_id") else "no",
                    _answer(replay),
                    replay.get("error") or "",
                )
            )
        )
    console.print(history)


def _resolve(client: LetterClient, idents: Sequence[str]) -> list[str]:
    """The keys ``idents`` name (a key, or an event id of exactly one letter), in order, once."""
    keys: list[str] = []
    for ident in idents:
        found = client.find(ident)
        if not found:
            _fail(f"no letter {ident} (neither a key nor an event id of one)", 1)
        if len(found) > 1:
            named = ", ".join(letter["key"] for letter in found)
            _fail(f"event id {ident} is in {len(found)} letters ({named}); give one key", 1)
        if found[0]["key"] not in keys:
            keys.append(found[0]["key"])
    return keys


# -- commands -----------------------------------------------------------------------------------


@dlq.command("list")
def list_letters(
    trigger: Annotated[str | None, typer.Option(help="Only letters of this Trigger")] = None,
    event_type: Annotated[
        str | None, typer.Option("--type", help="Only letters of this CloudEvent type")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only letters that arrived this long ago or later (90s, 15m, 2h, 1d, PT1H) "
            "or since an RFC 3339 time"
        ),
    ] = None,
    limit: Annotated[int, typer.Option(help="Show this many letters at most", min=1)] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the letters as the API returns them")
    ] = False,
    url: Url = DEFAULT_URL,
) -> None:
    """List dead letters, oldest first."""
    client = LetterClient(url)
    with _talking():
        letters = list(
            client.iter_letters(limit=limit, trigger=trigger, type=event_type, since=since)
        )
    if as_json:
        typer.echo(json.dumps(letters, indent=2))
        return
    console = _stdout()
    if not letters:
        console.print("no dead letters")
        return
    console.print(_letters_table(letters))


@dlq.command("show")
def show(
    ident: Annotated[str, typer.Argument(metavar="ID", help="A letter key, or an event id")],
    url: Url = DEFAULT_URL,
) -> None:
    """Show one letter whole: attributes, data, the error body decoded, arrivals, replays."""
    client = LetterClient(url)
    with _talking():
        (key,) = _resolve(client, [ident])
        letter = client.get(key)
    if letter is None:  # purged between the two requests
        _fail(f"no letter {ident}", 1)
    _print_letter(_stdout(), letter)


@dlq.command("replay")
def replay(
    idents: Annotated[
        list[str] | None,
        typer.Argument(metavar="ID", help="Letter keys or event ids", show_default=False),
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Replay every waiting letter")] = False,
    trigger: Annotated[
        str | None, typer.Option(help="Replay every waiting letter of this Trigger")
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="BROKER_URL",
            help="The broker ingress to send to (default: the sink's AGENTFN_BROKER_URL)",
        ),
    ] = None,
    new_id: Annotated[
        bool,
        typer.Option("--new-id", help="Run it again as a new event (replayof names the original)"),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be sent; send nothing")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replay letters that were replayed already")
    ] = False,
    url: Url = DEFAULT_URL,
) -> None:
    """Send letters' original events to the broker again (same id and source)."""
    if bool(idents) + every + (trigger is not None) != 1:
        raise typer.BadParameter(
            "give letter ids, --all or --trigger (one of them)", param_hint="ID / --all / --trigger"
        )
    client = LetterClient(url)
    with _talking():
        if idents:
            keys = _resolve(client, idents)
        else:
            waiting = client.iter_letters(replayed=False, trigger=trigger)
            keys = [letter["key"] for letter in waiting]
    console = _stdout()
    if not keys:
        console.print("no waiting letters")
        return
    with _talking():
        failed = _replay_all(console, client, keys, to=to, new_id=new_id, force=force, dry=dry_run)
    if failed:
        raise typer.Exit(1)


def _replay_all(
    console: Console,
    client: LetterClient,
    keys: Sequence[str],
    *,
    to: str | None,
    new_id: bool,
    force: bool,
    dry: bool,
) -> int:
    """Replay each letter, one line each (a progress bar for many); how many were not accepted."""
    failed = 0
    with Progress(console=console, transient=True, disable=len(keys) < 2) as progress:
        task = progress.add_task("replaying", total=len(keys))
        for key in keys:
            line, ok, sent = _replay_one(client, key, to=to, new_id=new_id, force=force, dry=dry)
            failed += not ok
            progress.console.print(line)
            if sent is not None:
                progress.console.print(JSON.from_data(sent))
            progress.advance(task)
    if len(keys) > 1:
        done = "would replay" if dry else "replayed"
        console.print(f"{done} {len(keys) - failed} of {len(keys)}")
    return failed


def _replay_one(
    client: LetterClient, key: str, *, to: str | None, new_id: bool, force: bool, dry: bool
) -> tuple[Text, bool, dict[str, Any] | None]:
    """The line of one replay, whether it counts as done, and (dry run) the event it would send."""
    try:
        answer = client.replay(key, to=to, new_id=new_id, force=force, dry_run=dry)
    except ReplayConflictError as conflict:
        letter = conflict.body.get("letter") or {}
        line = f"{key}  {letter.get('id', '?')}  conflict: already replayed (use --force)"
        return Text(line, style="yellow"), False, None
    except SinkError as error:
        if error.status != 404:
            raise
        return Text(f"{key}  ?  {error.message}", style="red"), False, None
    event = answer.get("event") or {}
    original = answer["letter"]["id"]
    if answer.get("dry_run"):
        again = f" as {event.get('id')}" if new_id else ""
        return Text(f"{key}  {original}  would send{again}:"), True, event
    record = answer.get("replay") or {}
    line = f"{key}  {original}  {_answer(record)}"
    if record.get("new_id"):
        line += f" as {record.get('event_id')}"
    if not record.get("ok") and record.get("error"):
        line += f": {record['error']}"
    return Text(line, style="green" if record.get("ok") else "red"), bool(record.get("ok")), None


@dlq.command("purge")
def purge(
    idents: Annotated[
        list[str] | None,
        typer.Argument(metavar="ID", help="Letter keys or event ids", show_default=False),
    ] = None,
    replayed: Annotated[
        bool, typer.Option("--replayed", help="Purge every letter replayed since it arrived")
    ] = False,
    before: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Purge letters that arrived longer ago than this (2h, 7d) or before an "
            "RFC 3339 time",
        ),
    ] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Delete letters for good: by id, or every replayed one, or every one older than DURATION."""
    by_filter = replayed or before is not None
    if bool(idents) == by_filter:
        raise typer.BadParameter(
            "give letter ids, or --replayed and/or --before (not both kinds)",
            param_hint="ID / --replayed / --before",
        )
    client = LetterClient(url)
    with _talking():
        if idents:
            purged = sum(client.delete(key) for key in _resolve(client, idents))
        else:
            purged = client.purge(replayed=True if replayed else None, before=before)
    _stdout().print(f"purged {purged} letter{'' if purged == 1 else 's'}")
