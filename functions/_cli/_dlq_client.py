"""A thin client of the dead-letter sink's HTTP API, for ``agentfn dlq list|show|replay|purge``.

Synchronous and on the standard library's ``urllib``: a command makes a handful of requests one
after another, so neither an event loop nor aiohttp's import is worth it. Letters stay the JSON
objects the API returns (``DeadLetter.to_json()``): ``--json`` prints exactly those, and the
tables read only a few of their fields.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any, Final

__all__ = [
    "DEFAULT_URL",
    "LetterClient",
    "ReplayConflictError",
    "SinkError",
    "SinkUnreachableError",
]

#: Where ``agentfn dev`` serves its sink.
DEFAULT_URL: Final = "http://127.0.0.1:8081"

#: The API's largest page.
_MAX_PAGE: Final = 1000

Letter = dict[str, Any]
Letters = list[Letter]  # named here: inside the client, ``list`` is its method


class SinkUnreachableError(OSError):
    """No answer from the sink at all (refused, timed out, reset)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the dead-letter sink at {url} ({reason})")
        self.url = url
        self.reason = reason


class SinkError(RuntimeError):
    """The sink answered with an error: its status and the API's message."""

    def __init__(self, status: int, message: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body: Mapping[str, Any] = body or {}


class ReplayConflictError(SinkError):
    """409: the letter was replayed already; replaying it again needs ``force``."""


class LetterClient:
    """The sink's ``/v1`` API at ``url`` (its base, e.g. ``http://127.0.0.1:8081``)."""

    def __init__(self, url: str, *, timeout: float = 30.0, page_size: int = _MAX_PAGE) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.page_size = page_size  # letters asked for per page when following cursors
        # No proxies: the sink is local or port-forwarded, and an HTTP_PROXY in the environment
        # must not send loopback requests elsewhere.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- letters --------------------------------------------------------------------------------

    def list(
        self, *, limit: int = 100, after: str | None = None, **filters: Any
    ) -> tuple[Letters, str | None]:
        """One page of letters passing ``filters`` (the API's query parameters) and its cursor."""
        answer = self._request("GET", "/v1/letters", _query(filters, limit=limit, after=after))
        return list(answer["letters"]), answer.get("next")

    def iter_letters(self, *, limit: int | None = None, **filters: Any) -> Iterator[Letter]:
        """Letters passing ``filters`` across pages; ``limit`` at most (None: every one)."""
        after: str | None = None
        shown = 0
        while limit is None or shown < limit:
            page = self.page_size if limit is None else min(self.page_size, limit - shown)
            letters, after = self.list(limit=page, after=after, **filters)
            for letter in letters[:page]:
                yield letter
                shown += 1
            if after is None or not letters:
                return

    def get(self, key: str) -> Letter | None:
        """The letter with this key; None when there is none."""
        try:
            return self._request("GET", f"/v1/letters/{_segment(key)}")
        except SinkError as error:
            if error.status == 404:
                return None
            raise

    def find(self, ident: str) -> Letters:
        """The letter keyed ``ident``, else every letter whose event id is ``ident``."""
        letter = self.get(ident)
        if letter is not None:
            return [letter]
        return list(self.iter_letters(event_id=ident))

    def replay(
        self,
        key: str,
        *,
        to: str | None = None,
        new_id: bool = False,
        force: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """``{"letter", "replay", "event", "dry_run"}``; ReplayConflictError on a 409."""
        body = {"to": to, "new_id": new_id, "force": force, "dry_run": dry_run}
        try:
            return self._request("POST", f"/v1/letters/{_segment(key)}/replay", body=body)
        except SinkError as error:
            if error.status == 409:
                raise ReplayConflictError(error.status, error.message, error.body) from None
            raise

    def delete(self, key: str) -> int:
        """Purge one letter: how many went (1); SinkError 404 when there was none."""
        return int(self._request("DELETE", f"/v1/letters/{_segment(key)}")["purged"])

    def purge(self, **filters: Any) -> int:
        """Purge every letter passing ``filters`` (at least one, or ``all=True``)."""
        return int(self._request("DELETE", "/v1/letters", _query(filters))["purged"])

    def depth(self) -> dict[str, Any]:
        """``{"depth": [{"namespace", "broker", "trigger", "depth"}...], "alert_depth"}``."""
        return self._request("GET", "/v1/depth")

    # -- HTTP -----------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        *,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        headers = {"accept": "application/json"}
        if data is not None:
            headers["content-type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            with error:
                raise _api_error(error.code, error.read()) from None
        except urllib.error.URLError as error:
            raise SinkUnreachableError(self.url, str(error.reason)) from None
        except OSError as error:  # reset, timed out while reading
            raise SinkUnreachableError(self.url, str(error) or type(error).__name__) from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise SinkError(200, f"{method} {path}: the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise SinkError(200, f"{method} {path}: the answer is not a JSON object")
        return answer


def _query(filters: Mapping[str, Any], **more: Any) -> dict[str, str]:
    """Query parameters of the set filters (booleans as the API spells them)."""
    query: dict[str, str] = {}
    for name, value in {**filters, **more}.items():
        if value is None:
            continue
        query[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return query


def _segment(key: str) -> str:
    return urllib.parse.quote(key, safe="")


def _api_error(status: int, raw: bytes) -> SinkError:
    """The API's error (``{"error": message, ...}``), or the start of whatever else answered."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return SinkError(status, body["error"], body)
    text = raw.decode("utf-8", "replace").strip()[:200]
    return SinkError(status, f"HTTP {status}" + (f": {text}" if text else ""))
