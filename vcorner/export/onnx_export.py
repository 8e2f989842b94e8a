"""Export a checkpoint to ONNX with a dynamic batch axis and its model card (metadata and sidecar)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from vcorner.models.card import ModelCard
from vcorner.models.detector_card import DetectorCard
from vcorner.models.modelfile import CARD_METADATA_KEY, INPUT_NAME, OUTPUT_NAME, write_sidecar
from vcorner.network.checkpoint import load_model
from vcorner.network.unet import UNet

log = logging.getLogger(__name__)

OPSET = 17
"""Pinned ONNX opset (ONNX Runtime >= 1.14, TensorRT 10/11)."""


def export_model(model: UNet, card: ModelCard | DetectorCard, out: Path, opset: int = OPSET) -> Path:
    """Write ``model`` as ONNX at ``out`` with ``card`` in its metadata and a ``.json`` sidecar.

    The graph takes ``patches`` (B, 1, N, N) float32 and returns ``maps`` (B, C, N, N) float32; B is dynamic.
    A corner model has C = 1 and N the patch side; a centre detector (:class:`DetectorCard`) has one map per
    vertebra name and takes whole images letterboxed into N x N, or h x w (its "patches" are whole views).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, columns = card.input_shape
    example = torch.zeros(2, model.in_channels, rows, columns)
    tmp = out.with_name(f".{out.name}.tmp")
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but gives the plainest graph
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model.eval().cpu(), (example,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            opset_version=opset, dynamo=False, do_constant_folding=True,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    graph = onnx.load(str(tmp))
    onnx.checker.check_model(graph)
    graph.doc_string = ("vcorner centre detector (UNet + spatial normalization per vertebra name)"
                        if isinstance(card, DetectorCard) else
                        "vcorner spatial probability regressor (UNet + spatial normalization)")
    entry = graph.metadata_props.add()
    entry.key, entry.value = CARD_METADATA_KEY, json.dumps(card.to_dict())
    onnx.save(graph, str(tmp))
    tmp.replace(out)
    write_sidecar(out, card)
    return out


def export_checkpoint(checkpoint: Path, out: Path, opset: int = OPSET, card_type: type = ModelCard) -> Path:
    """Load a checkpoint (a run folder or ``.safetensors``) and export it to ``out``."""
    model, card = load_model(checkpoint, card_type)
    return export_model(model, card, out, opset)


@torch.no_grad()
def max_abs_difference(model: UNet, onnx_path: Path, patches: np.ndarray) -> float:
    """Max |ONNX Runtime - torch eager| over the maps of ``patches`` (B, 1, N, N) float32."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ours = session.run([OUTPUT_NAME], {INPUT_NAME: patches.astype(np.float32)})[0]
    eager = model.eval()(torch.from_numpy(patches.astype(np.float32))).numpy()
    return float(np.max(np.abs(ours - eager)))
