"""The CPU: model name, the instruction-set flags that decide kernel speed, and the cores this process may use."""

from __future__ import annotations

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


def batch_core_split(cores: int | None = None) -> tuple[int, int]:
    """How a batch with CPU inference shares ``cores`` (default: :func:`available_cores`): ``(inference threads,
    decoding threads)``; as many corner-search threads as decoding threads run beside them.

    Half the cores each, inference taking the odd one, at least 1 each: per phantom film the INT8 network costs
    about 8.5 ms of one core and decoding, patch cutting and the corner search about 9 ms
    (``benchmarks/stage_times.py``), so neither side waits on the other. On 2 cores: 1 and 1.
    """
    cores = cores or available_cores()
    stages = max(1, cores // 2)
    return max(1, cores - stages), stages
