"""One probe of what this machine can run: CPU model and flags, CUDA GPUs, TensorRT, ONNX Runtime's devices.

:func:`vcorner.models.resolve.resolve_model` decides from a :class:`Capabilities` value alone, so tests
describe a machine (``Capabilities(gpus=(GpuInfo(...),), tensorrt=True, ...)``) instead of patching helpers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vcorner.hardware.cpu import cpu_info
from vcorner.hardware.cuda import GpuInfo, driver_lists_gpu, has_module, visible_gpus
from vcorner.hardware.tensorrt import tensorrt_installed

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


@dataclass(frozen=True)
class Capabilities:
    """What this machine has.

    Attributes:
        cpu: CPU model name (``/proc/cpuinfo``).
        cpu_flags: which of :data:`vcorner.hardware.cpu.CPU_FLAGS` it reports.
        cores: ``os.cpu_count()``, as recorded in benchmark rows.
        gpus: CUDA devices cuda-python sees.
        tensorrt: native TensorRT and cuda-python importable.
        ort_devices: ONNX Runtime devices usable here, best first (``tensorrt``, ``cuda``, ``cpu``).
    """

    cpu: str = "unknown"
    cpu_flags: tuple[str, ...] = ()
    cores: int = 1
    gpus: tuple[GpuInfo, ...] = ()
    tensorrt: bool = False
    ort_devices: tuple[str, ...] = ("cpu",)

    def gpu(self, index: int) -> GpuInfo | None:
        """CUDA device ``index``, or None when there is no such GPU."""
        return next((g for g in self.gpus if g.index == index), None)


def ort_devices(providers: set[str], gpu_visible: bool, tensorrt: bool) -> tuple[str, ...]:
    """ORT devices usable here, best first, from the providers compiled into the installed wheel.

    ``ort.get_available_providers()`` lists what the wheel was built with, not what can run: onnxruntime-gpu on a
    machine without a GPU lists both GPU providers. They are offered only when a GPU is visible, and the TensorRT
    one only when TensorRT itself is installed.
    """
    if not (providers & set(GPU_PROVIDERS)) or not gpu_visible:
        return ("cpu",)
    usable = {"tensorrt": GPU_PROVIDERS[0] in providers and tensorrt, "cuda": GPU_PROVIDERS[1] in providers}
    return (*[d for d, ok in usable.items() if ok], "cpu")


def probe() -> Capabilities:
    """This machine's capabilities (a fraction of a second: imports onnxruntime, asks cuda-python if installed)."""
    import onnxruntime as ort


    cpu, flags = cpu_info()
    gpus = visible_gpus()
    tensorrt = tensorrt_installed()
    return Capabilities(cpu, tuple(flags), os.cpu_count() or 1, gpus, tensorrt,
                        ort_devices(set(ort.get_available_providers()), bool(gpus) or driver_lists_gpu(),
                                    has_module("tensorrt")))
