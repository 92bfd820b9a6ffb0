"""Dead-letter sink settings, read once from the environment or given by ``agentfn dlq serve``.

=================================  ==================================================  ===========
variable                           meaning                                             default
=================================  ==================================================  ===========
``AGENTFN_DLQ_STORE``              ``sqlite:///PATH``, ``redis://HOST:PORT/DB``, or    SQLite file
                                   ``redis`` (the Redis at ``AGENTFN_REDIS_URL``)      (see below)
``AGENTFN_REDIS_URL``              the Redis of ``AGENTFN_DLQ_STORE=redis``            unset
``AGENTFN_BROKER_URL``             broker ingress replays go to (``--to`` overrides)   unset
``AGENTFN_DLQ_ALERT_DEPTH``        waiting letters of one Trigger that raise an alert  unset
``AGENTFN_DLQ_ALERT_SINK``         where the threshold CloudEvent is posted            unset
``AGENTFN_DLQ_REDACT_DATA``        keep only length and hash of ``knativeerrordata``   false
``AGENTFN_DLQ_MAX_BODY_BYTES``     largest letter accepted (413 above)                 1088 KiB
=================================  ==================================================  ===========

The default store is ``sqlite:///.data/deadletters/letters.sqlite3`` (relative to the working
directory; ``agentfn dev`` puts it under its ``--data-dir``).
"""

from __future__ import annotations

from typing import Final

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_STORE", "DeadLetterSettings"]

DEFAULT_STORE: Final = "sqlite:///.data/deadletters/letters.sqlite3"
#: The broker ingress takes 1 MiB by default; a letter is that event plus Knative's error
#: extensions (knativeerrordata is at most 1024 bytes before base64), so the sink takes more.
_DEFAULT_MAX_BODY: Final = 1024 * 1024 + 64 * 1024


class DeadLetterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTFN_DLQ_", frozen=True, extra="ignore")

    store: str = DEFAULT_STORE
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AGENTFN_REDIS_URL", "redis_url")
    )
    broker_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AGENTFN_BROKER_URL", "broker_url")
    )
    alert_depth: int | None = Field(default=None, ge=0)
    alert_sink: str | None = None
    redact_data: bool = False
    max_body_bytes: int = Field(default=_DEFAULT_MAX_BODY, ge=64 * 1024)
