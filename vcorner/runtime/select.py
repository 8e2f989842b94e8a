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
    return all(importlib.util.find_spec(m) is not None for m in ("tensorrt", "cuda"))


def resolve_backend(model: Path, backend: Backend) -> Backend:
    """The concrete backend for ``model`` when ``auto`` is asked."""
    if backend != Backend.auto:
        return backend
    if is_checkpoint(model):
        return Backend.torch
    return Backend.ort


def open_runner(model: Path | None, backend: Backend = Backend.auto, device: str | None = None,
                threads: int | None = None) -> tuple[Runner, ModelCard]:
    """A (not yet entered) runner for ``model`` (default: the shipped model) and the model's card.

    Raises:
        InputError: unknown model file, failed checksum, or a backend that cannot run this model here.
    """
    model = Path(model) if model is not None else default_model_path()
    chosen = resolve_backend(model, backend)
    if chosen == Backend.torch:
        if not is_checkpoint(model):
            raise InputError(f"{model}: the torch backend runs a .safetensors checkpoint or run folder")
        if importlib.util.find_spec("torch") is None:
            raise InputError("the torch backend needs torch: pip install 'vcorner[train]'")
        from vcorner.runtime.torch_runner import TorchRunner
        from vcorner.training.checkpoint import read_card

        return TorchRunner(model, device or "cpu"), read_card(model)
    if is_checkpoint(model):
        raise InputError(f"{model}: a checkpoint; export it first (vcorner export {model}) or use --backend torch")
    if chosen == Backend.trt:
        raise InputError("the TensorRT backend is not available in this build; use --backend ort")
    from vcorner.runtime.onnxruntime_runner import OnnxRuntimeRunner, available_devices

    card = read_model_card(model)
    return OnnxRuntimeRunner(model, device or available_devices()[0], threads), card
