"""The CloudEvents extension attributes the platform reads or writes, named once.

Every name obeys the CloudEvents rule for attribute names (lower-case ASCII letters and digits,
at most 20 characters), so each one travels unchanged as an HTTP ``ce-`` header, a Kafka ``ce_``
header and a top-level JSON member.
"""

from __future__ import annotations

from typing import Final

# knativebrokerttl is named beside its rules (read, decrement, expiry), re-exported here.
from agentfn.events._knative import (
    DEFAULT_BROKER_TTL,
    KNATIVE_BROKER_TTL,
    broker_ttl,
    next_hop_ttl,
    stamp_broker_ttl,
    ttl_expired,
)

__all__ = [
    "CHAIN_ID",
    "DEFAULT_BROKER_TTL",
    "KNATIVE_BROKER_TTL",
    "KNATIVE_ERROR_CODE",
    "KNATIVE_ERROR_DATA",
    "KNATIVE_ERROR_DATA_MAX",
    "KNATIVE_ERROR_DEST",
    "PARTITION_KEY",
    "TRACEPARENT",
    "TRACESTATE",
    "broker_ttl",
    "next_hop_ttl",
    "stamp_broker_ttl",
    "ttl_expired",
]

#: W3C trace context carried on the event (CloudEvents distributed-tracing extension).
TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"

#: Kafka record key (CloudEvents partitioning extension); ordering key of ordered Triggers.
PARTITION_KEY: Final = "partitionkey"


#: Added to a dead-lettered event: where delivery failed, the last status, the response body.
KNATIVE_ERROR_DEST: Final = "knativeerrordest"
KNATIVE_ERROR_CODE: Final = "knativeerrorcode"
KNATIVE_ERROR_DATA: Final = "knativeerrordata"
#: Knative cuts the response body to this many bytes before base64-encoding it.
KNATIVE_ERROR_DATA_MAX: Final = 1024

#: Identifies one run of an agent chain: set by the first agent, copied onto every reply and
#: fan-out event, the key of fan-in joins. Agent names are not in it, so it survives re-routing.
CHAIN_ID: Final = "agentfnchainid"
