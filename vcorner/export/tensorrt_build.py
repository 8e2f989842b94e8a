"""TensorRT engines from vcorner ONNX models, cached so that a plan never silently breaks.

Engines are built *strongly typed* (precision comes from the ONNX graph: the mixed FP16 graph of
:mod:`vcorner.export.fp16` or the FP32 one), which works unchanged on TensorRT 10 (where strong typing is
the ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` opt-in) and TensorRT 11 (which removed
``BuilderFlag.FP16`` and types every network strongly). One optimization profile spans the batch axis
(:class:`~vcorner.export.profiles.ExportProfile` ``batch_min/opt/max``); a timing cache file per GPU
architecture and TensorRT version speeds up rebuilds.

A plan is only valid for the TensorRT version and the GPU it was built on. Each ``m.<profile>.sm<CC>.plan``
therefore has a JSON sidecar holding its *key* (ONNX SHA-256, TensorRT version, compute capability, GPU
name, profile) and the plan's own SHA-256; :func:`load_or_build_engine` rebuilds, with a logged reason, on
any mismatch, on a corrupt plan, and on a plan TensorRT refuses to deserialize, instead of crashing.

The key, paths, sidecar and rebuild decision are pure Python (tested without TensorRT); ``tensorrt`` and
``cuda-python`` (the ``gpu`` extra) are imported inside the functions that need them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vcorner.card import sha256_file
from vcorner.export.profiles import ExportProfile
from vcorner.io.atomic import write_bytes_atomic, write_text_atomic
from vcorner.io.records import InputError
from vcorner.modelfile import INPUT_NAME

log = logging.getLogger(__name__)

ENGINE_FORMAT = "vcorner-engine/1"
INSTALL_HINT = "pip install 'vcorner[gpu]'"
KEY_FIELDS = ("format", "onnx_sha256", "tensorrt", "compute_capability", "gpu", "profile")


@dataclass(frozen=True)
class GpuInfo:
    """The CUDA device an engine is built for.

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


# ---------------------------------------------------------------- pure: key, paths, sidecar, decision


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
    from vcorner.cache import user_cache_dir

    return user_cache_dir() / "engines"


def engine_dir(onnx: Path, cache_dir: Path | None = None) -> Path:
    """Where engines for ``onnx`` go: ``cache_dir``; else beside the model when that folder is writable and
    not inside the installed package (the shipped model); else the user cache."""
    if cache_dir is not None:
        return Path(cache_dir)
    folder = Path(onnx).resolve().parent
    package = Path(__file__).resolve().parents[1]
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


def resolve_engine(plan: Path, sidecar: Path, key: dict[str, Any], build: Callable[[], bytes],
                   deserialize: Callable[[bytes], Any]) -> tuple[Any, bool]:
    """Load the cached plan when its key matches, else build, store and load a new one.

    Args:
        plan, sidecar: the cache files (:func:`engine_paths`).
        key: :func:`engine_key` for this model, TensorRT and GPU.
        build: returns a serialized plan (called only when needed).
        deserialize: plan bytes -> engine, or None when TensorRT refuses the plan.

    Returns:
        (engine, built): ``built`` is True when a new plan was built.

    Raises:
        InputError: TensorRT cannot load even a freshly built plan.
    """
    reason = rebuild_reason(plan, sidecar, key)
    if reason is None:
        engine = deserialize(Path(plan).read_bytes())
        if engine is not None:
            log.info("using cached TensorRT engine %s", plan)
            return engine, False
        reason = "TensorRT could not deserialize it (built by another TensorRT or for another GPU?)"
    log.warning("building TensorRT engine %s (%s); this takes a while", Path(plan).name, reason)
    began = time.perf_counter()
    data = build()
    write_bytes_atomic(Path(plan), data)
    write_engine_sidecar(sidecar, engine_sidecar(key, hashlib.sha256(data).hexdigest(), time.perf_counter() - began))
    engine = deserialize(data)
    if engine is None:
        raise InputError(f"{plan}: TensorRT built the engine but cannot load it (see the TensorRT log above)")
    return engine, True


# ---------------------------------------------------------------- CUDA (cuda-python) and TensorRT


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
        InputError: cuda-python is not installed.
    """
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise InputError(f"the TensorRT backend needs cuda-python and a CUDA GPU: {INSTALL_HINT}") from None
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


def import_tensorrt():
    """The ``tensorrt`` module.

    Raises:
        InputError: TensorRT is not installed (one line, with the install hint).
    """
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise InputError(f"TensorRT is not installed here: {INSTALL_HINT} (on a machine with an NVIDIA GPU)") from None


@functools.lru_cache(maxsize=1)
def trt_logger():
    """One TensorRT logger for the process, forwarding to :mod:`logging` (``vcorner.export.tensorrt_build``)."""
    trt = import_tensorrt()
    severity = trt.ILogger.Severity
    levels = {severity.INTERNAL_ERROR: logging.CRITICAL, severity.ERROR: logging.ERROR,
              severity.WARNING: logging.WARNING, severity.INFO: logging.DEBUG, severity.VERBOSE: logging.DEBUG}

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, level, msg: str) -> None:
            log.log(levels.get(level, logging.DEBUG), "TensorRT: %s", msg)

    return Logger()


def network_flags(trt) -> int:
    """Creation flags for a strongly typed network (TensorRT 10 opt-in; always on, flag ignored, in 11)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def attach_timing_cache(config, path: Path | None):
    """Load ``path`` (or start empty) into the builder config and return the cache; a cache TensorRT
    rejects (corrupt, or from another device or version) is replaced by an empty one, with a warning."""
    data = Path(path).read_bytes() if path is not None and Path(path).is_file() else b""
    try:
        cache = config.create_timing_cache(data)
        accepted = cache is not None and config.set_timing_cache(cache, ignore_mismatch=False)
    except Exception:  # TensorRT raises on some corrupt caches
        accepted = False
    if not accepted:
        log.warning("%s: timing cache rejected by TensorRT, starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_engine(onnx_path: Path, profile: ExportProfile, timing_cache: Path | None = None) -> bytes:
    """Build a strongly typed TensorRT plan for ``onnx_path`` with one batch-axis optimization profile.

    Args:
        onnx_path: vcorner ONNX model, input ``patches`` (B, 1, N, N) float32.
        profile: batch min/opt/max (patches) and workspace (MiB).
        timing_cache: timing cache file, read if present and written back after the build.

    Returns:
        The serialized plan.

    Raises:
        InputError: TensorRT cannot parse the model or build it.
    """
    trt = import_tensorrt()
    logger = trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        first = str(parser.get_error(0)) if parser.num_errors else "unknown error"
        raise InputError(f"{onnx_path}: TensorRT cannot parse it ({first.splitlines()[0][:200]})")
    shape = tuple(network.get_input(0).shape)
    if network.get_input(0).name != INPUT_NAME or len(shape) != 4:
        raise InputError(f"{onnx_path}: expected input '{INPUT_NAME}' (B, 1, N, N), got {shape}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, profile.workspace_mb << 20)
    batch_profile = builder.create_optimization_profile()
    batch_profile.set_shape(INPUT_NAME, *[(b, *shape[1:]) for b in profile.batch])
    config.add_optimization_profile(batch_profile)
    cache = attach_timing_cache(config, timing_cache)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise InputError(f"{onnx_path}: TensorRT could not build an engine for profile [{profile.name}] (see log)")
    if timing_cache is not None:
        write_bytes_atomic(Path(timing_cache), bytes(cache.serialize()))
    return bytes(plan)


@dataclass
class LoadedEngine:
    """A deserialized engine with the runtime that owns it (keep both alive together)."""

    engine: Any
    runtime: Any
    plan: Path
    built: bool
    gpu: GpuInfo


def load_or_build_engine(onnx_path: Path, profile: ExportProfile, cache_dir: Path | None = None,
                         device: int = 0) -> LoadedEngine:
    """The engine for ``onnx_path`` on GPU ``device``: from the cache when its key matches, else rebuilt.

    Raises:
        InputError: TensorRT, cuda-python or a GPU missing; a model TensorRT cannot build.
    """
    trt = import_tensorrt()
    gpu = current_gpu(device)
    cuda_call(cudart().cudaSetDevice(device))
    key = engine_key(sha256_file(onnx_path), trt.__version__, gpu, profile)
    plan, sidecar = engine_paths(onnx_path, profile, gpu, cache_dir)
    plan.parent.mkdir(parents=True, exist_ok=True)
    runtime = trt.Runtime(trt_logger())
    timing = timing_cache_path(plan.parent, gpu, trt.__version__)

    def deserialize(data: bytes):
        try:
            return runtime.deserialize_cuda_engine(data)
        except Exception as err:  # some TensorRT versions raise instead of returning None
            log.warning("%s: TensorRT refused the plan (%s)", plan.name, str(err).splitlines()[0][:200])
            return None

    engine, built = resolve_engine(plan, sidecar, key, lambda: build_engine(onnx_path, profile, timing), deserialize)
    return LoadedEngine(engine, runtime, plan, built, gpu)


def engine_source(model: Path, profile: ExportProfile, cache_dir: Path | None = None) -> Path:
    """The ONNX file to build ``profile``'s engine from (:func:`vcorner.export.fp16.variant_for`)."""
    from vcorner.export.fp16 import variant_for

    return variant_for(model, profile.precision, engine_dir(model, cache_dir))
