"""What a render is asked for: every knob of ``agentfn render``, validated once."""

from __future__ import annotations

import re
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "DEFAULT_IMAGE",
    "DEFAULT_MIG_PROFILE",
    "INFERENCE_TAG_SUFFIX",
    "MIG_PROFILE",
    "Otel",
    "Profile",
    "RenderOptions",
]

#: The image every agent runs (one image, the agent chosen by AGENTFN_AGENT): what
#: ``scripts/deploy.sh`` pushes to the kind cluster's local registry.
DEFAULT_IMAGE: Final = "localhost:5001/agentfn:latest"

Profile = Literal["local", "prod"]
Otel = Literal["shared", "sidecar", "off"]

#: A DNS-1123 label (namespaces, Service and Broker names).
_LABEL: Final = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
#: A MIG profile as NVIDIA's device plugin names its resource (mixed strategy):
#: ``nvidia.com/mig-<compute slices>g.<memory GB>gb``, e.g. ``1g.10gb`` on an H100 or H200.
MIG_PROFILE: Final = re.compile(r"\d+g\.\d+gb")
#: The smallest slice of an 80 GB A100 or H100 (an H200's smallest is ``1g.18gb``): a seventh
#: of the GPU's compute and 10 GB, where the model's weights take under 100 MB.
DEFAULT_MIG_PROFILE: Final = "1g.10gb"
#: Added to the agents' image tag to name the model servers' image by default.
INFERENCE_TAG_SUFFIX: Final = "-inference"


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
    #: The MIG slice each model-server replica asks for: resource ``nvidia.com/mig-<profile>``.
    mig_profile: str = DEFAULT_MIG_PROFILE
    #: The model servers' ``maxReplicas``; ``None``: what their agent's ``Scaling`` declares.
    model_max_replicas: int | None = Field(default=None, ge=1)
    #: The image the model servers run (the Dockerfile built with the ``inference`` extra);
    #: ``None``: :attr:`image` with ``-inference`` added to its tag.
    model_image: str | None = Field(default=None, min_length=1)
    #: Label the model servers' pods for Kueue's LocalQueue (``kserve/kueue/``, optional).
    kueue: bool = False

    @field_validator("mig_profile")
    @classmethod
    def _mig_profile(cls, value: str) -> str:
        if not MIG_PROFILE.fullmatch(value):
            raise ValueError(
                f"{value!r} is no MIG profile: NVIDIA names them <g>g.<memory>gb "
                f"(resource nvidia.com/mig-<g>g.<memory>gb), e.g. {DEFAULT_MIG_PROFILE}"
            )
        return value

    @property
    def mig_resource(self) -> str:
        """The extended resource of :attr:`mig_profile` (``nvidia.com/mig-1g.10gb``)."""
        return f"nvidia.com/mig-{self.mig_profile}"

    @property
    def server_image(self) -> str:
        """What the model servers run: :attr:`model_image`, else :attr:`image` tagged
        ``<tag>-inference`` (the agents' image has no torch; a digest is kept as it is)."""
        if self.model_image is not None:
            return self.model_image
        if "@" in self.image:
            return self.image
        name, _, tag = self.image.rpartition(":")
        if not name or "/" in tag:  # no tag: the colon was a registry port's, or none
            return f"{self.image}:latest{INFERENCE_TAG_SUFFIX}"
        return f"{name}:{tag}{INFERENCE_TAG_SUFFIX}"

    @property
    def replication_factor(self) -> int:
        """``default.topic.replication.factor``: 1 on a one-node kind Kafka, 3 in production."""
        return 1 if self.profile == "local" else 3
