"""Rules and cache steps more than one backend uses: the CUDA ordinal of ``--device``, an ONNX model's card, the
graph of a GPU export profile and the step that converts it to FP16."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vcorner.backends.base import ResolvedModel, Step
from vcorner.export.fp16 import fp16_variant
from vcorner.io.records import InputError
from vcorner.models.card import ModelCard, sha256_file
from vcorner.models.engines import engine_dir
from vcorner.models.modelfile import is_checkpoint, read_card_and_digest
from vcorner.models.precision import Precision
from vcorner.models.variants import card_precision, find_fp16, fp16_path


def cuda_index(device: str | None) -> int:
    """CUDA ordinal of ``device`` (``None``, ``cuda`` -> 0; ``cuda:1``, ``1`` -> 1).

    Raises:
        InputError: anything else.
    """
    text = (device or "0").removeprefix("cuda").lstrip(":") or "0"
    if not text.isdigit():
        raise InputError(f"TensorRT runs on a CUDA device (cuda, cuda:N or N), got {device!r}")
    return int(text)


def wants_cuda(device: str | None) -> bool:
    """``--device`` unset, ``cuda[:N]`` or a bare ordinal: a CUDA device would do."""
    return device is None or device.startswith("cuda") or device.isdigit()


def onnx_model(model: Path) -> tuple[ModelCard, str]:
    """(card, SHA-256) of the ONNX model a graph backend runs.

    Raises:
        InputError: a checkpoint (it runs on torch, or exported), a missing file or a failed checksum.
    """
    if is_checkpoint(model):
        raise InputError(f"{model}: a checkpoint; export it first (vcorner export {model}) or use --backend torch")
    return read_card_and_digest(model)


def profile_graph(model: Path, card: ModelCard, sha: str,
                  wanted: Precision) -> tuple[Path, str | None, Precision, tuple[Step, ...]]:
    """(graph, its SHA-256 or None while still to make, precision, pending) of a GPU profile's ``wanted`` precision:
    the model itself, or its FP16 variant (found beside it or in the engine folder, else ``pending=(fp16,)``)."""
    precision = card_precision(card)
    if wanted != Precision.fp16 or precision == Precision.fp16:
        return model, sha, precision, ()
    found = find_fp16(model, sha, engine_dir(model))
    if found is None:
        return engine_dir(model) / fp16_path(model).name, None, Precision.fp16, (Step.fp16,)
    return found, sha256_file(found), Precision.fp16, ()


def done(resolved: ResolvedModel, step: Step) -> tuple[Step, ...]:
    """``resolved.pending`` without ``step``."""
    return tuple(p for p in resolved.pending if p != step)


def make_fp16(resolved: ResolvedModel) -> ResolvedModel:
    """The cache step :attr:`Step.fp16`: ``resolved`` running the FP16 graph converted into the engine folder.

    Without an FP16 converter the FP32 graph runs instead, with a warning (the precision says so).
    """
    graph = fp16_variant(resolved.named, engine_dir(resolved.named))
    precision = Precision.fp16 if graph != resolved.named else Precision.fp32
    reason = resolved.reason + ("" if precision == Precision.fp16 else "; no FP16 converter here: the FP32 graph")
    return replace(resolved, graph=graph, precision=precision, graph_sha256=sha256_file(graph), reason=reason,
                   pending=done(resolved, Step.fp16))
