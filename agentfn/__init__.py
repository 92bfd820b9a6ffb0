"""agentfn: event-driven AI agents on Knative, in Python.

The names most programs need, from one place::

    from agentfn import Agent, CloudEvent, Context, Delivery, Scaling

The parts live in sub-packages with one job each: :mod:`agentfn.events` (the CloudEvent
contract), :mod:`agentfn.brokers` (how events move: the embedded and Kafka brokers),
:mod:`agentfn.functions` (the agent runtime, the CLI, the reference agents) and
:mod:`agentfn.inference` (for now, loading the optional heavy extras). The names below are
imported when first used (PEP 562), so ``import agentfn`` costs nothing a command does not use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from agentfn._lazy import lazy_exports

if TYPE_CHECKING:
    from agentfn.events import CloudEvent, EventCatalog, InvalidEventError
    from agentfn.functions import (
        Agent,
        AgentApp,
        CircuitOpenError,
        Context,
        Delivery,
        PublishError,
        Resources,
        RetryableError,
        Scaling,
        Settings,
        UnavailableError,
        configure_tracing,
    )

#: Sub-package -> the public names taken from it.
_PACKAGES: Final = {
    "agentfn.events": ("CloudEvent", "EventCatalog", "InvalidEventError"),
    "agentfn.functions": (
        "Agent",
        "AgentApp",
        "CircuitOpenError",
        "Context",
        "Delivery",
        "PublishError",
        "Resources",
        "RetryableError",
        "Scaling",
        "Settings",
        "UnavailableError",
        "configure_tracing",
    ),
}
_EXPORTS: Final = {name: package for package, names in _PACKAGES.items() for name in names}

__all__ = [
    "Agent",
    "AgentApp",
    "CircuitOpenError",
    "CloudEvent",
    "Context",
    "Delivery",
    "EventCatalog",
    "InvalidEventError",
    "PublishError",
    "Resources",
    "RetryableError",
    "Scaling",
    "Settings",
    "UnavailableError",
    "configure_tracing",
]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, __all__)
