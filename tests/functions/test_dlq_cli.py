"""``agentfn dlq list|show|replay|purge`` against a real sink over HTTP.

Each test runs a :class:`DeadLetterSink` on a SQLite file, on loopback in a thread of its own
(its own event loop), with a recording HTTP receiver beside it standing in for the broker
ingress that replays go to. Letters are seeded the way the broker dead-letters them: a POST of
the CloudEvent with Knative's ``knativeerror*`` extensions to ``/<ns>/<broker>/<trigger>``.
The sink and the CLI read one fake clock, so ages and ``--since`` are exact.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentfn.brokers.deadletters import DeadLetterSettings, DeadLetterSink, letter_key, open_store
from agentfn.events import CloudEvent, to_binary
from agentfn.functions._cli import dlq as dlq_module
from agentfn.functions._cli._dlq_client import LetterClient
from agentfn.functions.cli import app
from typer.testing import CliRunner

from tests._servers import free_port
from tests._waiting import wait_until
from tests.functions._support import FakeClock, Sink, serving

ROOT = Path(__file__).resolve().parents[2]
START = 1_700_000_000.0  # 2023-11-14T22:13:20Z
runner = CliRunner()


@dataclass
class Running:
    """A sink on loopback, the receiver its replays go to, the clock of both and of the CLI."""

    url: str
    receiver: Sink
    receiver_url: str
    clock: FakeClock
    letters_posted: list[str] = field(default_factory=list)

    def post(
        self,
        trigger: str = "planner",
        *,
        event_id: str = "e-1",
        source: str = "/tests/dlq",
        type_: str = "plan.requested",
        data: Any = None,
        code: str | None = "422",
        error_body: bytes | None = b'{"reason": "bad plan", "field": "steps"}',
        dest: str | None = None,
        path: str | None = None,
    ) -> str:
        """Dead-letter one event as the broker does; the key of its letter."""
        extensions: dict[str, object] = {}
        dest = dest if dest is not None else f"http://{trigger}.default.svc/"
        extensions["knativeerrordest"] = dest
        if code is not None:
            extensions["knativeerrorcode"] = code
        if error_body is not None:
            extensions["knativeerrordata"] = base64.b64encode(error_body).decode()
        event = CloudEvent.new(
            type_, source, data if data is not None else {"goal": "ship"}, id=event_id, **extensions
        )
        headers, body = to_binary(event)
        answer = httpx.post(
            self.url + (path if path is not None else f"/default/default/{trigger}"),
            headers=headers,
            content=body,
        )
        assert answer.status_code == 202, answer.text
        key = letter_key(source, event_id, dest)
        self.letters_posted.append(key)
        return key

    def letter(self, key: str) -> dict[str, Any]:
        answer = httpx.get(f"{self.url}/v1/letters/{key}")
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def keys(self) -> list[str]:
        return [letter["key"] for letter in httpx.get(f"{self.url}/v1/letters").json()["letters"]]


class _SinkThread:
    """The sink and the receiver served by one event loop in a thread of their own."""

    def __init__(self, store_url: str, clock: FakeClock, **settings: Any) -> None:
        self._store_url = store_url
        self._clock = clock
        self._settings = settings
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.running: Running | None = None
        self._thread = threading.Thread(target=self._run, name="dlq-sink", daemon=True)

    def __enter__(self) -> Running:
        self._thread.start()
        wait_until(self._ready.is_set, timeout=30, message="the sink to listen")
        if self._error is not None:
            raise self._error
        assert self.running is not None
        return self.running

    def __exit__(self, *_: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the sink did not stop"
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as error:  # reported to the test by __enter__/__exit__
            self._error = error
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        receiver = Sink()
        async with serving(receiver) as receiver_url:
            settings = DeadLetterSettings(
                store=self._store_url, broker_url=receiver_url, **self._settings
            )
            sink = DeadLetterSink(open_store(self._store_url), settings=settings, clock=self._clock)
            async with sink:
                port = await sink.listen("127.0.0.1", 0)
                self.running = Running(
                    f"http://127.0.0.1:{port}", receiver, receiver_url, self._clock
                )
                self._ready.set()
                await self._stop.wait()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The sink's clock, and the CLI's (ages are ``clock() - arrived_at``)."""
    fake = FakeClock(START)
    monkeypatch.setattr(dlq_module, "clock", fake)
    return fake


@pytest.fixture
def sink(tmp_path: Path, clock: FakeClock) -> Iterator[Running]:
    with _SinkThread(f"sqlite:///{tmp_path / 'letters.sqlite3'}", clock) as running:
        yield running


def cli(running: Running | str, *args: str, **env: str) -> Any:
    url = running if isinstance(running, str) else running.url
    return runner.invoke(app, ["dlq", *args, "--url", url], env={"COLUMNS": "250", **env})


def listed(running: Running, *args: str) -> list[dict[str, Any]]:
    result = cli(running, "list", "--json", *args)
    assert result.exit_code == 0, result.output
    letters: list[dict[str, Any]] = json.loads(result.stdout)
    return letters


def rows(output: str) -> dict[str, list[str]]:
    """The table's rows by key (first cell), each split into its cells."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        cells = line.split()
        if cells and len(cells[0]) == 16:
            found[cells[0]] = cells
    return found


# -- list ---------------------------------------------------------------------------------------


def test_humanise_counts_whole_units() -> None:
    assert [dlq_module.humanise(s) for s in (0, 59.9, 60, 3599, 3600, 86399, 86400, -5)] == [
        "0s",
        "59s",
        "1m",
        "59m",
        "1h",
        "23h",
        "1d",
        "0s",
    ]


def test_list_prints_a_table_with_ages_codes_and_replays(sink: Running) -> None:
    first = sink.post("planner", event_id="e-1", code="422")
    sink.clock.advance(7200)
    second = sink.post("worker", event_id="e-2", type_="work.requested", code="500")
    sink.clock.advance(180)
    result = cli(sink, "list")
    assert result.exit_code == 0, result.output
    table = rows(result.stdout)
    assert table[first] == [
        first,
        "e-1",
        "plan.requested",
        "/tests/dlq",
        "planner",
        "422",
        "2h",
        "no",
    ]
    assert table[second] == [
        second,
        "e-2",
        "work.requested",
        "/tests/dlq",
        "worker",
        "500",
        "3m",
        "no",
    ]
    header = result.stdout.splitlines()[0].split()
    assert header == ["key", "id", "type", "source", "trigger", "code", "age", "replayed"]
    # Oldest first, as the API pages them.
    assert list(table) == [first, second]


def test_list_shows_when_a_letter_was_replayed_and_a_refused_replay(sink: Running) -> None:
    accepted = sink.post("planner", event_id="e-1")
    refused = sink.post("planner", event_id="e-2")
    assert cli(sink, "replay", accepted).exit_code == 0
    sink.receiver.statuses.append(503)
    assert cli(sink, "replay", refused).exit_code == 1
    sink.clock.advance(120)
    table = rows(cli(sink, "list").stdout)
    assert table[accepted][-2:] == ["2m", "ago"]
    assert table[refused][-2:] == ["refused", "503"]


def test_list_json_is_what_the_api_returned(sink: Running) -> None:
    sink.post("planner", event_id="e-1")
    sink.post("worker", event_id="e-2")
    api = httpx.get(f"{sink.url}/v1/letters").json()["letters"]
    assert listed(sink) == api
    assert [letter["id"] for letter in api] == ["e-1", "e-2"]


def test_list_filters_by_trigger_type_and_since(sink: Running) -> None:
    old = sink.post("planner", event_id="old", type_="plan.requested")
    sink.clock.advance(3600)
    work = sink.post("worker", event_id="work", type_="work.requested")
    plan = sink.post("planner", event_id="plan", type_="plan.requested")
    assert [x["key"] for x in listed(sink, "--trigger", "planner")] == [old, plan]
    assert [x["key"] for x in listed(sink, "--type", "work.requested")] == [work]
    # Resolved by the sink's clock: the last half hour is the two newer letters.
    assert [x["key"] for x in listed(sink, "--since", "30m")] == [work, plan]
    assert [x["key"] for x in listed(sink, "--since", "30m", "--trigger", "planner")] == [plan]
    empty = cli(sink, "list", "--trigger", "nobody")
    assert (empty.exit_code, empty.stdout.strip()) == (0, "no dead letters")


def test_list_stops_at_limit(sink: Running) -> None:
    keys = [sink.post(event_id=f"e-{n}") for n in range(5)]
    assert [x["key"] for x in listed(sink, "--limit", "3")] == keys[:3]
    assert len(rows(cli(sink, "list", "--limit", "2").stdout)) == 2


def test_the_client_follows_next_cursors(sink: Running) -> None:
    keys = [sink.post(event_id=f"e-{n}") for n in range(5)]
    client = LetterClient(sink.url, page_size=2)
    assert [x["key"] for x in client.iter_letters()] == keys
    assert [x["key"] for x in client.iter_letters(limit=3)] == keys[:3]
    # A page of two is what the API gives for limit=2, with a cursor to the rest.
    page, cursor = client.list(limit=2)
    assert ([x["key"] for x in page], cursor is not None) == (keys[:2], True)


def test_an_api_error_is_the_apis_message_and_exit_1(sink: Running) -> None:
    result = cli(sink, "list", "--since", "yesterday-ish")
    assert result.exit_code == 1
    assert "error:" in result.stderr
    assert "since" in result.stderr


# -- show ---------------------------------------------------------------------------------------


def test_show_by_key_prints_the_whole_letter_and_the_json_error_body(sink: Running) -> None:
    key = sink.post(
        "planner", event_id="e-1", data={"goal": "ship", "steps": 3}, code="422", dest=None
    )
    sink.clock.advance(300)
    result = cli(sink, "show", key)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"letter {key} from default/default/planner" in out
    for attribute in ("specversion", "id", "source", "type", "time"):
        assert attribute in out
    assert "plan.requested" in out
    # The data and the error body, each pretty-printed JSON.
    assert '"steps": 3' in out
    assert "knativeerrordest  http://planner.default.svc/" in out
    assert "knativeerrorcode  422" in out
    assert "knativeerrordata  40 bytes, decoded:" in out
    assert '"reason": "bad plan"' in out
    assert '"field": "steps"' in out
    assert base64.b64encode(b'{"reason": "bad plan", "field": "steps"}').decode() not in out
    assert "1: first 2023-11-14T22:13:20Z (5m ago), latest 2023-11-14T22:13:20Z (5m ago)" in out
    assert "state: waiting" in out
    assert "replays\n  none" in out


def test_show_a_text_error_body_and_the_replay_history(sink: Running) -> None:
    key = sink.post("planner", event_id="e-1", error_body=b"upstream timed out")
    sink.receiver.statuses.append(503)
    assert cli(sink, "replay", key).exit_code == 1
    sink.clock.advance(60)
    assert cli(sink, "replay", key).exit_code == 0
    out = cli(sink, "show", key).stdout
    assert "upstream timed out" in out
    history = [line.split() for line in out.split("replays\n", 1)[1].splitlines()[1:]]
    assert [row[:1] + row[2:6] for row in history] == [
        ["2023-11-14T22:13:20Z", "e-1", "no", "refused", "503"],
        ["2023-11-14T22:14:20Z", "e-1", "no", "accepted", "202"],
    ]
    assert history[0][1] == sink.receiver_url
    assert "state: replayed 2023-11-14T22:14:20Z" in out


def test_show_by_event_id(sink: Running) -> None:
    key = sink.post("planner", event_id="only-one")
    sink.post("planner", event_id="another")
    result = cli(sink, "show", "only-one")
    assert result.exit_code == 0, result.output
    assert f"letter {key} from default/default/planner" in result.stdout


def test_show_an_event_id_of_several_letters_names_their_keys(sink: Running) -> None:
    # The same event dead-lettered by two Triggers: two letters (two knativeerrordest).
    planner = sink.post("planner", event_id="shared")
    worker = sink.post("worker", event_id="shared")
    result = cli(sink, "show", "shared")
    assert result.exit_code == 1
    assert "error:" in result.stderr
    assert f"event id shared is in 2 letters ({planner}, {worker}); give one key" in result.stderr
    # Either key shows its own letter.
    assert f"letter {worker} from default/default/worker" in cli(sink, "show", worker).stdout


def test_show_unknown_id_exits_1_naming_it(sink: Running) -> None:
    sink.post()
    result = cli(sink, "show", "no-such-letter")
    assert result.exit_code == 1
    assert "no letter no-such-letter" in result.stderr


def test_show_a_redacted_error_body(tmp_path: Path, clock: FakeClock) -> None:
    body = b'{"token": "secret"}'
    store = f"sqlite:///{tmp_path / 'redacted.sqlite3'}"
    with _SinkThread(store, clock, redact_data=True) as running:
        key = running.post(error_body=body)
        out = cli(running, "show", key).stdout
    assert "knativeerrordata  redacted: 19 bytes, sha256 " in out
    assert hashlib.sha256(body).hexdigest() in out
    assert "secret" not in out


# -- replay -------------------------------------------------------------------------------------


def test_replay_one_sends_the_original_and_records_the_answer(sink: Running) -> None:
    key = sink.post("planner", event_id="e-1", data={"goal": "ship"})
    sink.clock.advance(30)
    result = cli(sink, "replay", key)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{key}  e-1  accepted 202"
    (sent,) = sink.receiver.events
    assert (sent.id, sent.source, sent.type, sent.data) == (
        "e-1",
        "/tests/dlq",
        "plan.requested",
        {"goal": "ship"},
    )
    assert not [name for name in sent.attributes if name.startswith("knativeerror")]
    letter = sink.letter(key)
    assert letter["replayed_at"] == START + 30
    assert [(r["status"], r["ok"], r["to"]) for r in letter["replays"]] == [
        (202, True, sink.receiver_url)
    ]


def test_replay_by_event_id(sink: Running) -> None:
    key = sink.post(event_id="by-id")
    result = cli(sink, "replay", "by-id")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{key}  by-id  accepted 202"
    assert [e.id for e in sink.receiver.events] == ["by-id"]


def test_a_second_replay_needs_force(sink: Running) -> None:
    key = sink.post(event_id="e-1")
    assert cli(sink, "replay", key).exit_code == 0
    again = cli(sink, "replay", key)
    assert again.exit_code == 1
    assert again.stdout.strip() == f"{key}  e-1  conflict: already replayed (use --force)"
    assert len(sink.letter(key)["replays"]) == 1
    forced = cli(sink, "replay", key, "--force")
    assert forced.exit_code == 0, forced.output
    # The conflict sent nothing: the forced replay is the second event the receiver got.
    assert [e.id for e in sink.receiver.events] == ["e-1", "e-1"]
    assert len(sink.letter(key)["replays"]) == 2


def test_replay_all_sends_every_waiting_letter_with_a_summary(sink: Running) -> None:
    done = sink.post("planner", event_id="done")
    assert cli(sink, "replay", done).exit_code == 0
    first = sink.post("planner", event_id="w-1")
    second = sink.post("worker", event_id="w-2")
    result = cli(sink, "replay", "--all")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert f"{first}  w-1  accepted 202" in lines
    assert f"{second}  w-2  accepted 202" in lines
    assert lines[-1] == "replayed 2 of 2"
    assert [e.id for e in sink.receiver.events] == ["done", "w-1", "w-2"]
    assert all(sink.letter(k)["replayed_at"] is not None for k in (first, second))
    nothing = cli(sink, "replay", "--all")
    assert (nothing.exit_code, nothing.stdout.strip()) == (0, "no waiting letters")


def test_replay_trigger_sends_only_that_triggers_waiting_letters(sink: Running) -> None:
    planner = sink.post("planner", event_id="p-1")
    worker = sink.post("worker", event_id="w-1")
    result = cli(sink, "replay", "--trigger", "worker")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{worker}  w-1  accepted 202"
    assert [e.id for e in sink.receiver.events] == ["w-1"]
    assert sink.letter(planner)["replayed_at"] is None


def test_replay_new_id_runs_it_again_as_a_new_event(sink: Running) -> None:
    key = sink.post(event_id="e-1")
    result = cli(sink, "replay", key, "--new-id")
    assert result.exit_code == 0, result.output
    (sent,) = sink.receiver.events
    assert sent.id != "e-1"
    assert sent.attributes["replayof"] == "e-1"
    assert result.stdout.strip() == f"{key}  e-1  accepted 202 as {sent.id}"
    (record,) = sink.letter(key)["replays"]
    assert (record["event_id"], record["new_id"]) == (sent.id, True)


def test_replay_dry_run_shows_the_event_and_sends_nothing(sink: Running) -> None:
    key = sink.post(event_id="e-1", data={"goal": "ship"})
    result = cli(sink, "replay", key, "--dry-run")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"{key}  e-1  would send:")
    shown = json.loads(out.split("would send:", 1)[1])
    assert (shown["id"], shown["data"]) == ("e-1", {"goal": "ship"})
    assert not [name for name in shown if name.startswith("knativeerror")]
    assert sink.letter(key)["replays"] == []
    # Nothing was sent: the real replay afterwards is the first event the receiver gets.
    assert cli(sink, "replay", key).exit_code == 0
    assert [e.id for e in sink.receiver.events] == ["e-1"]


def test_replay_to_another_ingress(sink: Running) -> None:
    key = sink.post(event_id="e-1")
    other = Sink()

    async def replay_there() -> Any:
        async with serving(other) as there:
            return await asyncio.to_thread(cli, sink, "replay", key, "--to", there + "/ns/b")

    result = asyncio.run(replay_there())
    assert result.exit_code == 0, result.output
    assert ([e.id for e in other.events], other.paths) == (["e-1"], ["/ns/b"])
    assert sink.receiver.events == []


def test_a_refused_or_unanswered_replay_exits_1(sink: Running) -> None:
    refused = sink.post(event_id="refused")
    accepted = sink.post(event_id="accepted")
    sink.receiver.statuses.append(503)
    result = cli(sink, "replay", refused, accepted)
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"{refused}  refused  refused 503"
    assert lines[1] == f"{accepted}  accepted  accepted 202"
    assert lines[-1] == "replayed 1 of 2"
    assert sink.letter(refused)["replayed_at"] is None
    nobody = f"http://127.0.0.1:{free_port()}"
    unanswered = cli(sink, "replay", refused, "--to", nobody)
    assert unanswered.exit_code == 1
    assert unanswered.stdout.startswith(f"{refused}  refused  unanswered")


def test_replay_needs_ids_all_or_trigger(sink: Running) -> None:
    key = sink.post()
    for args in ((), (key, "--all"), ("--all", "--trigger", "planner")):
        result = cli(sink, "replay", *args)
        assert result.exit_code == 2, (args, result.output)
    assert sink.receiver.events == []


def test_replay_of_an_unknown_id_sends_nothing(sink: Running) -> None:
    key = sink.post(event_id="e-1")
    result = cli(sink, "replay", key, "missing")
    assert result.exit_code == 1
    assert "no letter missing" in result.stderr
    assert sink.letter(key)["replays"] == []


# -- purge --------------------------------------------------------------------------------------


def test_purge_by_key_and_by_event_id(sink: Running) -> None:
    first = sink.post(event_id="e-1")
    sink.post(event_id="e-2")
    kept = sink.post(event_id="e-3")
    result = cli(sink, "purge", first, "e-2")
    assert (result.exit_code, result.stdout.strip()) == (0, "purged 2 letters")
    assert sink.keys() == [kept]
    missing = cli(sink, "purge", first)
    assert missing.exit_code == 1
    assert f"no letter {first}" in missing.stderr


def test_purge_replayed(sink: Running) -> None:
    replayed = sink.post(event_id="e-1")
    waiting = sink.post(event_id="e-2")
    assert cli(sink, "replay", replayed).exit_code == 0
    result = cli(sink, "purge", "--replayed")
    assert (result.exit_code, result.stdout.strip()) == (0, "purged 1 letter")
    assert sink.keys() == [waiting]


def test_purge_before(sink: Running) -> None:
    old = sink.post(event_id="old")
    sink.clock.advance(7200)
    new = sink.post(event_id="new")
    assert sink.keys() == [old, new]
    result = cli(sink, "purge", "--before", "1h")
    assert (result.exit_code, result.stdout.strip()) == (0, "purged 1 letter")
    assert sink.keys() == [new]


def test_purge_replayed_before(sink: Running) -> None:
    old_replayed = sink.post(event_id="old-replayed")
    old_waiting = sink.post(event_id="old-waiting")
    sink.clock.advance(7200)
    new_replayed = sink.post(event_id="new-replayed")
    assert cli(sink, "replay", old_replayed, new_replayed).exit_code == 0
    result = cli(sink, "purge", "--replayed", "--before", "1h")
    assert (result.exit_code, result.stdout.strip()) == (0, "purged 1 letter")
    assert sink.keys() == [old_waiting, new_replayed]


def test_purge_needs_ids_or_a_filter(sink: Running) -> None:
    key = sink.post()
    for args in ((), (key, "--replayed")):
        result = cli(sink, "purge", *args)
        assert result.exit_code == 2, (args, result.output)
    assert sink.keys() == [key]


# -- the sink's address -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("list",), ("show", "abc"), ("replay", "abc"), ("replay", "--all"), ("purge", "--replayed")],
)
def test_an_unreachable_sink_exits_2_naming_its_url(args: tuple[str, ...]) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    result = cli(nobody, *args)
    assert result.exit_code == 2
    assert f"error: cannot reach the dead-letter sink at {nobody} (" in result.stderr


def test_the_url_comes_from_agentfn_dlq_url(sink: Running) -> None:
    key = sink.post()
    result = runner.invoke(
        app, ["dlq", "list", "--json"], env={"AGENTFN_DLQ_URL": sink.url, "COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    assert [x["key"] for x in json.loads(result.stdout)] == [key]


def test_dlq_help_lists_every_command() -> None:
    result = runner.invoke(app, ["dlq", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for command in ("serve", "list", "show", "replay", "purge"):
        assert command in result.stdout


# -- the whole thing as a user runs it ----------------------------------------------------------


def test_serve_and_the_clients_as_processes(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AGENTFN_")},
        "PYTHONPATH": str(ROOT),
    }
    agentfn = [sys.executable, "-m", "agentfn.functions.cli"]
    store = f"sqlite:///{tmp_path / 'letters.sqlite3'}"
    server = subprocess.Popen(
        [*agentfn, "dlq", "serve", "--host", "127.0.0.1", "--port", str(port), "--store", store],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                return httpx.get(f"{url}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout=30, message="agentfn dlq serve to be healthy")
        event = CloudEvent.new(
            "plan.requested",
            "/tests/dlq",
            {"goal": "ship"},
            id="e-1",
            knativeerrordest="http://planner.default.svc/",
            knativeerrorcode="422",
        )
        headers, body = to_binary(event)
        assert (
            httpx.post(f"{url}/default/default/planner", headers=headers, content=body).status_code
            == 202
        )
        listed_out = subprocess.run(
            [*agentfn, "dlq", "list", "--json", "--url", url],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert listed_out.returncode == 0, listed_out.stderr
        (letter,) = json.loads(listed_out.stdout)
        assert (letter["id"], letter["trigger"], letter["error"]["code"]) == (
            "e-1",
            "planner",
            "422",
        )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
    assert code == 0
