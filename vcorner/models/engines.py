"""Where a model's TensorRT engine lives and whether a cached plan still fits (pure Python, no TensorRT).

A plan is only valid for the TensorRT version and the GPU it was built on. Each ``m.<profile>.sm<CC>.plan``
therefore has a JSON sidecar holding its *key* (ONNX SHA-256, TensorRT version, compute capability, GPU
name, profile) and the plan's own SHA-256. ``vcorner export`` and the batch's cache step
(:func:`vcorner.export.tensorrt_build.ensure_engine`) rebuild on any mismatch; the TensorRT runner
(:mod:`vcorner.backends.trt.runner`) loads only a plan whose key matches.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vcorner.hardware.cuda import GpuInfo
from vcorner.io.atomic import write_text_atomic
from vcorner.io.cache import user_cache_dir
from vcorner.models.card import sha256_file
from vcorner.models.profiles import ExportProfile

ENGINE_FORMAT = "vcorner-engine/1"
KEY_FIELDS = ("format", "onnx_sha256", "tensorrt", "compute_capability", "gpu", "profile")


def engine_key(onnx_sha256: str, tensorrt_version: str, gpu: GpuInfo, profile: ExportProfile) -> dict[str, Any]:
    """What a plan depends on; any change means a rebuild. The profile's description is left out."""
    fields = {k: v for k, v in profile.to_dict().items() if k != "description"}
    return {"format": ENGINE_FORMAT, "onnx_sha256": onnx_sha256, "tensorrt": tensorrt_version,
            "compute_capability": gpu.compute_capability, "gpu": gpu.name, "profile": fields}


def key_digest(key: dict[str, Any]) -> str:
    """Hex SHA-256 of the key's canonical JSON (independent of dict order)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def key_differences(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """Human-readable differences between the key wanted here and a plan's recorded key (empty: same)."""
    labels = {"format": "sidecar format", "onnx_sha256": "ONNX model", "tensorrt": "TensorRT",
              "compute_capability": "compute capability", "gpu": "GPU"}
    changes = []
    for field in KEY_FIELDS:
        old, new = found.get(field), expected.get(field)
        if old == new:
            continue
        if field == "profile":
            old, new = old or {}, new or {}
            changes += [f"profile {k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                        if old.get(k) != new.get(k)]
        elif field == "onnx_sha256":
            changes.append("ONNX model changed (SHA-256 differs)")
        else:
            changes.append(f"{labels[field]} {old} -> {new}")
    return changes


def default_cache_dir() -> Path:
    """The user cache (``$VCORNER_CACHE``, ``$XDG_CACHE_HOME/vcorner`` or ``~/.cache/vcorner``) plus ``engines``."""
    return user_cache_dir() / "engines"


def engine_dir(onnx: Path, cache_dir: Path | None = None) -> Path:
    """Where engines for ``onnx`` go: ``cache_dir``; else beside the model when that folder is writable and
    not inside the installed package (the shipped model); else the user cache."""
    if cache_dir is not None:
        return Path(cache_dir)
    folder = Path(onnx).resolve().parent
    package = Path(__file__).resolve().parents[1]  # the installed vcorner
    inside_package = folder == package or package in folder.parents
    return folder if os.access(folder, os.W_OK) and not inside_package else default_cache_dir()


def engine_paths(onnx: Path, profile: ExportProfile, gpu: GpuInfo, cache_dir: Path | None = None) -> tuple[Path, Path]:
    """(plan, sidecar) for ``m.onnx``: ``m.<profile>.<sm>.plan`` and ``m.<profile>.<sm>.plan.json``."""
    stem = Path(onnx).name.removesuffix(".onnx")
    plan = engine_dir(onnx, cache_dir) / f"{stem}.{profile.name}.{gpu.sm}.plan"
    return plan, Path(f"{plan}.json")


def timing_cache_path(folder: Path, gpu: GpuInfo, tensorrt_version: str) -> Path:
    """One timing cache per GPU architecture and TensorRT version (they are not portable)."""
    return Path(folder) / f"timing.{gpu.sm}.trt{tensorrt_version}.cache"


def engine_sidecar(key: dict[str, Any], plan_sha256: str, build_seconds: float) -> dict[str, Any]:
    """The JSON written beside a plan."""
    return {"format": ENGINE_FORMAT, "key": key, "key_sha256": key_digest(key), "plan_sha256": plan_sha256,
            "build_seconds": round(build_seconds, 2),
            "built": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_engine_sidecar(path: Path, data: dict[str, Any]) -> None:
    """Write a plan's sidecar atomically."""
    write_text_atomic(Path(path), json.dumps(data, indent=1) + "\n")


def read_engine_sidecar(path: Path) -> dict[str, Any] | None:
    """A plan's sidecar, or None when missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def rebuild_reason(plan: Path, sidecar: Path, key: dict[str, Any]) -> str | None:
    """Why the plan at ``plan`` cannot be used for ``key`` (one line), or None when it can."""
    if not Path(plan).is_file():
        return "no engine built yet"
    data = read_engine_sidecar(sidecar)
    if data is None:
        return f"{Path(sidecar).name} is missing or unreadable"
    changes = key_differences(key, data.get("key") or {})
    if changes:
        return "built for another setup: " + "; ".join(changes)
    if data.get("plan_sha256") != sha256_file(plan):
        return "the plan file changed or is corrupt (SHA-256 differs from its sidecar)"
    return None


def plan_problem(plan: Path, tensorrt_version: str, gpu: GpuInfo) -> str | None:
    """Why TensorRT ``tensorrt_version`` on ``gpu`` cannot load ``plan`` as recorded in its sidecar (one line),
    or None when the plan was built here and is intact (what the runner checks before deserializing)."""
    data = read_engine_sidecar(Path(f"{plan}.json"))
    if not Path(plan).is_file() or data is None:
        return "no engine built (or its sidecar is missing)"
    key = data.get("key") or {}
    expected = {**key, "tensorrt": tensorrt_version, "compute_capability": gpu.compute_capability, "gpu": gpu.name}
    return rebuild_reason(plan, Path(f"{plan}.json"), expected)
