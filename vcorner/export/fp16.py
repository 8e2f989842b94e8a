"""Mixed-precision FP16 ONNX for GPUs: FP16 convolutions, FP32 I/O, the spatial normalization kept in FP32.

TensorRT 11 has no ``BuilderFlag.FP16``: a strongly typed network takes every layer's precision from the
ONNX graph, so the graph itself must say which tensors are FP16 (docs/design.md section 3). This module writes
that graph from an FP32 vcorner model:

- the *body* (from the input up to the 1x1 head convolution's input, or up to its output when
  ``keep_head_fp32=False``) goes through onnxconverter-common's ``convert_float_to_float16`` with
  ``keep_io_types=True``: the FP32 input is cast to FP16 once, every Conv/ConvTranspose weight becomes FP16,
  and the body's output is cast back to FP32;
- the *tail* (the ``.float()`` Cast, ReduceMin, Sub, ReduceSum, Add, Div of the spatial normalization, and
  by default the 1x1 head convolution) is copied unchanged, all FP32: a sum over 64x64 values can overflow
  FP16's 65504, and its eps (1e-8) rounds to 0 in FP16 (smallest subnormal 6e-8).

Why not hand the whole graph to the converter with a block list: with onnxconverter-common 1.16, putting
``Cast`` on ``op_block_list`` makes it loop forever (each blocked Cast gets a new, again blocked, Cast), and
``node_block_list`` with the normalization nodes rounds every intermediate between them through FP16 and
leaves the graph output FP16 (both measured). Splitting first keeps the tail exactly as exported.

Needs ``onnx`` and ``onnxconverter-common`` (the ``train`` extra).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import warnings
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from vcorner.io.records import InputError
from vcorner.models.card import ModelCard, sha256_file
from vcorner.models.detector_card import DETECTOR_FORMAT, DetectorCard
from vcorner.models.modelfile import (
    CARD_METADATA_KEY,
    INPUT_NAME,
    OUTPUT_NAME,
    card_format,
    read_card_and_digest,
    write_sidecar,
)
from vcorner.models.variants import find_fp16, fp16_path, model_precision

log = logging.getLogger(__name__)

REDUCTIONS = ("ReduceMin", "ReduceMax", "ReduceSum", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
"""Reductions stay FP32 wherever they appear (the converter wraps them in Casts if one is in the body)."""
CONV_OPS = ("Conv", "ConvTranspose")
FLOAT, FLOAT16 = 1, 10
"""``onnx.TensorProto`` element types."""


def split_tensor(graph, keep_head_fp32: bool = True) -> str:
    """Name of the tensor where the FP16 body ends and the FP32 tail begins.

    Args:
        graph: an ``onnx.GraphProto`` in topological order.
        keep_head_fp32: split before the last convolution (the 1x1 head) rather than after it.

    Raises:
        InputError: the graph has no convolution.
    """
    convs = [n for n in graph.node if n.op_type in CONV_OPS]
    if not convs:
        raise InputError("not a vcorner UNet graph: no convolution to split the FP16 body from the FP32 tail")
    return convs[-1].input[0] if keep_head_fp32 else convs[-1].output[0]


def ancestors(graph, tensor: str) -> list[int]:
    """Indices (in graph order) of the nodes that ``tensor`` depends on, its producer included."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    needed, stack = set(), [tensor]
    while stack:
        index = producer.get(stack.pop())
        if index is not None and index not in needed:
            needed.add(index)
            stack.extend(graph.node[index].input)
    return sorted(needed)


def _used_initializers(graph, nodes: Iterable) -> list:
    used = {name for n in nodes for name in n.input}
    return [t for t in graph.initializer if t.name in used]


def _body_model(model, split: str):
    """A model computing only ``split`` (FP32 graph output) from the original inputs."""
    from onnx import helper

    graph = model.graph
    body_nodes = [graph.node[i] for i in ancestors(graph, split)]
    body = helper.make_graph(body_nodes, f"{graph.name}_body", list(graph.input),
                             [helper.make_tensor_value_info(split, FLOAT, None)],
                             initializer=_used_initializers(graph, body_nodes))
    return helper.make_model(body, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def convert_fp16_model(model, keep_head_fp32: bool = True):
    """In-memory conversion of an FP32 vcorner ``onnx.ModelProto`` (see the module docstring).

    Args:
        model: FP32 model; input ``patches`` (B, 1, N, N) float32, output ``maps`` (B, 1, N, N) float32.
        keep_head_fp32: also keep the final 1x1 convolution (one output channel) in FP32.

    Returns:
        A new ``onnx.ModelProto`` with the same inputs, outputs (FP32), metadata and opset.
    """
    import onnx
    from onnxconverter_common import float16

    graph = model.graph
    split = split_tensor(graph, keep_head_fp32)
    body = set(ancestors(graph, split))
    tail = [n for i, n in enumerate(graph.node) if i not in body]
    with warnings.catch_warnings():  # it warns for every weight it clamps to FP16's range; harmless here
        warnings.simplefilter("ignore", UserWarning)
        body16 = float16.convert_float_to_float16(
            _body_model(model, split), keep_io_types=True,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *REDUCTIONS],
        )
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:], out.graph.initializer[:], out.graph.value_info[:]
    out.graph.node.extend([*body16.graph.node, *tail])
    out.graph.initializer.extend([*body16.graph.initializer, *_used_initializers(graph, tail)])
    out = onnx.shape_inference.infer_shapes(out)
    onnx.checker.check_model(out)
    return out


def tensor_types(model) -> dict[str, int]:
    """Element type of every typed tensor (inputs, outputs, value_info, initializers, Constant outputs)."""
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output,
                                                             *model.graph.value_info]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def fp32_nodes(model) -> list[str]:
    """Names of the nodes whose float inputs and outputs are all FP32 (Casts and integer-only nodes excluded)."""
    types = tensor_types(model)
    names = []
    for node in model.graph.node:
        if node.op_type in ("Cast", "Constant"):
            continue
        kinds = {types.get(t) for t in [*node.input, *node.output] if t} & {FLOAT, FLOAT16}
        if kinds == {FLOAT}:
            names.append(node.name)
    return names


def convert_fp16(onnx_in: Path, onnx_out: Path | None = None, keep_head_fp32: bool = True) -> Path:
    """Write the mixed-precision FP16 copy of an FP32 vcorner ONNX model, with its model card.

    The card (ONNX metadata and the ``.json`` sidecar) gains ``training["quantization"] = {"precision":
    "fp16", ...}`` listing the nodes kept FP32 and the source model's SHA-256.

    Args:
        onnx_in: FP32 model with a card (sidecar or metadata).
        onnx_out: where to write (default: ``m.fp16.onnx`` beside ``m.onnx``).
        keep_head_fp32: also keep the final 1x1 convolution in FP32.

    Returns:
        The path written.

    Raises:
        InputError: unreadable model, a model that is already FP16, or no card.
    """
    import onnx

    onnx_in = Path(onnx_in)
    onnx_out = Path(onnx_out) if onnx_out is not None else fp16_path(onnx_in)
    card_type = DetectorCard if card_format(onnx_in) == DETECTOR_FORMAT else ModelCard  # the detector too
    card = read_card_and_digest(onnx_in, True, card_type)[0]
    try:
        model = onnx.load(str(onnx_in))
    except Exception as err:  # protobuf raises its own DecodeError
        raise InputError(f"{onnx_in}: not a readable ONNX model ({str(err).splitlines()[0][:200]})") from None
    if any(t.data_type == FLOAT16 for t in model.graph.initializer):
        raise InputError(f"{onnx_in}: already holds FP16 weights; convert the FP32 model")
    converted = convert_fp16_model(model, keep_head_fp32)
    from onnxconverter_common import __version__ as converter_version

    note = {"precision": "fp16", "format": "mixed", "io": "fp32", "keep_head_fp32": keep_head_fp32,
            "fp32_nodes": fp32_nodes(converted), "converter": f"onnxconverter-common {converter_version}",
            "source_sha256": sha256_file(onnx_in)}
    fp16_card = replace(card, training={**card.training, "quantization": note})
    set_card_metadata(converted, fp16_card)
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    tmp = onnx_out.with_name(f".{onnx_out.name}.tmp")
    onnx.save(converted, str(tmp))
    tmp.replace(onnx_out)
    write_sidecar(onnx_out, fp16_card)
    log.info("wrote %s (FP16 body, %d nodes kept FP32)", onnx_out, len(note["fp32_nodes"]))
    return onnx_out


def set_card_metadata(model, card: ModelCard) -> None:
    """Replace the model card in an in-memory ``onnx.ModelProto``'s metadata."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != CARD_METADATA_KEY]
    del model.metadata_props[:]
    for key, value in [*kept, (CARD_METADATA_KEY, json.dumps(card.to_dict()))]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def fp16_variant(model: Path, folder: Path) -> Path:
    """The FP16 graph of ``model``: found (:func:`vcorner.models.variants.find_fp16`), else converted into
    ``folder`` now when ``onnx`` and ``onnxconverter-common`` are installed, else the FP32 model, with a warning.

    Called by ``vcorner export`` and the batch's cache step (:func:`vcorner.backends.materialize`), never by a runner.
    """
    model = Path(model)
    if model_precision(model) == "fp16":
        return model
    found = find_fp16(model, sha256_file(model), folder)
    if found is not None:
        return found
    if not all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxconverter_common")):
        log.warning("no FP16 variant of %s (vcorner export RUN --fp16) and no FP16 converter here: using the FP32 "
                    "model", model)
        return model
    target = Path(folder) / fp16_path(model).name
    log.warning("converting %s to FP16: %s", model.name, target)
    return convert_fp16(model, target)


def fp16_map_difference(fp32_onnx: Path, fp16_onnx: Path, patches: np.ndarray) -> tuple[float, float]:
    """(max |FP16 - FP32|, that over the FP32 maps' peak) on ONNX Runtime's CPU provider.

    Args:
        fp32_onnx, fp16_onnx: the model and its FP16 variant.
        patches: (B, 1, N, N) float32; keep B small, FP16 graphs run slowly on some CPUs.
    """
    import onnxruntime as ort

    feed = {INPUT_NAME: np.ascontiguousarray(patches, dtype=np.float32)}
    maps = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run([OUTPUT_NAME], feed)[0]
            for p in (fp32_onnx, fp16_onnx)]
    absolute = float(np.max(np.abs(maps[1] - maps[0])))
    return absolute, absolute / max(float(np.max(np.abs(maps[0]))), 1e-30)
