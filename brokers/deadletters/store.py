"""The dead-letter store seam: one small Protocol, an embedded and a Redis implementation.

Both run through one contract suite (``tests/brokers/deadletters/contract.py``). A store that
cannot write raises :class:`LetterStoreUnavailableError`; the sink answers 503 and the broker
retries, so a letter is never acknowledged (202) before it is durable.

``open_store(url)`` picks the implementation: ``sqlite:///PATH`` (relative) or
``sqlite:////ABSOLUTE/PATH``, the default, or ``redis://HOST:PORT/DB``.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from agentfn.brokers.deadletters.letters import DeadLetter, LetterPage, LetterQuery, Replay

__all__ = [
    "DeadLetterStore",
    "LetterNotFoundError",
    "LetterStoreUnavailableError",
    "open_store",
]


class LetterStoreUnavailableError(RuntimeError):
    """The store cannot read or write now (disk, Redis down); the caller may retry later."""


class LetterNotFoundError(KeyError):
    """No letter has this key."""


@runtime_checkable
class DeadLetterStore(Protocol):
    """Where the sink keeps dead letters. Every method may raise LetterStoreUnavailableError."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def append(self, letter: DeadLetter) -> tuple[DeadLetter, bool]:
        """Store ``letter`` durably; the record as stored now, and whether it is new.

        A letter with the key of one still waiting is a duplicate: nothing changes (False). A
        letter whose record was replayed reopens it (:meth:`DeadLetter.returned`, True).
        Atomic: two sinks appending the same letter at once keep one record.
        """
        ...

    async def list(self, query: LetterQuery) -> LetterPage:
        """Letters passing ``query``, oldest first arrival first, ``query.limit`` at most."""
        ...

    async def get(self, key: str) -> DeadLetter | None: ...

    async def record_replay(self, key: str, replay: Replay) -> DeadLetter:
        """Add ``replay`` to the letter's record (:meth:`DeadLetter.with_replay`).

        Raises LetterNotFoundError for an unknown key.
        """
        ...

    async def delete(self, keys: Sequence[str]) -> builtins.list[DeadLetter]:
        """Remove these letters; the ones that existed, as they were."""
        ...

    async def depth(self) -> Mapping[tuple[str, str, str], int]:
        """Waiting letters per ``(namespace, broker, trigger)`` (``""``: unknown); no zeros."""
        ...


def open_store(url: str, *, redis_url: str | None = None) -> DeadLetterStore:
    """The store ``url`` names (``redis`` alone: the Redis at ``redis_url``)."""
    if url.startswith("sqlite:///"):
        # Imported on use: the Redis client stays unloaded for a SQLite store, and back.
        from agentfn.brokers.deadletters._sqlite import SqliteLetterStore  # noqa: PLC0415

        return SqliteLetterStore(url.removeprefix("sqlite:///"))
    if url == "redis":
        if not redis_url:
            raise ValueError(
                "store: 'redis' needs AGENTFN_REDIS_URL (or give redis://HOST:PORT/DB)"
            )
        url = redis_url
    if url.startswith(("redis://", "rediss://", "unix://")):
        from agentfn.brokers.deadletters._redis import RedisLetterStore  # noqa: PLC0415

        return RedisLetterStore(url)
    raise ValueError(
        f"store: {url!r} is not sqlite:///PATH, redis://HOST:PORT/DB or redis (AGENTFN_REDIS_URL)"
    )
