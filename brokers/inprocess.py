"""Subscribers the broker hosts in its own process: called with the event, not POSTed to.

``agentfn dev --in-process`` runs the agents inside the broker process and hands each
delivery straight to the agent's runtime: no HTTP request, no second parse of the event. The
answer keeps the HTTP shape (status, headers, body), so every Knative rule of the delivery
path (which codes are retried, ``Retry-After``, a reply as a binary-mode event, 502 for a reply
that is not a CloudEvent) applies to it exactly as to an answer that came over the wire.

The broker sees only this callable; it never imports agent code (the CLI composes the two).
A subscriber is looked up by the origin (``scheme://host[:port]``) of the URL a Trigger
resolves to. A handler that blocks the event loop blocks the broker as well: the mode is for
development, tests and single-machine use, as is the embedded broker itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Protocol, TypeAlias
from urllib.parse import urlsplit

from agentfn.events import CloudEvent

__all__ = ["INPROCESS_SCHEME", "LocalAnswer", "LocalSubscriber", "inprocess_url", "origin_of"]

#: The URL scheme of subscribers hosted in the broker's process (``inprocess://NAME``).
INPROCESS_SCHEME = "inprocess"

#: (status, headers with lower-case names, body): what an HTTP subscriber would answer.
LocalAnswer: TypeAlias = tuple[int, Sequence[tuple[bytes, bytes]], bytes]


class LocalSubscriber(Protocol):
    """Handles one delivery in the broker's process; ``event`` must be treated as read-only
    (a retry delivers the same object again)."""

    def __call__(self, event: CloudEvent, /) -> Awaitable[LocalAnswer]: ...


def inprocess_url(name: str) -> str:
    """The URL standing for the in-process subscriber ``name`` (a Knative Service name)."""
    return f"{INPROCESS_SCHEME}://{name}"


def origin_of(url: str) -> str:
    """``scheme://netloc`` of ``url``, lower-cased: the key local subscribers are found by."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"
