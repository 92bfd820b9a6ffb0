"""Dead letters as a product: a Knative sink that keeps them, watches their depth, replays them.

``agentfn dlq serve`` runs :class:`DeadLetterSink` over a :class:`DeadLetterStore` (SQLite by
default, or Redis); ``agentfn dlq list|show|replay|purge`` are thin clients of its HTTP API.
Names are imported on first use, as in :mod:`agentfn.brokers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from agentfn._lazy import lazy_exports

if TYPE_CHECKING:
    from agentfn.brokers.deadletters._redis import RedisLetterStore
    from agentfn.brokers.deadletters._sqlite import SqliteLetterStore
    from agentfn.brokers.deadletters.letters import (
        REPLAY_OF,
        DeadLetter,
        ErrorData,
        LetterPage,
        LetterQuery,
        Replay,
        TriggerRef,
        letter_key,
        replay_event,
    )
    from agentfn.brokers.deadletters.settings import DeadLetterSettings
    from agentfn.brokers.deadletters.sink import DeadLetterSink
    from agentfn.brokers.deadletters.store import (
        DeadLetterStore,
        LetterNotFoundError,
        LetterStoreUnavailableError,
        open_store,
    )

_MODULES: Final = {
    "agentfn.brokers.deadletters._redis": ("RedisLetterStore",),
    "agentfn.brokers.deadletters._sqlite": ("SqliteLetterStore",),
    "agentfn.brokers.deadletters.letters": (
        "REPLAY_OF",
        "DeadLetter",
        "ErrorData",
        "LetterPage",
        "LetterQuery",
        "Replay",
        "TriggerRef",
        "letter_key",
        "replay_event",
    ),
    "agentfn.brokers.deadletters.settings": ("DeadLetterSettings",),
    "agentfn.brokers.deadletters.sink": ("DeadLetterSink",),
    "agentfn.brokers.deadletters.store": (
        "DeadLetterStore",
        "LetterNotFoundError",
        "LetterStoreUnavailableError",
        "open_store",
    ),
}
_EXPORTS: Final = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "REPLAY_OF",
    "DeadLetter",
    "DeadLetterSettings",
    "DeadLetterSink",
    "DeadLetterStore",
    "ErrorData",
    "LetterNotFoundError",
    "LetterPage",
    "LetterQuery",
    "LetterStoreUnavailableError",
    "RedisLetterStore",
    "Replay",
    "SqliteLetterStore",
    "TriggerRef",
    "letter_key",
    "open_store",
    "replay_event",
]

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, __all__)
