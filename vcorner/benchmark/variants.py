"""One resolved model and runner per (backend, precision) that can run here, or :class:`Skip` with the reason."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vcorner.backends import Backend, ResolvedModel, materialize, open_runner, probe, resolve_model
from vcorner.benchmark.models import ModelFiles, int8_model
from vcorner.benchmark.settings import BenchmarkSettings, Skip
from vcorner.hardware.capabilities import Capabilities
from vcorner.hardware.cuda import torch_cuda_available
from vcorner.io.records import MachineError
from vcorner.models.card import sha256_file
from vcorner.models.precision import Precision
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


def ort_model(files: ModelFiles, precision: str, scratch: Path, settings: BenchmarkSettings,
              caps: Capabilities) -> ResolvedModel:
    """ONNX Runtime in ``precision``: FP32 on its GPU provider when usable (else the CPU), INT8 on the CPU, FP16
    on the GPU provider; or Skip."""
    if files.onnx is None:
        raise Skip(files.no_onnx_reason)
    if precision == "int8":
        base = resolve_model(files.onnx, Backend.ort, "cpu", settings.threads, caps=caps)
        int8 = int8_model(files, scratch, settings)
        return replace(base, graph=int8, graph_sha256=sha256_file(int8), precision=Precision.int8,
                       reason="vcorner benchmark: the INT8 variant")
    gpu = "cuda" if "cuda" in caps.devices(Backend.ort) else None
    if precision == "fp32":
        return resolve_model(files.onnx, Backend.ort, gpu or "cpu", settings.threads,
                             profile="gpu-fp32" if gpu else None, caps=caps)
    if gpu is None:
        raise Skip("FP16 needs a GPU and ONNX Runtime's GPU build (no usable CUDA execution provider here)")
    resolved = materialize(resolve_model(files.onnx, Backend.ort, gpu, settings.threads, profile="gpu", caps=caps))
    if resolved.precision != Precision.fp16:
        raise Skip(f"no {files.onnx.stem}.fp16.onnx beside the model (vcorner export --fp16) and no converter here")
    return resolved


def ov_model(files: ModelFiles, precision: str, scratch: Path, settings: BenchmarkSettings,
             caps: Capabilities) -> ResolvedModel:
    """OpenVINO on the CPU in ``precision`` (INT8 on the INT8 file ONNX Runtime's row times), with ONNX Runtime
    FP32's thread count so that rows compare like for like; or Skip."""
    if files.onnx is None:
        raise Skip(files.no_onnx_reason)
    if precision == "fp16":
        raise Skip("OpenVINO runs fp32, bf16 and int8 on the CPU")
    if not caps.devices(Backend.ov):
        raise Skip("OpenVINO is not installed (pip install 'vcorner[openvino]')")
    threads = settings.threads or resolve_model(files.onnx, Backend.ort, "cpu", caps=caps).threads
    try:
        resolved = resolve_model(files.onnx, Backend.ov, "cpu", threads, caps=caps,
                                 precision="fp32" if precision == "int8" else precision)
    except MachineError as err:
        raise Skip(str(err)) from None
    if precision != "int8":
        return resolved
    int8 = int8_model(files, scratch, settings)
    return replace(resolved, graph=int8, graph_sha256=sha256_file(int8), precision=Precision.int8,
                   reason="vcorner benchmark: OpenVINO on the INT8 variant")


def torch_model(files: ModelFiles, precision: str, caps: Capabilities) -> ResolvedModel:
    """torch eager in ``precision`` (on a GPU: channels_last and one CUDA graph per batch size), or Skip."""
    if precision == "int8":
        raise Skip("INT8 runs on ONNX Runtime only")
    if files.checkpoint is None:
        raise Skip("torch needs a .safetensors checkpoint; the model given is ONNX")
    cuda = torch_cuda_available()
    if precision == "fp16" and not cuda:
        raise Skip("FP16 needs a CUDA GPU (none here)")
    profile = ("gpu" if precision == "fp16" else "gpu-fp32") if cuda else None
    return resolve_model(files.checkpoint, Backend.torch, "cuda" if cuda else "cpu", profile=profile, caps=caps)


def trt_model(files: ModelFiles, precision: str, caps: Capabilities) -> ResolvedModel:
    """Native TensorRT: the engine of the ``gpu`` (FP16) or ``gpu-fp32`` export profile, built if needed; or Skip."""
    if precision == "int8":
        raise Skip("INT8 runs on ONNX Runtime's CPU provider only")
    if not caps.devices(Backend.trt):
        raise Skip("TensorRT needs tensorrt and cuda-python (pip install 'vcorner[gpu]') and a GPU")
    if files.onnx is None or not caps.gpus:
        raise Skip(files.no_onnx_reason or "TensorRT needs a GPU (none here)")
    return materialize(resolve_model(files.onnx, Backend.trt, "cuda:0",
                                     profile="gpu" if precision == "fp16" else "gpu-fp32", caps=caps))


def variant_model(files: ModelFiles, backend: str, precision: str, scratch: Path, settings: BenchmarkSettings,
                  caps: Capabilities) -> ResolvedModel:
    """The resolved model of (``backend``, ``precision``); raises Skip with the reason if impossible here."""
    if precision == "bf16" and backend != "ov":
        raise Skip("BF16 runs on OpenVINO only (--backend ov)")
    if backend == "trt":
        return trt_model(files, precision, caps)
    if backend == "torch":
        return torch_model(files, precision, caps)
    if backend == "ort":
        return ort_model(files, precision, scratch, settings, caps)
    if backend == "ov":
        return ov_model(files, precision, scratch, settings, caps)
    raise Skip(f"unknown backend {backend!r}")


def open_variant(files: ModelFiles, backend: str, precision: str, scratch: Path, settings: BenchmarkSettings,
                 caps: Capabilities | None = None) -> Runner:
    """A not yet entered runner for (``backend``, ``precision``) through :func:`vcorner.backends.open_runner`
    (the runner factory of every command); raises Skip with the reason if impossible here."""
    return open_runner(variant_model(files, backend, precision, scratch, settings, caps or probe()))


def variant_fields(runner: Runner) -> dict[str, Any]:
    """Device and the file a runner ran (name and SHA-256: the INT8 file ``--backend auto`` would use)."""
    path = getattr(runner, "model", None) or getattr(runner, "checkpoint", None)
    path = getattr(runner, "plan", None) or path  # TensorRT: the engine plan is the file that ran
    device = getattr(runner, "device", "cpu")
    fields = {"device": f"cuda:{device}" if isinstance(device, int) else str(device)}
    if isinstance(path, Path) and path.is_file():
        fields.update(variant=path.name, variant_sha256=sha256_file(path))
    return fields
