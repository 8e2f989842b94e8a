"""One runner per (backend, precision) that can run here, or :class:`Skip` with the reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vcorner.benchmark.models import ModelFiles, int8_model
from vcorner.benchmark.settings import BenchmarkSettings, Skip
from vcorner.card import sha256_file
from vcorner.runtime.base import Runner


@dataclass
class Variant:
    """One open (backend, precision): its runner, device and file, maps, and seconds per batch by batch size."""

    ident: dict[str, Any]
    runner: Runner
    fields: dict[str, Any]
    maps: np.ndarray
    times: dict[int, list[float]] = field(default_factory=dict)
    error: str | None = None


def ort_runner(files: ModelFiles, precision: str, scratch: Path, settings: BenchmarkSettings) -> Runner:
    """An ONNX Runtime runner for ``precision``, or Skip."""
    if files.onnx is None:
        raise Skip(files.no_onnx_reason)
    from vcorner.runtime.onnxruntime_runner import OnnxRuntimeRunner, available_devices

    gpu = "cuda" if "cuda" in available_devices() else None
    if precision == "fp32":
        return OnnxRuntimeRunner(files.onnx, gpu or "cpu", settings.threads)
    if precision == "int8":
        return OnnxRuntimeRunner(int8_model(files, scratch, settings), "cpu", settings.threads)
    if gpu is None:
        raise Skip("FP16 needs a GPU and ONNX Runtime's GPU build (no usable CUDA execution provider here)")
    try:  # m.fp16.onnx beside the model, else converted into scratch (needs onnxconverter-common)
        from vcorner.export.fp16 import variant_for
    except ImportError as err:
        raise Skip(f"no FP16 export in this build ({err})") from None
    fp16 = variant_for(files.onnx, "fp16", scratch)
    if fp16 == files.onnx:
        raise Skip(f"no {files.onnx.stem}.fp16.onnx beside the model (vcorner export --fp16) and no converter here")
    return OnnxRuntimeRunner(fp16, gpu, settings.threads)


def torch_runner(files: ModelFiles, precision: str) -> Runner:
    """A torch eager runner for ``precision``, or Skip."""
    if precision == "int8":
        raise Skip("INT8 runs on ONNX Runtime only")
    if files.checkpoint is None:
        raise Skip("torch needs a .safetensors checkpoint; the model given is ONNX")
    import torch

    from vcorner.runtime.torch_runner import TorchRunner

    cuda = torch.cuda.is_available()
    if precision == "fp16" and not cuda:
        raise Skip("FP16 needs a CUDA GPU (none here)")
    # On a GPU: channels_last (the runner's CUDA default) and one CUDA graph per batch size.
    return TorchRunner(files.checkpoint, "cuda" if cuda else "cpu", half=precision == "fp16", cuda_graphs=cuda)


def trt_runner(files: ModelFiles, precision: str) -> Runner:
    """A native TensorRT runner (engine of the ``gpu`` or ``gpu-fp32`` export profile), or Skip."""
    if precision == "int8":
        raise Skip("INT8 runs on ONNX Runtime's CPU provider only")
    from vcorner.runtime.select import cuda_gpu_available, tensorrt_available

    if not tensorrt_available():
        raise Skip("TensorRT needs tensorrt and cuda-python (pip install 'vcorner[gpu]') and a GPU")
    if files.onnx is None or not cuda_gpu_available():
        raise Skip(files.no_onnx_reason or "TensorRT needs a GPU (none here)")
    try:
        from vcorner.runtime.tensorrt_runner import TensorRTRunner
    except ImportError as err:
        raise Skip(f"no TensorRT runner in this build ({err})") from None
    return TensorRTRunner(files.onnx, "gpu" if precision == "fp16" else "gpu-fp32")


def open_variant(files: ModelFiles, backend: str, precision: str, scratch: Path,
                 settings: BenchmarkSettings) -> Runner:
    """A not yet entered runner for (``backend``, ``precision``); raises Skip with the reason if impossible."""
    if backend == "trt":
        return trt_runner(files, precision)
    if backend == "torch":
        return torch_runner(files, precision)
    if backend == "ort":
        return ort_runner(files, precision, scratch, settings)
    raise Skip(f"unknown backend {backend!r}")


def variant_fields(runner: Runner) -> dict[str, Any]:
    """Device and the file a runner ran (name and SHA-256: the INT8 file ``--backend auto`` would use)."""
    path = getattr(runner, "model", None) or getattr(runner, "checkpoint", None)
    loaded = getattr(runner, "loaded", None)  # TensorRT: the engine plan is the file that ran
    path = loaded.plan if loaded is not None else path
    device = getattr(runner, "device", "cpu")
    fields = {"device": f"cuda:{device}" if isinstance(device, int) else str(device)}
    if isinstance(path, Path) and path.is_file():
        fields.update(variant=path.name, variant_sha256=sha256_file(path))
    return fields
