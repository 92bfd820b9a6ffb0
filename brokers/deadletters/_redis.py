"""The Redis dead-letter store: a stream per namespace/broker for the order, records beside it.

Layout under the prefix ``p`` (``agentfn:deadletters`` by default):

* ``p:letter:<key>``: a HASH, the record. Each field is one top-level member of
  :meth:`DeadLetter.to_json` as JSON text, plus ``_depth``, ``_stream`` and ``_entry`` (where the
  letter counts and where its stream entry is). Fields rather than one JSON string so that the
  scripts can reopen a letter and add a replay without decoding JSON in Lua: cjson would write
  the times back with 14 digits and an empty list as ``{}``.
* ``p:stream:<namespace>/<broker>``: a STREAM, one entry (``key``, ``trigger``, ``type``) per
  first arrival. Entry ids come from one counter (``p:seq``) as ``<n>-0``, so they are unique and
  ordered across every stream: a page merges the streams by id, and its cursor is the last id it
  returned.
* ``p:streams``: a SET of the stream names; ``p:depth``: a HASH ``ns\\x1fbroker\\x1ftrigger`` ->
  waiting letters (a field is removed at zero).

``append``, ``record_replay`` and ``delete`` are one script each, so two sinks appending the same
letter keep one record and the depth stays exact. The scripts touch the keys their letters name
(a stream found in a record), so this is for one Redis, not a Redis Cluster. Durability is
Redis's: a letter is acknowledged once Redis has it, kept across a restart as its
``appendonly``/``appendfsync`` settings say.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from agentfn.brokers.deadletters.letters import DeadLetter, LetterPage, LetterQuery, Replay
from agentfn.brokers.deadletters.store import LetterNotFoundError, LetterStoreUnavailableError
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from agentfn._lifecycle import Started

__all__ = ["RedisLetterStore"]

#: Connections to Redis per sink: a broker retries a sink with many requests at once.
_POOL_CONNECTIONS: Final = 64
_ENTRY: Final = re.compile(r"\d+-\d+")
#: Fewest stream entries one read of a page takes from each stream (a filtered page reads on).
_MIN_READ: Final = 50

#: Fields a returning letter leaves as they were (see DeadLetter.returned); ``arrivals`` is
#: counted up and ``replayed_at`` cleared by the script.
_KEPT_ON_RETURN: Final = ("key", "first_arrived_at", "arrivals", "replays", "replayed_at")

# KEYS: letter, depth, streams, seq, stream of the letter's origin.
# ARGV: depth field, key, trigger, type, waiting (1/0), then field/value pairs of the record.
_APPEND: Final = f"""
local letter = KEYS[1]
if redis.call('EXISTS', letter) == 1 then
  if redis.call('HGET', letter, 'replayed_at') == 'null' then
    return {{0, redis.call('HGETALL', letter)}}
  end
  local kept = {{{", ".join(f"['{name}'] = true" for name in _KEPT_ON_RETURN)}}}
  for i = 6, #ARGV, 2 do
    if not kept[ARGV[i]] then
      redis.call('HSET', letter, ARGV[i], ARGV[i + 1])
    end
  end
  redis.call('HINCRBY', letter, 'arrivals', 1)
  redis.call('HSET', letter, 'replayed_at', 'null', '_depth', ARGV[1])
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  return {{1, redis.call('HGETALL', letter)}}
end
local entry = redis.call('INCR', KEYS[4]) .. '-0'
redis.call('XADD', KEYS[5], entry, 'key', ARGV[2], 'trigger', ARGV[3], 'type', ARGV[4])
redis.call('SADD', KEYS[3], KEYS[5])
redis.call('HSET', letter, '_depth', ARGV[1], '_stream', KEYS[5], '_entry', entry, unpack(ARGV, 6))
if ARGV[5] == '1' then
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
end
return {{1, redis.call('HGETALL', letter)}}
"""

# KEYS: letter, depth. ARGV: the replay's JSON, accepted (1/0), its time as JSON.
_REPLAY: Final = """
local letter = KEYS[1]
if redis.call('EXISTS', letter) == 0 then
  return false
end
local replays = redis.call('HGET', letter, 'replays')
if replays == '[]' then
  replays = '[' .. ARGV[1] .. ']'
else
  replays = string.sub(replays, 1, -2) .. ',' .. ARGV[1] .. ']'
end
redis.call('HSET', letter, 'replays', replays)
if ARGV[2] == '1' then
  if redis.call('HGET', letter, 'replayed_at') == 'null' then
    local field = redis.call('HGET', letter, '_depth')
    if redis.call('HINCRBY', KEYS[2], field, -1) <= 0 then
      redis.call('HDEL', KEYS[2], field)
    end
  end
  redis.call('HSET', letter, 'replayed_at', ARGV[3])
end
return redis.call('HGETALL', letter)
"""

# KEYS: depth, streams, then the letters.
_DELETE: Final = """
local deleted = {}
for i = 3, #KEYS do
  local letter = KEYS[i]
  local record = redis.call('HGETALL', letter)
  if #record > 0 then
    if redis.call('HGET', letter, 'replayed_at') == 'null' then
      local field = redis.call('HGET', letter, '_depth')
      if redis.call('HINCRBY', KEYS[1], field, -1) <= 0 then
        redis.call('HDEL', KEYS[1], field)
      end
    end
    local stream = redis.call('HGET', letter, '_stream')
    redis.call('XDEL', stream, redis.call('HGET', letter, '_entry'))
    if redis.call('XLEN', stream) == 0 then
      redis.call('DEL', stream)
      redis.call('SREM', KEYS[2], stream)
    end
    redis.call('DEL', letter)
    deleted[#deleted + 1] = record
  end
end
return deleted
"""


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _fields(letter: DeadLetter) -> list[str]:
    """The record's field/value pairs, flat, as the scripts take them."""
    return [text for name, value in letter.to_json().items() for text in (name, _json(value))]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(flat: Sequence[bytes | str]) -> DeadLetter:
    """A letter from its record's HGETALL as a script returns it: ``[field, value, ...]``."""
    raw = {
        _text(field): json.loads(value)
        for field, value in zip(flat[::2], flat[1::2], strict=True)
        if not _text(field).startswith("_")
    }
    return DeadLetter.from_json(raw)


def _flat(record: Mapping[Any, Any]) -> list[bytes | str]:
    """HGETALL as the client returns it (a dict) in the scripts' form."""
    return [part for pair in record.items() for part in pair]


def _depth_field(labels: tuple[str, str, str]) -> str:
    return "\x1f".join(labels)


def _entry(text: bytes | str) -> tuple[int, int]:
    first, _, second = _text(text).partition("-")
    return int(first), int(second)


def _unavailable(what: str, error: Exception) -> LetterStoreUnavailableError:
    return LetterStoreUnavailableError(
        f"dead-letter store: Redis {what} failed: {type(error).__name__}: {error}"
    )


class RedisLetterStore(Started):
    """:class:`~agentfn.brokers.deadletters.store.DeadLetterStore` in one Redis.

    Every sink on the same Redis and ``prefix`` shares the letters. Calls fail fast (one
    immediate retry for a connection that died with a Redis restart, then ``timeout_s``), so an
    unreachable Redis is a quick 503 and the broker backs off.
    """

    def __init__(
        self, url: str, *, prefix: str = "agentfn:deadletters", timeout_s: float = 2.0
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._timeout_s = timeout_s
        self._client: Redis | None = None
        self._append: AsyncScript | None = None
        self._replay: AsyncScript | None = None
        self._delete: AsyncScript | None = None

    def _key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def _letter(self, key: str) -> str:
        return self._key(f"letter:{key}")

    def _stream(self, letter: DeadLetter) -> str:
        namespace, broker, _ = letter.origin.labels
        return self._key(f"stream:{namespace}/{broker}")

    @property
    def _redis(self) -> Redis:
        if self._client is None:
            raise LetterStoreUnavailableError("dead-letter store: not started")
        return self._client

    async def start(self) -> None:
        if self._client is not None:
            raise RuntimeError("the dead-letter store is started already")
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=_POOL_CONNECTIONS,
            timeout=self._timeout_s,
            socket_timeout=self._timeout_s,
            socket_connect_timeout=self._timeout_s,
            retry=Retry(NoBackoff(), 1),
        )
        # from_pool: the client owns its pool, so aclose() closes the connections too.
        client = Redis.from_pool(pool)
        try:
            await client.ping()
        except (RedisError, OSError) as error:
            await client.aclose()
            raise _unavailable(f"at {self.url}", error) from error
        self._client = client
        # register_script: EVALSHA, loaded again by redis-py when Redis has forgotten it.
        self._append = client.register_script(_APPEND)
        self._replay = client.register_script(_REPLAY)
        self._delete = client.register_script(_DELETE)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def _run(self, script: AsyncScript | None, keys: list[str], args: list[str]) -> Any:
        if script is None:
            raise LetterStoreUnavailableError("dead-letter store: not started")
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as error:
            raise _unavailable("write", error) from error

    # -- writing -------------------------------------------------------------------------------

    async def append(self, letter: DeadLetter) -> tuple[DeadLetter, bool]:
        depth_field = _depth_field(letter.origin.labels)
        new, record = await self._run(
            self._append,
            [
                self._letter(letter.key),
                self._key("depth"),
                self._key("streams"),
                self._key("seq"),
                self._stream(letter),
            ],
            [
                depth_field,
                letter.key,
                letter.origin.trigger or "",
                letter.event.type,
                "1" if letter.waiting else "0",
                *_fields(letter),
            ],
        )
        return _decode(record), bool(new)

    async def record_replay(self, key: str, replay: Replay) -> DeadLetter:
        record = await self._run(
            self._replay,
            [self._letter(key), self._key("depth")],
            [_json(replay.to_json()), "1" if replay.ok else "0", _json(replay.at)],
        )
        if record is None:
            raise LetterNotFoundError(key)
        return _decode(record)

    async def delete(self, keys: Sequence[str]) -> list[DeadLetter]:
        if not keys:
            return []
        letters = [self._letter(key) for key in dict.fromkeys(keys)]
        records = await self._run(
            self._delete, [self._key("depth"), self._key("streams"), *letters], []
        )
        return [_decode(record) for record in records]

    # -- reading -------------------------------------------------------------------------------

    async def get(self, key: str) -> DeadLetter | None:
        try:
            record = await self._redis.hgetall(self._letter(key))
        except (RedisError, OSError) as error:
            raise _unavailable("read", error) from error
        if not record:
            return None
        return _decode(_flat(record))

    async def depth(self) -> Mapping[tuple[str, str, str], int]:
        try:
            counts = await self._redis.hgetall(self._key("depth"))
        except (RedisError, OSError) as error:
            raise _unavailable("read", error) from error
        depth: dict[tuple[str, str, str], int] = {}
        for field, count in counts.items():
            namespace, broker, trigger = _text(field).split("\x1f")
            if int(count) > 0:
                depth[(namespace, broker, trigger)] = int(count)
        return depth

    async def list(self, query: LetterQuery) -> LetterPage:
        if query.after is not None and not _ENTRY.fullmatch(query.after):
            raise ValueError(f"after: {query.after!r} is not a cursor of this store")
        try:
            return await self._list(query)
        except (RedisError, OSError) as error:
            raise _unavailable("read", error) from error

    async def _list(self, query: LetterQuery) -> LetterPage:
        """Merge the streams by entry id from the cursor on; filter the records in Python.

        Every stream is read (not only the query's namespace/broker): a letter that came back
        through another Trigger's path keeps its entry where it first arrived.
        """
        redis = self._redis
        streams = sorted(await redis.smembers(self._key("streams")))
        chunk = min(max(query.limit + 1, _MIN_READ), 1000)
        position = query.after
        found: list[tuple[str, DeadLetter]] = []
        while streams:
            start = "-" if position is None else f"({position}"
            pipe = redis.pipeline(transaction=False)
            for stream in streams:
                pipe.xrange(stream, start, "+", count=chunk)
            batches: list[list[tuple[bytes, dict[bytes, bytes]]]] = await pipe.execute()
            # Past the last id of a stream that filled its chunk, another stream's entries
            # may be missing their neighbours from it: merge only up to there this round.
            full = [_entry(batch[-1][0]) for batch in batches if len(batch) == chunk]
            bound = min(full) if full else None
            entries = sorted(
                (_entry(entry_id), _text(entry_id), _text(fields[b"key"]))
                for batch in batches
                for entry_id, fields in batch
                if bound is None or _entry(entry_id) <= bound
            )
            # The records in slices of a page: the first slice is all an unfiltered page reads.
            step = query.limit + 1
            for first in range(0, len(entries), step):
                pipe = redis.pipeline(transaction=False)
                for _, _, key in entries[first : first + step]:
                    pipe.hgetall(self._letter(key))
                records: list[dict[bytes, bytes]] = await pipe.execute()
                for (_, entry_id, _), record in zip(
                    entries[first : first + step], records, strict=True
                ):
                    if not record:
                        continue  # deleted since the stream was read
                    letter = _decode(_flat(record))
                    if not query.matches(letter):
                        continue
                    if len(found) == query.limit:  # one more than the page: there is a next
                        return LetterPage(tuple(one for _, one in found), found[-1][0])
                    found.append((entry_id, letter))
            if bound is None:
                break
            position = f"{bound[0]}-{bound[1]}"
        return LetterPage(tuple(one for _, one in found), None)
