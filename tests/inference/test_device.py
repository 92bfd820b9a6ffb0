"""choose_device: every case decided from what it is given (no GPU needed to test the GPU path)."""

from __future__ import annotations

import pytest
from agentfn.inference import DeviceChoice, DeviceUnavailableError, choose_device


def _never(*_: object) -> object:
    raise AssertionError("the probe must not be called: the answer does not need it")


def choose(
    requested: str, environ: dict[str, str], *, gpu: bool, name: str = "NVIDIA H200"
) -> DeviceChoice:
    return choose_device(
        requested,
        environ=environ,
        cuda_available=lambda: gpu,
        device_name=lambda index: f"{name} #{index}",
    )


def test_auto_without_a_gpu_is_the_cpu() -> None:
    assert choose("auto", {}, gpu=False) == DeviceChoice("cpu", "cpu", "torch sees no GPU")


def test_auto_with_a_gpu_is_cuda_0_with_the_cards_name() -> None:
    choice = choose("auto", {}, gpu=True)
    assert (choice.device, choice.name) == ("cuda:0", "NVIDIA H200 #0")
    assert choice.reason == "torch sees a GPU (NVIDIA H200 #0)"


def test_a_mig_instance_uuid_becomes_cuda_0() -> None:
    uuid = "MIG-4f3c2a1b-0d9e-5f6a-8b7c-1d2e3f4a5b6c"
    choice = choose("auto", {"CUDA_VISIBLE_DEVICES": uuid}, gpu=True, name="H200 MIG 1g.18gb")
    assert choice.device == "cuda:0"
    assert choice.reason == (
        f"CUDA_VISIBLE_DEVICES='{uuid}' makes MIG instance {uuid} visible as cuda:0 "
        "(H200 MIG 1g.18gb #0)"
    )


def test_a_visible_gpu_index_is_named_in_the_reason() -> None:
    choice = choose("auto", {"CUDA_VISIBLE_DEVICES": "3"}, gpu=True)
    assert choice.device == "cuda:0"
    assert choice.reason.startswith("CUDA_VISIBLE_DEVICES='3' makes GPU 3 visible as cuda:0")


@pytest.mark.parametrize("hidden", ["", "-1", " -1 ", "-1,0"])
def test_cuda_visible_devices_empty_or_minus_one_hides_every_gpu(hidden: str) -> None:
    choice = choose_device(
        "auto", environ={"CUDA_VISIBLE_DEVICES": hidden}, cuda_available=_never, device_name=_never
    )  # type: ignore[arg-type]
    assert choice == DeviceChoice("cpu", "cpu", f"CUDA_VISIBLE_DEVICES={hidden!r} hides every GPU")


def test_cpu_requested_is_the_cpu_even_with_a_gpu() -> None:
    choice = choose_device("cpu", environ={}, cuda_available=_never, device_name=_never)  # type: ignore[arg-type]
    assert choice == DeviceChoice("cpu", "cpu", "device cpu requested")


def test_cuda_requested_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(DeviceUnavailableError, match="cuda requested, but torch sees no GPU"):
        choose("cuda", {}, gpu=False)


def test_cuda_requested_with_gpus_hidden_names_the_variable() -> None:
    with pytest.raises(DeviceUnavailableError, match="CUDA_VISIBLE_DEVICES='-1' hides every GPU"):
        choose("cuda", {"CUDA_VISIBLE_DEVICES": "-1"}, gpu=True)


def test_cuda_index_requested() -> None:
    choice = choose("cuda:1", {"CUDA_VISIBLE_DEVICES": "0,1"}, gpu=True)
    assert (choice.device, choice.name) == ("cuda:1", "NVIDIA H200 #1")
    assert "makes GPU 1 visible as cuda:1" in choice.reason


def test_cuda_index_beyond_the_visible_ones_is_refused() -> None:
    with pytest.raises(DeviceUnavailableError, match="makes only 1 visible"):
        choose("cuda:1", {"CUDA_VISIBLE_DEVICES": "MIG-abc"}, gpu=True)


def test_an_unknown_device_is_refused() -> None:
    with pytest.raises(ValueError, match="got 'tpu'"):
        choose("tpu", {}, gpu=True)
