"""CUDA through cuda-python: is it there, how many GPUs, which GPU; the runtime module and its error check.

Nothing here imports cuda-python at module level: the CPU install never has it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vcorner.io.records import InputError, MachineError

INSTALL_HINT = "pip install 'vcorner[gpu]'"


@dataclass(frozen=True)
class GpuInfo:
    """A CUDA device.

    Attributes:
        name: marketing name (``NVIDIA H100 80GB HBM3``).
        compute_capability: ``major.minor`` (``9.0``).
        index: CUDA device ordinal.
    """

    name: str
    compute_capability: str
    index: int = 0

    @property
    def sm(self) -> str:
        """``sm90`` for compute capability 9.0."""
        return "sm" + self.compute_capability.replace(".", "")


def has_module(name: str) -> bool:
    """Whether ``name`` is importable (without importing it when avoidable)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def has_cuda_python() -> bool:
    """cuda-python's runtime bindings are importable (``cuda.bindings``, or ``cuda.cudart`` before 12.6); a bare
    ``cuda`` namespace package (e.g. cuda-pathfinder alone) does not count."""
    return has_module("cuda.bindings") or has_module("cuda.cudart")


def cudart():
    """cuda-python's runtime module (``cuda.bindings.runtime``; ``cuda.cudart`` before cuda-python 12.6).

    Raises:
        MachineError: cuda-python is not installed.
    """
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise MachineError(f"the TensorRT backend needs cuda-python and a CUDA GPU: {INSTALL_HINT}") from None
    return runtime


def cuda_call(result: tuple) -> Any:
    """Unpack a cuda-python ``(error, *values)`` result; raise RuntimeError naming the CUDA error."""
    runtime = cudart()
    error, values = result[0], result[1:]
    if error != runtime.cudaError_t.cudaSuccess:
        name = runtime.cudaGetErrorName(error)[1]
        raise RuntimeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else (values or None)


def cuda_device_count() -> int:
    """Number of visible CUDA devices (0 when cuda-python, the driver or a GPU is missing)."""
    if not has_cuda_python():
        return 0
    try:
        error, count = cudart().cudaGetDeviceCount()
        return int(count) if error == cudart().cudaError_t.cudaSuccess else 0
    except Exception:  # a missing driver library surfaces as various errors from the bindings
        return 0


def current_gpu(device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``device``.

    Raises:
        InputError: no such GPU (one line, with the install hint).
    """
    if cuda_device_count() <= device:
        raise InputError(f"no CUDA GPU {device} visible here; the TensorRT backend needs one ({INSTALL_HINT}), "
                         "or use --backend ort")
    props = cuda_call(cudart().cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(name.rstrip("\x00").strip(), f"{props.major}.{props.minor}", device)


def visible_gpus() -> tuple[GpuInfo, ...]:
    """Every CUDA device cuda-python sees (none without cuda-python, a driver or a GPU)."""
    try:
        return tuple(current_gpu(i) for i in range(cuda_device_count()))
    except (InputError, RuntimeError):
        return ()


def driver_lists_gpu(gpus: Path = Path("/proc/driver/nvidia/gpus")) -> bool:
    """The Linux NVIDIA driver lists a GPU (true even where cuda-python is newer than the driver)."""
    return gpus.is_dir() and any(gpus.iterdir())


def torch_cuda_available() -> bool:
    """torch is installed and sees a CUDA GPU (imports torch: call only for the torch backend)."""
    if not has_module("torch"):
        return False
    import torch

    return bool(torch.cuda.is_available())
