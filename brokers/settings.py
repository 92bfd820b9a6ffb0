"""Broker settings, read once from the environment (``AGENTFN_BROKER_*``) or given by flags.

======================================  =================================================  =======
variable                                meaning                                            default
======================================  =================================================  =======
``AGENTFN_BROKER_MAX_BODY_BYTES``       largest request the ingress accepts (413 above)    1 MiB
``AGENTFN_BROKER_MAX_IN_FLIGHT``        delivery attempts in flight, whole process         512
``AGENTFN_BROKER_SUBSCRIBER_IN_FLIGHT`` delivery attempts in flight per subscriber URL     128
``AGENTFN_BROKER_TRIGGER_WINDOW``       events fetched but not finished, per Trigger       1024
``AGENTFN_BROKER_FSYNC``                fsync each group commit (survive power loss)       true
======================================  =================================================  =======
"""

from __future__ import annotations

from typing import Final

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["MIN_BODY_LIMIT", "BrokerSettings"]

#: Knative's ingress must take at least the events its own components emit; 64 KiB is the floor.
MIN_BODY_LIMIT: Final = 64 * 1024


class BrokerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTFN_BROKER_", frozen=True)

    max_body_bytes: int = Field(default=1024 * 1024)
    max_in_flight: int = Field(default=512, ge=1)
    subscriber_in_flight: int = Field(default=128, ge=1)
    trigger_window: int = Field(default=1024, ge=1)
    fsync: bool = True

    @field_validator("max_body_bytes")
    @classmethod
    def _at_least_floor(cls, value: int) -> int:
        if value < MIN_BODY_LIMIT:
            raise ValueError(f"max_body_bytes: must be at least {MIN_BODY_LIMIT} (64 KiB)")
        return value
