"""The centre detector's runner: ONNX Runtime on the detector's graph, sized by its card."""

from __future__ import annotations

from pathlib import Path

from vcorner.backends.ort.runner import OnnxRuntimeRunner
from vcorner.io.records import InputError
from vcorner.models.detector_card import DetectorCard
from vcorner.models.modelfile import is_checkpoint, read_detector_card


def open_detector(model: Path, device: str = "cpu", threads: int | None = 1) -> tuple[OnnxRuntimeRunner, DetectorCard]:
    """The (not yet entered) ONNX Runtime runner of a centre detector, and its verified card.

    ``threads`` defaults to 1: the detector runs inside the batch's loader thread, beside the corner model's
    inference, which has the cores.

    Raises:
        InputError: missing file, checksum mismatch, not a detector, or not an ONNX file.
    """
    card, digest = read_detector_card(model)
    if is_checkpoint(model):
        raise InputError(f"{model}: export the detector to ONNX first (vcorner export {model} --out detector.onnx)")
    size = card.input_side if card.input_shape[0] == card.input_shape[1] else card.input_shape
    return OnnxRuntimeRunner(Path(model), device, threads, patch_size=size, sha256=digest,
                             out_channels=len(card.names)), card
