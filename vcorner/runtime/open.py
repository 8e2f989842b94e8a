"""A runner for a :class:`~vcorner.models.resolve.ResolvedModel`: the one place backends are constructed."""

from __future__ import annotations

from pathlib import Path

from vcorner.io.records import InputError
from vcorner.models.detector_card import DetectorCard
from vcorner.models.modelfile import is_checkpoint, read_detector_card
from vcorner.models.resolve import Backend, ResolvedModel
from vcorner.runtime.base import Runner


def open_runner(resolved: ResolvedModel) -> Runner:
    """The (not yet entered) runner of ``resolved``.

    Raises:
        InputError: ``resolved`` still has graphs or engines to make (run the cache step,
            :func:`vcorner.export.materialize.materialize`, or ``vcorner export``).
    """
    if resolved.pending:
        raise InputError(f"{resolved.named}: {' and '.join(resolved.pending)} not made yet for {resolved.describe()}; "
                         "run vcorner export MODEL --fp16 --engine, or vcorner batch, whose cache step makes them")
    if resolved.backend == Backend.torch:
        from vcorner.runtime.torch_runner import TorchRunner

        return TorchRunner(resolved.graph, resolved.device, half=resolved.precision == "fp16",
                           cuda_graphs=resolved.cuda_graphs, sha256=resolved.sha256)
    if resolved.backend == Backend.trt:
        from vcorner.runtime.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(resolved.engine, resolved.cuda_index)
    from vcorner.runtime.onnxruntime_runner import OnnxRuntimeRunner

    return OnnxRuntimeRunner(resolved.graph, resolved.device, resolved.threads, resolved.profile,
                             cpu_model=resolved.cpu_graph, patch_size=resolved.card.sampling.patch_size,
                             sha256=resolved.graph_sha256)


def open_detector(model: Path, device: str = "cpu", threads: int | None = 1) -> tuple[Runner, DetectorCard]:
    """The (not yet entered) ONNX Runtime runner of a centre detector, and its verified card.

    ``threads`` defaults to 1: the detector runs inside the batch's loader thread, beside the corner model's
    inference, which has the cores.

    Raises:
        InputError: missing file, checksum mismatch, not a detector, or not an ONNX file.
    """
    from vcorner.runtime.onnxruntime_runner import OnnxRuntimeRunner

    card, digest = read_detector_card(model)
    if is_checkpoint(model):
        raise InputError(f"{model}: export the detector to ONNX first (vcorner export {model} --out detector.onnx)")
    size = card.input_side if card.input_shape[0] == card.input_shape[1] else card.input_shape
    return OnnxRuntimeRunner(Path(model), device, threads, patch_size=size, sha256=digest,
                             out_channels=len(card.names)), card
