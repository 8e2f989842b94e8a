"""Where a benchmark ran: CPU, cores, flags, GPUs, load, library versions, date; and JSON-lines results."""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from vcorner.hardware.cpu import cpu_info

LIBRARIES = ("vcorner", "numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "torch", "numba",
             "opencv-python-headless", "tensorrt")


def gpu_names() -> list[str]:
    """GPU names from nvidia-smi when present, else from torch.cuda when torch is installed; [] without."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20, check=True).stdout
            return [line.strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def busy_cores(interval: float = 0.25, stat: Path = Path("/proc/stat")) -> float | None:
    """Cores kept busy by all processes during ``interval`` seconds (from /proc/stat); None without it.

    Taken before a measurement starts, it tells whether other work shared the machine.
    """
    def sample() -> tuple[float, float]:
        ticks = [float(x) for x in stat.read_text(encoding="utf-8").split("\n", 1)[0].split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    try:
        (total0, idle0), _, (total1, idle1) = sample(), time.sleep(interval), sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return round((1.0 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1), 2)


def machine_info() -> dict[str, Any]:
    """CPU model, cores, CPU flags, GPUs, OS; the 1-minute load average and the busy cores just before."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cpu, flags = cpu_info()
    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_flags": flags, "gpu": gpu_names(),
            "platform": platform.platform(), "load_1m": None if load is None else round(load, 2),
            "busy_cores_before": busy_cores()}


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide the numbers (Python included)."""
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def stamp() -> dict[str, Any]:
    """Machine, versions and UTC date, to merge into every recorded row."""
    return {"machine": machine_info(), "versions": library_versions(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
