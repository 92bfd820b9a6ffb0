"""Where the reference agents reach their peers over gRPC: ``AGENTFN_RPC_TARGETS``.

``name=target,...`` (a target as ``ctx.rpc`` takes it: ``host:port`` or a Knative URL).
``agentfn render`` writes it into every agent's Service (each gRPC agent's ``<agent>-rpc``
Service, ``<agent>-rpc.<namespace>.svc.cluster.local:80``), ``agentfn render --compose`` into
every Compose service, and ``agentfn dev`` into every agent process it starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

__all__ = ["RPC_TARGETS_ENV", "parse_targets", "target_of"]

RPC_TARGETS_ENV: Final = "AGENTFN_RPC_TARGETS"


def parse_targets(text: str) -> dict[str, str]:
    """``name=target,...`` as a mapping; blank entries are skipped, a malformed one raises."""
    targets: dict[str, str] = {}
    for entry in text.split(","):
        if not entry.strip():
            continue
        name, sep, target = entry.partition("=")
        if not (sep and name.strip() and target.strip()):
            raise ValueError(f"{RPC_TARGETS_ENV}: {entry!r} is not NAME=TARGET")
        targets[name.strip()] = target.strip()
    return targets


def target_of(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The gRPC target of peer ``name``, or ``None`` when none is configured."""
    text = (os.environ if environ is None else environ).get(RPC_TARGETS_ENV, "")
    return parse_targets(text).get(name)
