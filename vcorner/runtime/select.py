"""Pick a backend for a model file: ``auto``, ``ort``, ``trt`` or ``torch``."""

from __future__ import annotations

import importlib.util
import logging
from enum import Enum
from pathlib import Path

from vcorner.card import ModelCard
from vcorner.io.records import InputError
from vcorner.modelfile import default_model_path, read_model_card
from vcorner.runtime.base import Runner

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".safetensors",)


class Backend(str, Enum):
    """Inference backends (``auto`` picks the best available for the model file)."""

    auto = "auto"
    ort = "ort"
    trt = "trt"
    torch = "torch"


def is_checkpoint(model: Path) -> bool:
    """A torch checkpoint (run folder or ``.safetensors``) rather than an ONNX/TensorRT file."""
    return model.is_dir() or model.suffix in CHECKPOINT_SUFFIXES


def tensorrt_available() -> bool:
    """Native TensorRT and cuda-python importable (a GPU is checked when the engine loads)."""
    from vcorner.export.tensorrt_build import has_cuda_python, has_module

    return has_module("tensorrt") and has_cuda_python()


def cuda_gpu_available() -> bool:
    """A CUDA GPU is visible through cuda-python (False when cuda-python or the driver is missing)."""
    from vcorner.export.tensorrt_build import cuda_device_count

    return cuda_device_count() > 0


def cuda_index(device: str | None) -> int:
    """CUDA ordinal of ``device`` (``None``, ``cuda`` -> 0; ``cuda:1``, ``1`` -> 1).

    Raises:
        InputError: anything else.
    """
    text = (device or "0").removeprefix("cuda").lstrip(":") or "0"
    if not text.isdigit():
        raise InputError(f"TensorRT runs on a CUDA device (cuda, cuda:N or N), got {device!r}")
    return int(text)


def check_device(device: str | None) -> None:
    """InputError unless ``device`` is None, ``cpu``, ``cuda[:N]``, ``tensorrt[:N]`` or a CUDA ordinal ``N``.

    Called before any work, so a mistyped device never converts or writes anything.
    """
    if device is None or device.isdigit():
        return
    kind, colon, index = device.partition(":")
    if kind not in ("cpu", "cuda", "tensorrt") or (colon and (kind == "cpu" or not index.isdigit())):
        raise InputError(f"--device must be cpu, cuda[:N], tensorrt[:N] or N, got {device!r}")


def resolve_backend(model: Path, backend: Backend, device: str | None = None) -> Backend:
    """The concrete backend for ``model`` when ``auto`` is asked.

    ``auto``: torch for a checkpoint; native TensorRT when ``tensorrt`` and ``cuda-python`` import, a CUDA
    GPU is visible and ``device`` is unset or a CUDA device; otherwise ONNX Runtime (``cpu`` and
    ``tensorrt[:N]`` are its devices; its best execution provider is picked later).
    """
    if backend != Backend.auto:
        return backend
    if is_checkpoint(model):
        return Backend.torch
    cuda_device = device is None or device.startswith("cuda") or device.isdigit()
    if cuda_device and tensorrt_available() and cuda_gpu_available():
        return Backend.trt
    return Backend.ort


def open_runner(model: Path | None, backend: Backend = Backend.auto, device: str | None = None,
                threads: int | None = None, profile: str | None = None) -> tuple[Runner, ModelCard]:
    """A (not yet entered) runner for ``model`` (default: the shipped model) and the model's card.

    ``profile`` names the export profile of a TensorRT engine (native, or ONNX Runtime's TensorRT EP; default
    ``gpu``) and the graph ONNX Runtime's GPU providers run; given with the torch backend on a CUDA device, it
    turns on that path's FP16 (for an FP16 profile) and CUDA graphs; without it torch stays the FP32 reference.

    Raises:
        InputError: unknown model file, failed checksum, or a backend that cannot run this model here.
    """
    check_device(device)
    model = Path(model) if model is not None else default_model_path()
    chosen = resolve_backend(model, backend, device)
    if chosen == Backend.torch:
        if not is_checkpoint(model):
            raise InputError(f"{model}: the torch backend runs a .safetensors checkpoint or run folder")
        if importlib.util.find_spec("torch") is None:
            raise InputError("the torch backend needs torch: pip install 'vcorner[train]'")
        import torch

        from vcorner.export.profiles import get_profile
        from vcorner.runtime.torch_runner import TorchRunner
        from vcorner.training.checkpoint import read_card

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        fast = profile is not None and device.startswith("cuda")  # else the FP32 eager reference
        half = fast and get_profile(profile).precision == "fp16"
        return TorchRunner(model, device, half=half, cuda_graphs=fast), read_card(model)
    if is_checkpoint(model):
        raise InputError(f"{model}: a checkpoint; export it first (vcorner export {model}) or use --backend torch")
    if chosen == Backend.trt:
        from vcorner.export.profiles import DEFAULT_PROFILE
        from vcorner.runtime.tensorrt_runner import TensorRTRunner, require_gpu_stack

        require_gpu_stack()
        card = read_model_card(model)
        return TensorRTRunner(model, profile or DEFAULT_PROFILE, device=cuda_index(device)), card
    from vcorner.runtime.onnxruntime_runner import OnnxRuntimeRunner, available_devices

    card = read_model_card(model)
    device = device or available_devices()[0]
    patch = card.sampling.patch_size
    if device == "cpu":
        return OnnxRuntimeRunner(int8_variant(model) if backend == Backend.auto else model, device, threads,
                                 patch_size=patch), card
    return OnnxRuntimeRunner(gpu_variant(model, profile), device, threads, profile, cpu_model=model,
                             patch_size=patch), card


def gpu_variant(model: Path, profile: str | None = None) -> Path:
    """The graph ONNX Runtime's GPU providers run: the mixed FP16 ``m.fp16.onnx`` for an FP16 export profile
    (the default ``gpu``; made now if missing and the converter is installed), else ``model``."""
    from vcorner.export.fp16 import variant_for
    from vcorner.export.profiles import DEFAULT_PROFILE, get_profile
    from vcorner.export.tensorrt_build import engine_dir

    return variant_for(model, get_profile(profile or DEFAULT_PROFILE).precision, engine_dir(model))


def this_machine(rows: list[dict]) -> list[dict]:
    """Benchmark rows recorded on a machine like this one (same CPU model and core count)."""
    import os

    from vcorner.benchmark.machine import cpu_info

    cpu = cpu_info()[0]
    return [r for r in rows if r.get("machine", {}).get("cpu") == cpu
            and r.get("machine", {}).get("cores") == os.cpu_count()]


def evidence_path(model: Path) -> Path:
    """Benchmark rows shipped beside a model (``m.benchmark.jsonl``): the evidence its INT8 variant won, recorded
    where the model was made; rows of a machine unlike this one are ignored like any others."""
    return Path(model).with_name(Path(model).name.removesuffix(".onnx") + ".benchmark.jsonl")


def int8_variant(model: Path, results: Path | None = None) -> Path:
    """``m.int8.onnx`` beside ``model`` when it exists and recorded benchmarks show that it wins, else ``model``.

    The evidence is ``vcorner benchmark``'s rows: first those shipped beside the model
    (:func:`evidence_path`), then the results file (``results``, default: the repository's
    ``benchmarks/results/benchmark.jsonl`` or the user cache's), whose later runs supersede them. Rows count
    only when keyed by both files' SHA-256 and recorded on a machine with this CPU model and core count.
    """
    from vcorner.card import sha256_file
    from vcorner.export.int8 import int8_path
    from vcorner.runtime.precision import int8_wins, read_rows

    candidate = int8_path(model)
    if not candidate.is_file():
        return model
    if results is None:
        from vcorner.benchmark import default_results_path

        results = default_results_path()
    rows = read_rows(evidence_path(model)) + read_rows(results)
    decision = int8_wins(this_machine(rows), sha256_file(model), int8_sha256=sha256_file(candidate))
    log.info("INT8 variant %s: %s", candidate.name, decision.reason)
    return candidate if decision.use_int8 else model
