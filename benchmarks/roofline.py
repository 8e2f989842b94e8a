"""Roofline position of the UNet on this CPU: FLOPs per patch, achieved GFLOP/s with ONNX Runtime, and the
machine's measured float32 matrix-multiply peak.

    python benchmarks/roofline.py [--recipe lite] [--model M.onnx] [--batch 64] [--seconds 3] [--matmul 2048]

FLOPs are counted analytically from the ONNX graph: 2 x multiply-adds of every Conv and ConvTranspose, from
weight shapes and inferred tensor shapes (activations, pooling and the normalization are left out: under 1%).
Achieved GFLOP/s = FLOPs per patch x ONNX Runtime FP32 patches/s. The peak is numpy float32 matmul of two
``--matmul`` square matrices on all cores (its BLAS's threads), best of a few runs. Without --model, a random
``--recipe`` model is exported (speed does not depend on the weights). Appends a JSON line to
benchmarks/results/roofline.jsonl.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from vcorner import benchmark as lib
from vcorner.backends.ort.runner import OnnxRuntimeRunner

RESULTS = Path(__file__).parent / "results" / "roofline.jsonl"


def tensor_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Static dims of every tensor (the dynamic batch dim reads 1) after ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {}
    for info in [*inferred.input, *inferred.value_info, *inferred.output]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    return shapes


def conv_flops(path: Path) -> tuple[int, int]:
    """(FLOPs per patch of all Conv and ConvTranspose nodes, parameters) of an FP32 ONNX model."""
    model = onnx.load(str(path))
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    shapes = tensor_shapes(model)
    flops = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        w = weights[node.input[1]]
        if node.op_type == "Conv":  # w: (out, in / groups, kh, kw), applied at every output pixel
            out = shapes[node.output[0]]
            flops += 2 * out[1] * out[2] * out[3] * w[1] * w[2] * w[3]
        else:  # w: (in, out / groups, kh, kw): every input pixel scatters a kh x kw block
            inp = shapes[node.input[0]]
            flops += 2 * inp[1] * inp[2] * inp[3] * w[1] * w[2] * w[3]
    params = sum(int(np.prod(d)) for d in weights.values())
    return flops, params


def matmul_peak(n: int, seconds: float) -> float:
    """Best float32 GFLOP/s of numpy ``a @ b`` for n x n matrices over about ``seconds``."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    a @ b
    best, began = 0.0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        start = time.perf_counter()
        a @ b
        best = max(best, 2.0 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="lite", help="random model recipe when --model is not given")
    parser.add_argument("--model", type=Path, help="FP32 ONNX model")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--matmul", type=int, default=2048, help="matrix size of the peak measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vcorner-roofline-") as tmp:
        model = args.model or lib.random_model(args.recipe, Path(tmp) / f"{args.recipe}.onnx")
        flops, params = conv_flops(model)
        with OnnxRuntimeRunner(model) as runner:
            n = int(onnx.load(str(model)).graph.input[0].type.tensor_type.shape.dim[2].dim_value)
            patches = np.random.default_rng(0).standard_normal((args.batch, 1, n, n)).astype(np.float32)
            rate = lib.speed(runner, patches, args.batch, args.seconds)["patches_per_s"]
    peak = matmul_peak(args.matmul, args.seconds)
    achieved = flops * rate / 1e9
    row = {"benchmark": "roofline", "model": model.name, "onnx_parameters": params,
           "gflops_per_patch": round(flops / 1e9, 4), "batch": args.batch, "ort_fp32_patches_per_s": rate,
           "achieved_gflop_s": round(achieved, 1), "matmul_n": args.matmul, "matmul_peak_gflop_s": round(peak, 1),
           "fraction_of_peak": round(achieved / peak, 3), **lib.stamp()}
    print(json.dumps(row))
    lib.append_jsonl(RESULTS, [row])


if __name__ == "__main__":
    main()
