"""Knative Trigger documents for an agent's declaration: what `agentfn dev` routes by.

One implementation, :mod:`agentfn.functions._manifests.eventing`, makes the Triggers that
``agentfn render`` writes to ``knative/`` and those ``agentfn dev`` builds when it is given no
``--triggers``, so local runs and the cluster route alike; this module keeps the names the
runtime's callers import.
"""

from __future__ import annotations

from agentfn.functions._manifests.eventing import (
    BROKER_DELIVERY,
    DELIVERY_ORDER_ANNOTATION,
    DeliveryDefaults,
    iso_duration,
    trigger_documents,
)

__all__ = [
    "BROKER_DELIVERY",
    "DELIVERY_ORDER_ANNOTATION",
    "DeliveryDefaults",
    "iso_duration",
    "trigger_documents",
]
