"""One probe of what this machine has: CPU model and flags, cores, CUDA GPUs, and per inference backend the devices
it can use here.

Resolution (:func:`vcorner.backends.resolve_model`) decides from a :class:`Capabilities` value alone, so tests
describe a machine (``Capabilities(gpus=(GpuInfo(...),), runtimes={"trt": ("cuda",)})``) instead of patching
helpers. The machine half is probed here (:func:`probe_machine`); each backend probes its own half
(``vcorner/backends/<name>/``), and :func:`vcorner.backends.probe` joins them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from vcorner.hardware.cpu import cpu_info
from vcorner.hardware.cuda import GpuInfo, visible_gpus


@dataclass(frozen=True)
class Capabilities:
    """What this machine has.

    Attributes:
        cpu: CPU model name (``/proc/cpuinfo``).
        cpu_flags: which of :data:`vcorner.hardware.cpu.CPU_FLAGS` it reports.
        cores: ``os.cpu_count()``, as recorded in benchmark rows.
        gpus: CUDA devices cuda-python sees.
        runtimes: backend name (``ort``, ``trt``, ...) -> the devices it can use here, best first; a backend
            missing or with no device cannot run here (each backend's probe says what a device is).
    """

    cpu: str = "unknown"
    cpu_flags: tuple[str, ...] = ()
    cores: int = 1
    gpus: tuple[GpuInfo, ...] = ()
    runtimes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def gpu(self, index: int) -> GpuInfo | None:
        """CUDA device ``index``, or None when there is no such GPU."""
        return next((g for g in self.gpus if g.index == index), None)

    def devices(self, backend: str) -> tuple[str, ...]:
        """The devices ``backend`` can use here, best first (empty: it cannot run here)."""
        return tuple(self.runtimes.get(backend, ()))


def probe_machine() -> Capabilities:
    """This machine's CPU, cores and CUDA GPUs, no backend probed yet (asks cuda-python if installed)."""
    cpu, flags = cpu_info()
    return Capabilities(cpu, tuple(flags), os.cpu_count() or 1, visible_gpus())
