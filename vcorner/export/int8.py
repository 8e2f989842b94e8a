"""CPU INT8: ONNX Runtime static QDQ quantization calibrated on patches cut exactly as inference cuts them.

Weights are quantized per output channel, activations per tensor, both from MinMax (or percentile) ranges
collected on standardized phantom patches (:func:`vcorner.pipeline.stages.prepare` on the images of an
annotated folder or a ``centers.csv``). The spatial normalization tail (Cast/ReduceMin/Sub/ReduceSum/Add/Div
after the last convolution) stays FP32; the 1x1 head convolution can stay FP32 too (``keep_head_fp32``), which
measured no better on the lite model (P2P change within 0.0002 mm either way). ``u8s8`` (unsigned
activations) is the default: with ONNX Runtime 1.32 on AVX-512 VNNI it fuses every Conv, MaxPool and Concat
into integer kernels, where ``s8s8`` leaves Concat, MaxPool and the convolutions after them in FP32, and it
gave the same maps. The result is ``m.int8.onnx`` with its own model card sidecar (precision and calibration
recorded under ``card.training["quantization"]``).

Needs ``onnx`` (the ``train`` extra); ONNX Runtime's quantization tools ship with ``onnxruntime``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from vcorner.card import ModelCard, sha256_file
from vcorner.io.records import InputError
from vcorner.modelfile import CARD_METADATA_KEY, INPUT_NAME, read_model_card, write_sidecar
from vcorner.pipeline.plan import PlannedImage, make_plan, safe_path
from vcorner.pipeline.stages import prepare

log = logging.getLogger(__name__)

SCHEMES = {"s8s8": ("QInt8", "QInt8"), "u8s8": ("QUInt8", "QInt8")}
"""Activation and weight types per scheme name."""
CALIBRATION_METHODS = ("minmax", "percentile")
TAIL_OPS = frozenset({"Cast", "ReduceMin", "Sub", "ReduceSum", "Add", "Div", "Constant", "Identity"})


def int8_path(model: Path) -> Path:
    """Where the INT8 variant of ``m.onnx`` lives: ``m.int8.onnx``."""
    model = Path(model)
    return model.with_name(f"{model.stem}.int8.onnx")


def calibration_plan(calib: Path) -> list[PlannedImage]:
    """The images of an annotated folder (``annotations.json``), a folder with ``centers.csv``, or a CSV file.

    Raises:
        InputError: nothing usable at ``calib``.
    """
    calib = Path(calib)
    if calib.is_file() and calib.suffix.lower() == ".csv":
        return make_plan(calib.parent, calib).images
    if (calib / "annotations.json").is_file():
        from vcorner.io.annotations import read_annotations

        records = read_annotations(calib / "annotations.json")
        return [PlannedImage(r, safe_path(calib, r.file)) for r in records]
    if (calib / "centers.csv").is_file():
        return make_plan(calib, calib / "centers.csv").images
    raise InputError(f"{calib}: calibration data must be a folder with annotations.json or centers.csv, or a CSV")


def calibration_patches(calib: Path, card: ModelCard, n_patches: int = 512, seed: int = 0) -> np.ndarray:
    """(K, 1, N, N) float32 standardized patches, K <= ``n_patches``, spread evenly over the images.

    Each image contributes a seeded random subset of its patches (the poses of ``card``); images that fail
    to load are skipped with a warning.

    Raises:
        InputError: no image of ``calib`` could be used.
    """
    items = calibration_plan(calib)
    if not items or n_patches < 1:
        raise InputError(f"{calib}: no calibration images (or n_patches < 1)")
    rng = np.random.default_rng(seed)
    per_image = max(1, -(-n_patches // len(items)))
    chosen: list[np.ndarray] = []
    for item in items:
        try:
            patches = prepare(item, card).patches
        except InputError as err:
            log.warning("calibration: skipping %s (%s)", item.record.file, err)
            continue
        pick = rng.choice(len(patches), size=min(per_image, len(patches)), replace=False)
        chosen.append(patches[np.sort(pick)])
        if sum(len(c) for c in chosen) >= n_patches:
            break
    if not chosen:
        raise InputError(f"{calib}: none of its images could be cut into patches")
    return np.concatenate(chosen)[:n_patches]


def batches(patches: np.ndarray, size: int = 32) -> Iterator[dict[str, np.ndarray]]:
    """ONNX Runtime input feeds of at most ``size`` patches."""
    for start in range(0, len(patches), size):
        yield {INPUT_NAME: np.ascontiguousarray(patches[start:start + size], dtype=np.float32)}


def tail_nodes(graph, keep_head_fp32: bool = True) -> list[str]:
    """Names of the nodes after the last convolution (the spatial normalization), plus that convolution.

    Args:
        graph: an ``onnx.GraphProto`` in topological order.
        keep_head_fp32: also list the last Conv/ConvTranspose node (the 1x1 head).
    """
    convs = [i for i, n in enumerate(graph.node) if n.op_type in ("Conv", "ConvTranspose")]
    if not convs:
        return []
    tail = [n for n in graph.node[convs[-1] + 1:]]
    unexpected = sorted({n.op_type for n in tail} - TAIL_OPS)
    if unexpected:
        log.warning("unexpected ops after the last convolution (kept FP32): %s", ", ".join(unexpected))
    head = [graph.node[convs[-1]].name] if keep_head_fp32 else []
    return head + [n.name for n in tail]


def quantize_int8(
    onnx_in: Path, onnx_out: Path, calib_dir: Path, n_patches: int = 512, *, scheme: str = "u8s8",
    method: str = "minmax", keep_head_fp32: bool = False, preprocess: bool = False, seed: int = 0,
) -> Path:
    """Write a static QDQ INT8 copy of an FP32 vcorner ONNX model, with its model card.

    Args:
        onnx_in: FP32 model (``.onnx`` with a card in its sidecar or metadata).
        onnx_out: where to write the INT8 model (its ``.json`` sidecar goes beside it).
        calib_dir: annotated folder, folder with ``centers.csv``, or a ``centers.csv`` (images relative to it).
        n_patches: calibration patches, spread over the images.
        scheme: ``u8s8`` (unsigned activations, signed per-channel weights) or ``s8s8`` (both signed).
        method: activation ranges from ``minmax`` or the 99.999th ``percentile``.
        keep_head_fp32: leave the final 1x1 convolution FP32 as well as the normalization.
        preprocess: run ``quant_pre_process`` (shape inference and graph optimization) first.
        seed: picks the calibration patches.

    Returns:
        ``onnx_out``.

    Raises:
        InputError: unreadable model or calibration data, unknown scheme or method.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    if scheme not in SCHEMES or method not in CALIBRATION_METHODS:
        raise InputError(f"scheme must be one of {sorted(SCHEMES)} and method one of {CALIBRATION_METHODS}")
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    card = read_model_card(onnx_in)
    patches = calibration_patches(calib_dir, card, n_patches, seed)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = batches(patches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    activations, weights = (getattr(QuantType, t) for t in SCHEMES[scheme])
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        source = onnx_in
        if preprocess:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            source = Path(scratch) / "pre.onnx"
            quant_pre_process(str(onnx_in), str(source), skip_symbolic_shape=True)
        excluded = tail_nodes(onnx.load(str(source)).graph, keep_head_fp32)
        options = {"CalibPercentile": 99.999} if method == "percentile" else {}
        tmp = onnx_out.with_name(f".{onnx_out.name}.tmp")
        quantize_static(
            str(source), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=activations, weight_type=weights, nodes_to_exclude=excluded,
            calibrate_method=CalibrationMethod.Percentile if method == "percentile" else CalibrationMethod.MinMax,
            extra_options={**options, "ActivationSymmetric": False, "WeightSymmetric": True},
        )
    note = {"precision": "int8", "format": "QDQ", "scheme": scheme, "per_channel": True, "method": method,
            "calibration_patches": int(len(patches)), "calibration_data": Path(calib_dir).name,
            "fp32_excluded_nodes": excluded, "source_sha256": sha256_file(onnx_in)}
    int8_card = replace(card, training={**card.training, "quantization": note})
    _set_card_metadata(tmp, int8_card)
    tmp.replace(onnx_out)
    write_sidecar(onnx_out, int8_card)
    log.info("wrote %s (%s, %d calibration patches)", onnx_out, scheme, len(patches))
    return onnx_out


def _set_card_metadata(path: Path, card: ModelCard) -> None:
    """Replace the model card in an ONNX file's metadata (in place)."""
    import onnx

    graph = onnx.load(str(path))
    kept = [(p.key, p.value) for p in graph.metadata_props if p.key != CARD_METADATA_KEY]
    del graph.metadata_props[:]
    for key, value in [*kept, (CARD_METADATA_KEY, json.dumps(card.to_dict()))]:
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))


def quantized_nodes(graph) -> Sequence[str]:
    """Names of nodes whose inputs come through DequantizeLinear (i.e. run on quantized data)."""
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in graph.node
            if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and dequantized & set(n.input)]
