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


INFERENCE_SHARE = {"int8": 0.5, "fp32": 0.7}
"""Inference's share of a CPU batch's work per image, by graph precision. Measured on the 2-core AVX-512 VNNI
machine of README.md (Performance) with the shipped sampling: the INT8 network costs 8 ms of one core per phantom
film, the FP32 one 18 ms, beside 8.5 ms of decoding, patch cutting and corner search
(``benchmarks/end_to_end.py``, ``stage_ms_per_image``)."""


def inference_threads(precision: str, cores: int | None = None) -> int:
    """ONNX Runtime threads of a CPU batch of a ``precision`` graph on ``cores`` (default:
    :func:`available_cores`): the cores times inference's share of the work (:data:`INFERENCE_SHARE`), rounded
    up, so that the remaining cores decode and find corners. On 2 cores: 1 for INT8 (98.5 against 92.0 images/s
    with 2), 2 for FP32 (63.2 against 52.8 with 1), ``benchmarks/end_to_end.py --threads``. The threads sleep
    between operators, so the cores they share with decoding are not held idle.
    """
    cores = cores or available_cores()
    return min(cores, max(1, math.ceil(cores * INFERENCE_SHARE.get(precision, 1.0))))
