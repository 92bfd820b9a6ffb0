"""Which device the model runs on: CPU here, CUDA when a GPU is visible, and why.

A pure function of what it is given (the environment, and probes of torch), so every case is
tested without a GPU; the server passes ``os.environ`` and torch's own probes.

``CUDA_VISIBLE_DEVICES`` is the container runtime's word on what this process may use, and torch
honours it: on a MIG node the NVIDIA device plugin sets it to the MIG instance's UUID
(``MIG-<uuid>``), which torch then numbers ``cuda:0``. Set to ``""`` or ``-1`` it hides every
GPU (CUDA stops reading the list at its first invalid entry, so a leading ``-1`` hides all).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["DeviceChoice", "DeviceUnavailableError", "choose_device"]

_VISIBLE: Final = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class DeviceChoice:
    """``device`` as torch takes it (``cpu``, ``cuda:0``), the card's ``name``, and ``reason``."""

    device: str
    name: str
    reason: str


class DeviceUnavailableError(RuntimeError):
    """CUDA was asked for and none is usable; the message says why."""


def _hidden(visible: str | None) -> bool:
    if visible is None:
        return False
    first = visible.split(",", 1)[0].strip()
    return first in {"", "-1"}


def _cuda(index: int, visible: str | None, name: str) -> DeviceChoice:
    if visible is None:
        reason = f"torch sees a GPU ({name})"
    else:
        entry = [part.strip() for part in visible.split(",")][index] if visible else ""
        kind = "MIG instance" if entry.startswith("MIG-") else "GPU"
        reason = f"{_VISIBLE}={visible!r} makes {kind} {entry} visible as cuda:{index} ({name})"
    return DeviceChoice(device=f"cuda:{index}", name=name, reason=reason)


def choose_device(
    requested: str,
    *,
    environ: Mapping[str, str],
    cuda_available: Callable[[], bool],
    device_name: Callable[[int], str],
) -> DeviceChoice:
    """The device for ``requested`` (``auto``, ``cpu``, ``cuda`` or ``cuda:<index>``).

    ``auto`` takes ``cuda:0`` when ``cuda_available()`` says torch sees a GPU, else the CPU;
    ``cuda`` with no GPU usable raises :class:`DeviceUnavailableError` rather than quietly
    running a GPU deployment on its CPU. The probes are called only when the answer needs them
    (a GPU hidden by ``CUDA_VISIBLE_DEVICES`` never initialises CUDA).
    """
    visible = environ.get(_VISIBLE)
    if requested == "cpu":
        return DeviceChoice(device="cpu", name="cpu", reason="device cpu requested")
    if requested == "auto":
        if _hidden(visible):
            return DeviceChoice(
                device="cpu", name="cpu", reason=f"{_VISIBLE}={visible!r} hides every GPU"
            )
        if cuda_available():
            return _cuda(0, visible, device_name(0))
        return DeviceChoice(device="cpu", name="cpu", reason="torch sees no GPU")
    if requested == "cuda" or requested.startswith("cuda:"):
        index = int(requested.partition(":")[2] or 0)
        if _hidden(visible):
            raise DeviceUnavailableError(
                f"device {requested} requested, but {_VISIBLE}={visible!r} hides every GPU"
            )
        if not cuda_available():
            raise DeviceUnavailableError(
                f"device {requested} requested, but torch sees no GPU (no driver, no device "
                "visible, or a CPU build of torch); use --device auto or cpu"
            )
        if visible and index >= len(visible.split(",")):
            raise DeviceUnavailableError(
                f"device {requested} requested, but {_VISIBLE}={visible!r} makes only "
                f"{len(visible.split(','))} visible"
            )
        return _cuda(index, visible, device_name(index))
    raise ValueError(f"device must be auto, cpu, cuda or cuda:<index>, got {requested!r}")
