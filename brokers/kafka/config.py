"""What Knative's ``kafka-broker-config`` ConfigMap says, and the defaults where it is silent."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_RECORD_BYTES",
    "DEFAULT_REPLICATION",
    "RECORD_OVERHEAD_BYTES",
    "KafkaBrokerConfig",
]

#: Knative's ``default.topic.partitions``.
DEFAULT_PARTITIONS: Final = 10
#: One replica: a local or CI Kafka has one broker (cluster manifests say 3).
DEFAULT_REPLICATION: Final = 1
#: Room in a record beyond the HTTP body the ingress accepted: the attributes, which binary
#: mode carries in headers outside the body, and the record and batch framing.
RECORD_OVERHEAD_BYTES: Final = 64 * 1024
#: The largest record (``max.request.size``, and ``max.message.bytes`` of the topics this log
#: creates): the ingress's default 1 MiB body and the overhead. Knative's data plane stops at
#: 1 MiB including the headers, so an event the ingress takes would not always fit.
DEFAULT_RECORD_BYTES: Final = 1024 * 1024 + RECORD_OVERHEAD_BYTES

_PARTITIONS_KEY: Final = "default.topic.partitions"
_REPLICATION_KEY: Final = "default.topic.replication.factor"
_BOOTSTRAP_KEY: Final = "bootstrap.servers"


@dataclass(frozen=True, slots=True)
class KafkaBrokerConfig:
    """What Knative's ``kafka-broker-config`` ConfigMap says about topics and the cluster."""

    bootstrap_servers: str | None = None
    partitions: int = DEFAULT_PARTITIONS
    replication_factor: int = DEFAULT_REPLICATION

    @classmethod
    def from_configmap(cls, path: str | Path) -> KafkaBrokerConfig:
        """Read a ``kafka-broker-config``-style ConfigMap (YAML); absent keys keep defaults."""
        text = Path(path).read_text(encoding="utf-8")
        try:
            documents = [d for d in yaml.safe_load_all(text) if d]
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not YAML: {error}") from None
        configmaps = [
            d
            for d in documents
            if isinstance(d, dict) and d.get("kind", "ConfigMap") == "ConfigMap"
        ]
        if len(configmaps) != 1 or not isinstance(configmaps[0].get("data", {}), dict):
            raise ValueError(f"{path}: expected one ConfigMap with a data mapping")
        data: dict[str, object] = configmaps[0].get("data") or {}

        def positive(key: str, default: int) -> int:
            raw = data.get(key)
            if raw is None:
                return default
            try:
                value = int(str(raw).strip())
            except ValueError:
                raise ValueError(f"{path}: data.{key}: {raw!r} is not an integer") from None
            if value < 1:
                raise ValueError(f"{path}: data.{key}: must be at least 1, not {value}")
            return value

        bootstrap = data.get(_BOOTSTRAP_KEY)
        return cls(
            bootstrap_servers=str(bootstrap).strip() or None if bootstrap is not None else None,
            partitions=positive(_PARTITIONS_KEY, DEFAULT_PARTITIONS),
            replication_factor=positive(_REPLICATION_KEY, DEFAULT_REPLICATION),
        )
