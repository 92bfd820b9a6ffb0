"""The sink's JSON API under ``/v1/``: list, show, replay, purge, depth (``agentfn dlq`` uses it).

Every answer is JSON; an error is ``{"error": "<message naming the field>", ...}``. Times in
filters are read by the sink's clock (``since=15m``: arrived in the 15 minutes before the
sink's now), so a CLI on a laptop and a sink port-forwarded from a cluster agree however far
apart their clocks are; each letter returned carries its ``age`` by that clock too.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import aiohttp
from agentfn.brokers.deadletters._depth import DepthWatch
from agentfn.brokers.deadletters._http import HttpError, respond_json
from agentfn.brokers.deadletters._metrics import DeadLetterMetrics, ReplayOutcome
from agentfn.brokers.deadletters.letters import (
    DeadLetter,
    LetterQuery,
    Replay,
    replay_event,
)
from agentfn.brokers.deadletters.store import (
    DeadLetterStore,
    LetterNotFoundError,
    LetterStoreUnavailableError,
)
from agentfn.brokers.delivery import parse_duration
from agentfn.events import CloudEvent, new_event_id, to_http
from agentfn.events.http import event_to_json

from agentfn._asgi import Receive, Scope, Send, read_body

__all__ = ["LettersApi", "parse_instant"]

log = logging.getLogger(__name__)

_FILTERS: Final = ("namespace", "broker", "trigger", "type", "event_id", "since", "before")
_LIST_PARAMETERS: Final = frozenset({*_FILTERS, "replayed", "limit", "after"})
_PURGE_PARAMETERS: Final = frozenset({*_FILTERS, "replayed", "all"})
_REPLAY_FIELDS: Final = frozenset({"to", "new_id", "force", "dry_run"})
_MAX_REQUEST: Final = 64 * 1024  # a replay request is a few flags
_PURGE_PAGE: Final = 1000
_ERROR_TEXT: Final = 512  # how much of a refusal's body a replay record keeps

_COMPACT_DURATION: Final = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?",
    re.IGNORECASE,
)
_UNIT_SECONDS: Final = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_instant(text: str, *, now: float, field: str) -> float:
    """Seconds since the epoch of ``text``: a duration before ``now`` or an RFC 3339 time.

    Durations: ``90s``, ``15m``, ``2h``, ``1d``, ``1h30m``, or ISO 8601 (``PT1H``, ``P1D``).
    """
    text = text.strip()
    compact = _COMPACT_DURATION.fullmatch(text)
    if compact is not None and any(compact.groupdict().values()):
        parts = compact.groupdict()
        return now - sum(float(v) * _UNIT_SECONDS[k] for k, v in parts.items() if v)
    if text[:1] in ("P", "p"):
        return now - parse_duration(text.upper(), field=field)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{field}: {text!r} is neither a duration (90s, 15m, 2h, 1d, 1h30m, PT1H) "
            "nor an RFC 3339 timestamp"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{field}: {text!r} has no UTC offset (end it with Z or +HH:MM)")
    return moment.timestamp()


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class _ReplayRequest:
    to: str | None = None
    new_id: bool = False
    force: bool = False
    dry_run: bool = False


class LettersApi:
    """``/v1/letters``, ``/v1/letters/<key>``, ``/v1/letters/<key>/replay``, ``/v1/depth``."""

    def __init__(
        self,
        store: DeadLetterStore,
        depth: DepthWatch,
        metrics: DeadLetterMetrics,
        *,
        clock: Callable[[], float],
        broker_url: str | None,
        alert_depth: int | None,
        replay_timeout: float,
    ) -> None:
        self._store = store
        self._depth = depth
        self._metrics = metrics
        self._clock = clock
        self._broker_url = broker_url
        self._alert_depth = alert_depth
        self._timeout = replay_timeout
        self._replaying: set[str] = set()
        self.session: aiohttp.ClientSession | None = None  # the sink's, set when it starts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a request whose first path segment is ``v1``."""
        parts = [part for part in scope["path"].split("/") if part][1:]
        method: str = scope["method"]
        try:
            status, payload = await self._route(parts, method, scope, receive)
        except HttpError as error:
            await respond_json(
                send, error.status, {"error": error.message, **error.fields}, error.headers
            )
            return
        except LetterStoreUnavailableError as error:
            log.error("dead-letter API %s %s: %s", method, scope["path"], error)
            await respond_json(send, 503, {"error": "the dead-letter store is unavailable"})
            return
        await respond_json(send, status, payload)

    async def _route(
        self, parts: list[str], method: str, scope: Scope, receive: Receive
    ) -> tuple[int, Any]:
        params = _params(scope)
        if parts == ["letters"]:
            _allow(method, "GET", "DELETE")
            if method == "GET":
                return 200, await self._list(params)
            return 200, await self._purge(params)
        if len(parts) == 2 and parts[0] == "letters":
            _allow(method, "GET", "DELETE")
            _no_parameters(params)
            if method == "GET":
                return 200, await self._show(parts[1])
            return 200, await self._delete(parts[1])
        if len(parts) == 3 and parts[0] == "letters" and parts[2] == "replay":
            _allow(method, "POST")
            _no_parameters(params)
            request = _replay_request(await _json_body(scope, receive))
            return 200, await self._replay(parts[1], request)
        if parts == ["depth"]:
            _allow(method, "GET")
            _no_parameters(params)
            return 200, await self._depth_report()
        raise HttpError(
            404,
            f"no API at {scope['path']}; see /v1/letters, /v1/letters/<key>, "
            "/v1/letters/<key>/replay, /v1/depth",
        )

    # -- letters -------------------------------------------------------------------------

    def _letter(self, letter: DeadLetter, now: float) -> dict[str, Any]:
        return {**letter.to_json(), "age": now - letter.arrived_at}

    async def _list(self, params: Mapping[str, str]) -> dict[str, Any]:
        _known(params, _LIST_PARAMETERS)
        now = self._clock()
        query = _query(params, now)
        try:
            page = await self._store.list(query)
        except ValueError as error:  # a cursor the store cannot read
            message = str(error)
            raise HttpError(
                400, message if message.startswith("after") else f"after: {message}"
            ) from None
        return {"letters": [self._letter(x, now) for x in page.letters], "next": page.next}

    async def _show(self, key: str) -> dict[str, Any]:
        letter = await self._store.get(key)
        if letter is None:
            raise HttpError(404, f"no letter {key}")
        return self._letter(letter, self._clock())

    async def _delete(self, key: str) -> dict[str, Any]:
        deleted = await self._store.delete([key])
        if not deleted:
            raise HttpError(404, f"no letter {key}")
        await self._purged(deleted)
        return {"purged": len(deleted)}

    async def _purge(self, params: Mapping[str, str]) -> dict[str, Any]:
        _known(params, _PURGE_PARAMETERS)
        everything = _boolean(params, "all") or False
        filtered = any(name in params for name in (*_FILTERS, "replayed"))
        if not filtered and not everything:
            raise HttpError(
                400,
                "all: a purge without a filter deletes every letter; say all=true "
                "or give namespace, broker, trigger, type, event_id, since, before or replayed",
            )
        query = _query({k: v for k, v in params.items() if k != "all"}, self._clock())
        # Keys first, deletes after: deleting while paging would move the cursor's ground.
        keys: list[str] = []
        after: str | None = None
        while True:
            page = await self._store.list(replace(query, limit=_PURGE_PAGE, after=after))
            keys.extend(letter.key for letter in page.letters)
            if page.next is None:
                break
            after = page.next
        deleted: list[DeadLetter] = []
        for start in range(0, len(keys), _PURGE_PAGE):
            deleted.extend(await self._store.delete(keys[start : start + _PURGE_PAGE]))
        await self._purged(deleted)
        return {"purged": len(deleted)}

    async def _purged(self, deleted: list[DeadLetter]) -> None:
        for letter in deleted:
            self._metrics.purged.labels(*letter.origin.labels).inc()
        if deleted:
            self._depth.changed()

    async def _depth_report(self) -> dict[str, Any]:
        depth = await self._depth.refresh(force=True)
        return {
            "depth": [
                {"namespace": ns, "broker": broker, "trigger": trigger, "depth": n}
                for (ns, broker, trigger), n in sorted(depth.items())
            ],
            "alert_depth": self._alert_depth,
        }

    # -- replay --------------------------------------------------------------------------

    async def _replay(self, key: str, request: _ReplayRequest) -> dict[str, Any]:
        to = request.to or self._broker_url
        if to is None:
            raise HttpError(400, "to: no broker ingress to replay to (set AGENTFN_BROKER_URL)")
        if key in self._replaying:
            raise HttpError(409, f"a replay of letter {key} is in flight")
        self._replaying.add(key)
        try:
            return await self._replay_one(key, to, request)
        finally:
            self._replaying.discard(key)

    async def _replay_one(self, key: str, to: str, request: _ReplayRequest) -> dict[str, Any]:
        letter = await self._store.get(key)
        if letter is None:
            raise HttpError(404, f"no letter {key}")
        now = self._clock()
        if letter.replayed_at is not None and not request.force:
            raise HttpError(
                409,
                f"letter {key} was replayed at {_iso(letter.replayed_at)}; use force to "
                "replay it again",
                letter=self._letter(letter, now),
            )
        event = replay_event(letter, new_id=new_event_id() if request.new_id else None)
        if request.dry_run:
            return {
                "letter": self._letter(letter, now),
                "replay": None,
                "event": event_to_json(event),
                "dry_run": True,
            }
        status, error = await self._send(to, event)
        replay = Replay(
            at=now, to=to, event_id=event.id, new_id=request.new_id, status=status, error=error
        )
        outcome: ReplayOutcome = (
            "unanswered" if status is None else "accepted" if replay.ok else "refused"
        )
        self._metrics.replayed.labels(*letter.origin.labels, outcome).inc()
        try:
            recorded = await self._store.record_replay(key, replay)
        except LetterNotFoundError:
            raise HttpError(
                404, f"no letter {key} (purged while it was replayed)", replay=replay.to_json()
            ) from None
        except LetterStoreUnavailableError as failure:
            log.error("replay of %s sent (status %s) but not recorded: %s", key, status, failure)
            raise HttpError(
                503,
                f"the replay of {key} was sent (status {status}) but the store cannot record it",
                replay=replay.to_json(),
            ) from None
        self._depth.changed()
        return {
            "letter": self._letter(recorded, self._clock()),
            "replay": replay.to_json(),
            "event": event_to_json(event),
            "dry_run": False,
        }

    async def _send(self, to: str, event: CloudEvent) -> tuple[int | None, str | None]:
        """The ingress's status (None: no answer) and, unless 2xx, why."""
        assert self.session is not None, "start() the sink first"
        headers, body = to_http(event)
        try:
            async with self.session.post(
                to,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as answer:
                text = await answer.content.read(_ERROR_TEXT)
                if 200 <= answer.status < 300:
                    return answer.status, None
                return answer.status, text.decode("utf-8", "replace") or None
        except TimeoutError:
            return None, f"{to}: no answer within {self._timeout:g}s"
        except (aiohttp.ClientError, OSError) as error:
            return None, f"{type(error).__name__}: {error}"


# -- request parsing ---------------------------------------------------------------------


def _allow(method: str, *methods: str) -> None:
    if method not in methods:
        allowed = ", ".join(methods)
        raise HttpError(
            405,
            f"{method} is not allowed here; use {allowed}",
            headers=[(b"allow", allowed.encode())],
        )


def _params(scope: Scope) -> dict[str, str]:
    raw: bytes = scope.get("query_string", b"")
    parsed = parse_qs(raw.decode("latin-1"), keep_blank_values=True)
    params: dict[str, str] = {}
    for name, values in parsed.items():
        if len(values) > 1:
            raise HttpError(400, f"{name}: given {len(values)} times")
        if values[0] != "":  # ?trigger= is a filter not given
            params[name] = values[0]
    return params


def _known(params: Mapping[str, str], known: frozenset[str]) -> None:
    unknown = sorted(params.keys() - known)
    if unknown:
        raise HttpError(
            400, f"{unknown[0]}: not a parameter here (known: {', '.join(sorted(known))})"
        )


def _no_parameters(params: Mapping[str, str]) -> None:
    if params:
        raise HttpError(400, f"{next(iter(params))}: this path takes no parameters")


def _boolean(params: Mapping[str, str], name: str) -> bool | None:
    value = params.get(name)
    if value is None:
        return None
    if value.lower() not in ("true", "false"):
        raise HttpError(400, f"{name}: {value!r} is not true or false")
    return value.lower() == "true"


def _query(params: Mapping[str, str], now: float) -> LetterQuery:
    fields: dict[str, Any] = {
        name: params.get(name) for name in ("namespace", "broker", "trigger", "type", "event_id")
    }
    for name in ("since", "before"):
        if name in params:
            try:
                fields[name] = parse_instant(params[name], now=now, field=name)
            except ValueError as error:
                raise HttpError(400, str(error)) from None
    fields["replayed"] = _boolean(params, "replayed")
    if "limit" in params:
        text = params["limit"]
        if not text.isdecimal() or not 1 <= int(text) <= 1000:
            raise HttpError(400, f"limit: {text!r} is not a number from 1 to 1000")
        fields["limit"] = int(text)
    fields["after"] = params.get("after")
    return LetterQuery(**fields)


async def _json_body(scope: Scope, receive: Receive) -> Any:
    body = await read_body(receive, _MAX_REQUEST)
    if body is None:
        raise HttpError(413, f"body: over {_MAX_REQUEST} bytes")
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise HttpError(400, "body: not valid JSON") from None


def _replay_request(body: Any) -> _ReplayRequest:
    if not isinstance(body, dict):
        raise HttpError(400, "body: a replay request is a JSON object")
    unknown = sorted(body.keys() - _REPLAY_FIELDS)
    if unknown:
        raise HttpError(
            400, f"{unknown[0]}: not a replay field (known: {', '.join(sorted(_REPLAY_FIELDS))})"
        )
    to = body.get("to")
    if to is not None:
        parts = urlsplit(to) if isinstance(to, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(400, f"to: {to!r} is not an http(s) URL")
    flags: dict[str, bool] = {}
    for name in ("new_id", "force", "dry_run"):
        value = body.get(name, False)
        if not isinstance(value, bool):
            raise HttpError(400, f"{name}: {value!r} is not true or false")
        flags[name] = value
    return _ReplayRequest(to=to, **flags)
