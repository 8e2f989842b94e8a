"""CPU INT8: ONNX Runtime static QDQ quantization calibrated on patches cut exactly as inference cuts them.

Weights are quantized per output channel, activations per tensor, both from MinMax (or percentile) ranges
collected on standardized phantom patches (:func:`vcorner.stages.prepare.prepare` on the images of an
annotated folder or a ``centers.csv``). The spatial normalization tail (Cast/ReduceMin/Sub/ReduceSum/Add/Div
after the last convolution) stays FP32, and so by default does the 1x1 head convolution that feeds it: an
8-bit head output leaves each map with at most 256 levels, most pixels exactly zero (88% on the lite model),
which did not move P2P but made the decoder's background quantile (``np.partition`` on ties) 10x slower.
Two choices make INT8 pay on ONNX Runtime 1.32's CPU provider (measured on a 2-core AVX-512 VNNI machine,
lite UNet, batch 64; see ``benchmarks/results/benchmark.jsonl``):

- ``u8s8`` (unsigned activations): every Conv, MaxPool and Concat fuses into integer kernels, where ``s8s8``
  leaves Concat, MaxPool and five convolutions in FP32 with quantize/dequantize pairs around them. On an
  otherwise idle machine s8s8 ran at 0.8x FP32 and u8s8 at 1.9x, with the same maps.
- the 2x2 stride-2 transposed convolutions, which the CPU provider only runs in FP32 (a fifth of the u8s8
  run time with the layout transposes around them), are rewritten as 1x1 Conv + DepthToSpace, an exact
  identity in FP32, so they run in INT8 too: 2% more when idle, 8% under load.

The result is ``m.int8.onnx`` with its own model card sidecar (precision and calibration recorded under
``card.training["quantization"]``).

Needs ``onnx`` (the ``train`` extra); ONNX Runtime's quantization tools ship with ``onnxruntime``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from vcorner.export.fp16 import set_card_metadata
from vcorner.io.annotations import read_annotations
from vcorner.io.paths import safe_path
from vcorner.io.records import InputError
from vcorner.models.card import ModelCard, sha256_file
from vcorner.models.modelfile import INPUT_NAME, read_model_card, write_sidecar
from vcorner.stages.plan import PlannedImage, make_plan
from vcorner.stages.prepare import prepare

log = logging.getLogger(__name__)

SCHEMES = {"s8s8": ("QInt8", "QInt8"), "u8s8": ("QUInt8", "QInt8")}
"""Activation and weight types per scheme name."""
CALIBRATION_METHODS = ("minmax", "percentile")
TAIL_OPS = frozenset({"Cast", "ReduceMin", "Sub", "ReduceSum", "Add", "Div", "Constant", "Identity"})


def calibration_plan(calib: Path) -> list[PlannedImage]:
    """The images of an annotated folder (``annotations.json``), a folder with ``centers.csv``, or a CSV file.

    Raises:
        InputError: nothing usable at ``calib``.
    """
    calib = Path(calib)
    if calib.is_file() and calib.suffix.lower() == ".csv":
        return make_plan(calib.parent, calib).images
    if (calib / "annotations.json").is_file():

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


def calibration_name(calib: Path) -> str:
    """``folder`` or ``folder/centers.csv``: how the card names the calibration data (no absolute path)."""
    return f"{calib.parent.name}/{calib.name}" if calib.suffix.lower() == ".csv" else calib.name


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


def _attributes(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def upsampling_as_conv(model):
    """Rewrite each non-overlapping ConvTranspose (kernel = stride, no padding or groups) as a 1x1 Conv to
    ``s * s`` times the channels followed by DepthToSpace (CRD): the same function, but one that ONNX Runtime
    runs in integer arithmetic (it has no integer ConvTranspose on the CPU). Returns the number rewritten.

    Args:
        model: an ``onnx.ModelProto``, changed in place.
    """
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    nodes, rewritten = [], 0
    for node in graph.node:
        a = _attributes(node)
        kernel = a.get("kernel_shape", [0])
        if (node.op_type != "ConvTranspose" or node.input[1] not in weights or len(set(kernel)) != 1
                or list(a.get("strides", [])) != list(kernel) or any(a.get("pads", [0])) or a.get("group", 1) != 1
                or any(d != 1 for d in a.get("dilations", [1])) or "output_shape" in a
                or any(a.get("output_padding", [0]))):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weights[node.input[1]])  # (in, out, s, s)
        size, cout = kernel[0], w.shape[1]
        bias = (numpy_helper.to_array(weights[node.input[2]]) if len(node.input) > 2 and node.input[2]
                else np.zeros(cout, w.dtype))
        names = [f"{node.name}/as_conv/{k}" for k in ("weight", "bias", "output")]
        graph.initializer.extend([
            numpy_helper.from_array(np.ascontiguousarray(w.transpose(1, 2, 3, 0).reshape(-1, w.shape[0], 1, 1)),
                                    names[0]),
            numpy_helper.from_array(np.repeat(bias, size * size).astype(w.dtype), names[1])])
        nodes += [onnx.helper.make_node("Conv", [node.input[0], *names[:2]], [names[2]], f"{node.name}/as_conv",
                                        kernel_shape=[1, 1]),
                  onnx.helper.make_node("DepthToSpace", [names[2]], list(node.output), f"{node.name}/depth_to_space",
                                        blocksize=size, mode="CRD")]
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def _no_preprocess_advice(record: logging.LogRecord) -> bool:
    """Drop ONNX Runtime's "consider pre-processing" warnings (``preprocess`` measured no gain here)."""
    return "pre-process" not in record.getMessage()


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[io.StringIO]:
    """Silence ONNX Runtime's quantizer: its progress prints (collected in the yielded buffer) and its advice."""
    chatter, root = io.StringIO(), logging.getLogger()
    root.addFilter(_no_preprocess_advice)
    try:
        with contextlib.redirect_stdout(chatter):
            yield chatter
    finally:
        root.removeFilter(_no_preprocess_advice)


def run_quantizer(source: Path, out: Path, patches: np.ndarray, scheme: str, method: str,
                  excluded: list[str]) -> None:
    """ONNX Runtime's ``quantize_static``: QDQ, per-channel weights, ranges calibrated on ``patches``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = batches(patches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    activations, weights = (getattr(QuantType, t) for t in SCHEMES[scheme])
    calibration = CalibrationMethod.Percentile if method == "percentile" else CalibrationMethod.MinMax
    options = {"CalibPercentile": 99.999} if method == "percentile" else {}
    with _quiet_quantizer() as chatter:
        quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=activations, weight_type=weights, nodes_to_exclude=excluded,
                        calibrate_method=calibration,
                        extra_options={**options, "ActivationSymmetric": False, "WeightSymmetric": True})
    log.debug("quantize_static: %s", chatter.getvalue().strip())


def quantize_int8(
    onnx_in: Path, onnx_out: Path, calib_dir: Path, n_patches: int = 512, *, scheme: str = "u8s8",
    method: str = "minmax", keep_head_fp32: bool = True, rewrite_upsampling: bool = True, preprocess: bool = False,
    seed: int = 0,
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
        rewrite_upsampling: run the transposed convolutions as 1x1 Conv + DepthToSpace
            (:func:`upsampling_as_conv`), so that they too run in INT8.
        preprocess: run ``quant_pre_process`` (shape inference and graph optimization) first.
        seed: picks the calibration patches.

    Returns:
        ``onnx_out``.

    Raises:
        InputError: unreadable model or calibration data, unknown scheme or method.
    """
    import onnx

    if scheme not in SCHEMES or method not in CALIBRATION_METHODS:
        raise InputError(f"scheme must be one of {sorted(SCHEMES)} and method one of {CALIBRATION_METHODS}")
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    card = read_model_card(onnx_in)
    patches = calibration_patches(calib_dir, card, n_patches, seed)
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        source, graph = Path(scratch) / "fp32.onnx", onnx.load(str(onnx_in))
        rewritten = upsampling_as_conv(graph) if rewrite_upsampling else 0
        onnx.save(graph, str(source))
        if preprocess:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(source), str(Path(scratch) / "pre.onnx"), skip_symbolic_shape=True)
            source = Path(scratch) / "pre.onnx"
        excluded = tail_nodes(onnx.load(str(source)).graph, keep_head_fp32)
        tmp = onnx_out.with_name(f".{onnx_out.name}.tmp")
        run_quantizer(source, tmp, patches, scheme, method, excluded)
    note = {"precision": "int8", "format": "QDQ", "scheme": scheme, "per_channel": True, "method": method,
            "calibration_patches": int(len(patches)), "calibration_data": calibration_name(Path(calib_dir)),
            "upsampling_as_conv": rewritten, "fp32_excluded_nodes": excluded, "source_sha256": sha256_file(onnx_in)}
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
    set_card_metadata(graph, card)
    onnx.save(graph, str(path))
