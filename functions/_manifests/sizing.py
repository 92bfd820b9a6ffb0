"""What every container in the namespace asks for, and the arithmetic the quota is made of.

The ResourceQuota must cover every pod the namespace can run at once, so each size a rendered
container carries is named here once and summed exactly (Kubernetes quantities as fractions,
never floats). The rules, each a constant below:

- A container that declares nothing gets the LimitRange's ``defaultRequest``
  (:data:`DEFAULT_REQUEST`) and ``default`` limit (:data:`DEFAULT_LIMIT`). A declared limit
  without a request makes the request equal to the limit (the API server's own defaulting); a
  declared request above the default limit raises the limit to the request, since the API
  server rejects a container whose injected limit is below its request.
  :func:`container_resources` renders that explicitly, so a manifest says what it will get.
- An agent whose ``max_scale`` is 0 (unbounded) is counted at :data:`UNBOUNDED_MAX_SCALE`
  replicas: the quota is then what caps it (Knative's autoscaler reports the pods the quota
  refuses). Declare a ``max_scale`` to size it otherwise.
- Every Knative Service and rolling Deployment gets :data:`ROLLOUT_SURGE` pod more than its
  maximum: a new revision's first pod starts before the old one goes, and a quota that fits
  only the steady state blocks a rollout at peak load.
- Knative's ``queue-proxy`` runs beside every revision's container; its size is set per
  revision by :func:`queue_proxy_annotations` (:data:`QUEUE_PROXY`), so it is counted at a
  known size instead of whatever the cluster's ``config-deployment`` says.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Final

from agentfn.functions._hints import Resources, Scaling

__all__ = [
    "COLLECTOR",
    "DEAD_LETTERS",
    "DEAD_LETTERS_MAX_SCALE",
    "DEFAULT_LIMIT",
    "DEFAULT_REQUEST",
    "GPU_RESOURCE",
    "QUEUE_PROXY",
    "QUEUE_PROXY_ANNOTATION_PREFIX",
    "REDIS",
    "ROLLOUT_SURGE",
    "UNBOUNDED_MAX_SCALE",
    "Size",
    "container_resources",
    "effective_size",
    "format_cpu",
    "format_memory",
    "max_replicas",
    "parse_quantity",
    "queue_proxy_annotations",
]

#: The extended resource a ``Resources(gpu=N)`` agent asks for (NVIDIA's device plugin).
GPU_RESOURCE: Final = "nvidia.com/gpu"

#: Replicas an agent with an unbounded ``max_scale`` (0) is counted at.
UNBOUNDED_MAX_SCALE: Final = 10
#: Extra pods per workload for a rollout (Knative's new revision, a Deployment's maxSurge).
ROLLOUT_SURGE: Final = 1

#: The LimitRange's ``defaultRequest``: what a container that declares no request gets.
DEFAULT_REQUEST: Final[Mapping[str, str]] = MappingProxyType({"cpu": "100m", "memory": "128Mi"})
#: The LimitRange's ``default``: the limit of a container that declares none.
DEFAULT_LIMIT: Final[Mapping[str, str]] = MappingProxyType({"cpu": "500m", "memory": "256Mi"})

#: Knative's queue-proxy, sized per revision: the smallest request and a limit inside the
#: bounds Knative's own resource-percentage rule keeps it in (25m-100m, 50Mi-200Mi requests).
QUEUE_PROXY: Final = Resources(cpu="25m", memory="50Mi", cpu_limit="500m", memory_limit="200Mi")
QUEUE_PROXY_ANNOTATION_PREFIX: Final = "queue.sidecar.serving.knative.dev/"

#: A lightweight OpenTelemetry Collector (shared Deployment or per-agent sidecar): 50-100m CPU,
#: 64-128Mi memory.
COLLECTOR: Final = Resources(cpu="50m", memory="64Mi", cpu_limit="100m", memory_limit="128Mi")
#: The single-node Redis of the ``local`` profile.
REDIS: Final = Resources(cpu="100m", memory="128Mi", cpu_limit="500m", memory_limit="256Mi")
#: The ``dead-letters`` sink's container: a write-ahead store behind a small HTTP server.
DEAD_LETTERS: Final = Resources(cpu="100m", memory="128Mi", cpu_limit="500m", memory_limit="256Mi")
#: The sink runs at min-scale 1; one replica holds its store's depth gauges and alarm.
DEAD_LETTERS_MAX_SCALE: Final = 1

_QUANTITY: Final = re.compile(
    r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)|[eE](?P<exponent>[+-]?\d+))?"
)
_SUFFIXES: Final = {
    "": Fraction(1),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_BINARY: Final = ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki")
_DECIMAL: Final = ("E", "P", "T", "G", "M", "k")


def parse_quantity(text: str | int) -> Fraction:
    """A Kubernetes quantity (``"250m"``, ``"1.5Gi"``, ``"1e3"``, ``2``) as an exact number."""
    if isinstance(text, int):
        return Fraction(text)
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number = Fraction(match["number"])
    if match["exponent"] is not None:
        return number * Fraction(10) ** int(match["exponent"])
    return number * _SUFFIXES[match["suffix"] or ""]


def format_cpu(cores: Fraction) -> str:
    """Canonical CPU: whole cores (``"2"``) or millicores (``"1250m"``), rounded up to 1m."""
    millis = math.ceil(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_memory(size: Fraction) -> str:
    """Canonical bytes: the exact suffix giving the smallest number, else plain bytes."""
    whole = math.ceil(size)
    if whole == 0:
        return "0"
    # The shortest exact form; binary first on a tie (1Gi, 2G, 1536Mi, 1268435456).
    exact = [
        (whole // _SUFFIXES[suffix], suffix)
        for suffix in (*_BINARY, *_DECIMAL)
        if whole % _SUFFIXES[suffix] == 0
    ]
    count, suffix = min(exact, key=lambda pair: pair[0], default=(whole, ""))
    return f"{count}{suffix}"


@dataclass(frozen=True, slots=True)
class Size:
    """A container's effective requests and limits, exact: what the quota adds up."""

    cpu: Fraction
    memory: Fraction
    cpu_limit: Fraction
    memory_limit: Fraction
    gpu: int = 0


def _effective(
    request: str | None, limit: str | None, default_request: str, default_limit: str, what: str
) -> tuple[Fraction, Fraction]:
    asked = None if request is None else parse_quantity(request)
    capped = None if limit is None else parse_quantity(limit)
    if asked is not None and capped is not None and asked > capped:
        raise ValueError(f"{what} request {request} is above its limit {limit}")
    if asked is None:
        asked = capped if capped is not None else parse_quantity(default_request)
    if capped is None:
        capped = max(parse_quantity(default_limit), asked)
    return asked, capped


def effective_size(resources: Resources) -> Size:
    """What a container declaring ``resources`` runs with once admitted (see the module doc).

    Raises :class:`ValueError` for a request above its own limit, which the API server refuses.
    """
    cpu, cpu_limit = _effective(
        resources.cpu, resources.cpu_limit, DEFAULT_REQUEST["cpu"], DEFAULT_LIMIT["cpu"], "cpu"
    )
    memory, memory_limit = _effective(
        resources.memory,
        resources.memory_limit,
        DEFAULT_REQUEST["memory"],
        DEFAULT_LIMIT["memory"],
        "memory",
    )
    return Size(cpu, memory, cpu_limit, memory_limit, resources.gpu)


def container_resources(resources: Resources) -> dict[str, Any]:
    """A container's ``resources``: every request and limit explicit, in canonical quantities.

    A GPU is a limit only: for an extended resource the request defaults to the limit.
    """
    size = effective_size(resources)
    limits: dict[str, Any] = {
        "cpu": format_cpu(size.cpu_limit),
        "memory": format_memory(size.memory_limit),
    }
    if size.gpu:
        limits[GPU_RESOURCE] = size.gpu
    return {
        "requests": {"cpu": format_cpu(size.cpu), "memory": format_memory(size.memory)},
        "limits": limits,
    }


def queue_proxy_annotations() -> dict[str, str]:
    """Revision-template annotations that size Knative's queue-proxy as :data:`QUEUE_PROXY`."""
    size = effective_size(QUEUE_PROXY)
    return {
        f"{QUEUE_PROXY_ANNOTATION_PREFIX}cpu-resource-request": format_cpu(size.cpu),
        f"{QUEUE_PROXY_ANNOTATION_PREFIX}cpu-resource-limit": format_cpu(size.cpu_limit),
        f"{QUEUE_PROXY_ANNOTATION_PREFIX}memory-resource-request": format_memory(size.memory),
        f"{QUEUE_PROXY_ANNOTATION_PREFIX}memory-resource-limit": format_memory(size.memory_limit),
    }


def max_replicas(scaling: Scaling) -> int:
    """Replicas an agent is counted at: its ``max_scale``, or the cap when it is unbounded."""
    if scaling.max_scale:
        return scaling.max_scale
    return max(UNBOUNDED_MAX_SCALE, scaling.min_scale)
