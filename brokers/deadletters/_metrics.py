"""Prometheus metrics of one dead-letter sink, labelled per Trigger as the broker's are.

Each :class:`DeadLetterMetrics` owns its registry, so several sinks in one process (tests,
``agentfn dev``) never share counters. The depth gauge mirrors the store, not a running sum:
:meth:`set_depth` replaces every value with what the store read, so two sinks over one store,
or a purge done by another process, never leave it drifting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["DeadLetterMetrics", "Labels", "ReplayOutcome"]

#: ``(namespace, broker, trigger)``, ``""`` for a part the sink's path did not name.
Labels = tuple[str, str, str]
ReplayOutcome = Literal["accepted", "refused", "unanswered"]

_TRIGGER: Final = ["namespace_name", "broker_name", "trigger_name"]


class DeadLetterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.depth = Gauge(
            "agentfn_deadletters_depth",
            "Dead letters waiting (not replayed since they last arrived), per Trigger",
            _TRIGGER,
            registry=r,
        )
        self.stored = Counter(
            "agentfn_deadletters_stored",
            "Dead letters stored: new ones, and replayed ones that came back",
            _TRIGGER,
            registry=r,
        )
        self.duplicates = Counter(
            "agentfn_deadletters_duplicates",
            "Dead letters received again while still waiting (kept once)",
            _TRIGGER,
            registry=r,
        )
        self.replayed = Counter(
            "agentfn_deadletters_replayed",
            "Replays sent to a broker ingress, by its answer (accepted: 2xx; refused: "
            "any other status; unanswered: none)",
            [*_TRIGGER, "outcome"],
            registry=r,
        )
        self.purged = Counter(
            "agentfn_deadletters_purged",
            "Dead letters deleted from the store",
            _TRIGGER,
            registry=r,
        )
        self._depth_labels: set[Labels] = set()

    def set_depth(self, depth: Mapping[Labels, int]) -> None:
        """Make the gauge say ``depth``; Triggers no longer in it drop to 0 (not removed:
        a series that vanishes reads as "no data" to an alert, not as "recovered")."""
        for labels in self._depth_labels - depth.keys():
            self.depth.labels(*labels).set(0)
        for labels, value in depth.items():
            self.depth.labels(*labels).set(value)
        self._depth_labels |= depth.keys()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
