"""What a render is asked for: every knob of ``agentfn render``, validated once."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_IMAGE", "Otel", "Profile", "RenderOptions"]

#: The image every agent runs (one image, the agent chosen by AGENTFN_AGENT): what
#: ``scripts/deploy.sh`` pushes to the kind cluster's local registry.
DEFAULT_IMAGE: Final = "localhost:5001/agentfn:latest"

Profile = Literal["local", "prod"]
Otel = Literal["shared", "sidecar", "off"]

#: A DNS-1123 label (namespaces, Service and Broker names).
_LABEL: Final = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class RenderOptions(BaseModel):
    """The options of one render; the defaults are what ``knative/`` is committed with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: A namespace of its own: its ResourceQuota and LimitRange bound everything in it, so they
    #: must not land on ``default`` and constrain a user's unrelated workloads there.
    namespace: str = Field(default="agentfn", pattern=_LABEL)
    image: str = Field(default=DEFAULT_IMAGE, min_length=1)
    broker: str = Field(default="default", pattern=_LABEL)
    #: Strimzi's name for a cluster called my-cluster in namespace kafka (what kind-up.sh runs).
    kafka_bootstrap: str = Field(default="my-cluster-kafka-bootstrap.kafka:9092", min_length=1)
    profile: Profile = "local"
    otel: Otel = "shared"
    #: Waiting dead letters of one Trigger that fire the PrometheusRule (and the sink's alarm).
    alert_depth: int = Field(default=10, ge=0)

    @property
    def replication_factor(self) -> int:
        """``default.topic.replication.factor``: 1 on a one-node kind Kafka, 3 in production."""
        return 1 if self.profile == "local" else 3
