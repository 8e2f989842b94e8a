"""TensorRT engines from vcorner ONNX models: built by ``vcorner export`` and the batch's cache step, never by a runner.

Engines are built *strongly typed* (precision comes from the ONNX graph: the mixed FP16 graph of
:mod:`vcorner.export.fp16` or the FP32 one), which works unchanged on TensorRT 10 (where strong typing is
the ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` opt-in) and TensorRT 11 (which removed
``BuilderFlag.FP16`` and types every network strongly). One optimization profile spans the batch axis
(:class:`~vcorner.models.profiles.ExportProfile` ``batch_min/opt/max``); a timing cache file per GPU
architecture and TensorRT version speeds up rebuilds.

:func:`ensure_engine` keeps the cache of :mod:`vcorner.models.engines` true: it rebuilds, with a logged reason,
on any key mismatch, on a corrupt plan, and on a plan TensorRT refuses to deserialize, instead of crashing.
``tensorrt`` and ``cuda-python`` (the ``gpu`` extra) are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vcorner.export.fp16 import fp16_variant
from vcorner.hardware.cuda import GpuInfo, cuda_call, cudart, current_gpu
from vcorner.hardware.tensorrt import import_tensorrt, trt_logger
from vcorner.io.atomic import write_bytes_atomic
from vcorner.io.records import InputError, MachineError
from vcorner.models.card import sha256_file
from vcorner.models.engines import (
    engine_dir,
    engine_key,
    engine_paths,
    engine_sidecar,
    rebuild_reason,
    timing_cache_path,
    write_engine_sidecar,
)
from vcorner.models.modelfile import INPUT_NAME
from vcorner.models.profiles import ExportProfile

log = logging.getLogger(__name__)


def resolve_engine(plan: Path, sidecar: Path, key: dict[str, Any], build: Callable[[], bytes],
                   deserialize: Callable[[bytes], Any]) -> bool:
    """Keep the cached plan when its key matches and TensorRT loads it, else build and store a new one.

    Args:
        plan, sidecar: the cache files (:func:`vcorner.models.engines.engine_paths`).
        key: :func:`vcorner.models.engines.engine_key` for this model, TensorRT and GPU.
        build: returns a serialized plan (called only when needed).
        deserialize: plan bytes -> engine, or None when TensorRT refuses the plan.

    Returns:
        True when a new plan was built.

    Raises:
        InputError: TensorRT cannot load even a freshly built plan.
    """
    reason = rebuild_reason(plan, sidecar, key)
    if reason is None:
        if deserialize(Path(plan).read_bytes()) is not None:
            log.info("using cached TensorRT engine %s", plan)
            return False
        reason = "TensorRT could not deserialize it (built by another TensorRT or for another GPU?)"
    log.warning("building TensorRT engine %s (%s); this takes a while", Path(plan).name, reason)
    began = time.perf_counter()
    data = build()
    write_bytes_atomic(Path(plan), data)
    write_engine_sidecar(sidecar, engine_sidecar(key, hashlib.sha256(data).hexdigest(), time.perf_counter() - began))
    if deserialize(data) is None:
        raise MachineError(f"{plan}: TensorRT built the engine but cannot load it (see the TensorRT log above)")
    return True


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
        raise MachineError(f"{onnx_path}: TensorRT could not build an engine for profile [{profile.name}] (see log)")
    if timing_cache is not None:
        write_bytes_atomic(Path(timing_cache), bytes(cache.serialize()))
    return bytes(plan)


@dataclass(frozen=True)
class EngineBuild:
    """The plan a model's engine is cached in, whether it was built just now, and the GPU it is for."""

    plan: Path
    built: bool
    gpu: GpuInfo


def ensure_engine(onnx_path: Path, profile: ExportProfile, cache_dir: Path | None = None,
                  device: int = 0) -> EngineBuild:
    """The plan of ``onnx_path``'s engine on GPU ``device``, built now when missing, stale or unloadable.

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

    built = resolve_engine(plan, sidecar, key, lambda: build_engine(onnx_path, profile, timing), deserialize)
    return EngineBuild(plan, built, gpu)


def engine_source(model: Path, profile: ExportProfile, cache_dir: Path | None = None) -> Path:
    """The ONNX file to build ``profile``'s engine from: ``model``, or its FP16 variant for an FP16 profile
    (found, else converted into the engine folder: :func:`vcorner.export.fp16.fp16_variant`)."""
    if profile.precision != "fp16":
        return Path(model)
    return fp16_variant(model, engine_dir(model, cache_dir))
