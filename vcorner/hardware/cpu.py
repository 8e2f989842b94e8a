"""The CPU: model name, the instruction-set flags that decide kernel speed, and the cores this process may use."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, list[str]]:
    """CPU model name and which of ``CPU_FLAGS`` it reports (``platform``'s guess and [] without /proc)."""
    try:
        lines = cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return platform.processor() or platform.machine(), []
    fields = dict(line.split(":", 1) for line in reversed(lines) if ":" in line)  # the first CPU wins
    fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return fields.get("model name") or platform.machine(), [f for f in CPU_FLAGS if f in flags]


def available_cores() -> int:
    """Cores this process may run on (CPU affinity and container limits), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


PATCH_MS = {"int8": 0.85, "fp32": 1.85}
"""Inference of one 64 x 64 patch on one core, ms, by graph precision: the shipped lite UNet on the 2-core
AVX-512 VNNI machine of README.md (Performance), 8.2-8.7 ms (INT8) and 17.7-19.4 ms (FP32) per phantom film of
10 patches (``benchmarks/end_to_end.py``, ``stage_ms_per_image``)."""
STAGE_MS = (8.5, 0.12)
"""Decoding, patch cutting and corner search of one film on one core, ms: a fixed part plus a part per patch
(same runs: 9.5-10 ms at 10 patches per film, 19-19.5 ms at 90)."""
VERTEBRAE_PER_FILM = 5
"""Vertebrae of a typical lateral cervical film (the phantoms' C3-C7)."""


def inference_threads(precision: str, patches_per_vertebra: int, cores: int | None = None) -> int:
    """ONNX Runtime threads of a CPU batch on ``cores`` (default: :func:`available_cores`): the cores times
    inference's share of a film's work (:data:`PATCH_MS` per patch against :data:`STAGE_MS`), rounded up; the
    cores left decode images and find corners.

    On 2 cores with the shipped sampling (2 patches per vertebra): 1 thread for INT8 (96.9 against 95.4 images/s
    with 2: the same), 2 for FP32 (57.8 against 51.2 with 1), ``benchmarks/thread_split.py``; with 18 patches
    per vertebra inference is most of the work and gets both (INT8: 16.0 against 13.3 images/s with 1). On more
    cores the batch's loader and finisher threads grow with the cores inference leaves. The threads sleep
    between operators, so the cores they share with decoding are not held idle.
    """
    cores = cores or available_cores()
    patches = VERTEBRAE_PER_FILM * max(1, patches_per_vertebra)
    inference = PATCH_MS.get(precision, PATCH_MS["fp32"]) * patches
    stages = STAGE_MS[0] + STAGE_MS[1] * patches
    return min(cores, max(1, math.ceil(cores * inference / (inference + stages))))
