"""Inference throughput (patches/s): ONNX Runtime CPU against torch eager, same weights, same batches.

    python benchmarks/inference_throughput.py [--model runs/lite] [--batches 64 256] [--seconds 5]

Without --model, a randomly initialised model of --recipe is exported to a temporary ONNX file (speed does
not depend on the weights). Appends JSON lines to benchmarks/results/inference_throughput.jsonl.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vcorner.backends.ort.runner import OnnxRuntimeRunner
from vcorner.benchmark.machine import stamp
from vcorner.config import DecodeConfig, GroundTruthConfig, SamplingConfig
from vcorner.export.onnx_export import export_model
from vcorner.models.card import ModelCard
from vcorner.models.evidence import append_rows as append_jsonl
from vcorner.network.checkpoint import load_model
from vcorner.network.unet import create_model
from vcorner.postprocess.prior import CornerPrior


def rate(infer, batch: np.ndarray, seconds: float) -> float:
    """Patches per second of ``infer`` on ``batch`` after one warm-up call."""
    infer(batch)
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        infer(batch)
        done += len(batch)
    return done / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, help="checkpoint (run folder or .safetensors)")
    parser.add_argument("--recipe", default="lite")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.model:
        model, card = load_model(args.model)
    else:
        model = create_model(args.recipe).eval()
        prior = CornerPrior({"*": np.zeros((4, 2))}, {"*": np.tile(np.eye(2), (4, 1, 1))}, {"*": 1})
        card = ModelCard(model.constructor_args(), SamplingConfig(), GroundTruthConfig(), DecodeConfig(), prior, {})
    onnx_path = Path(tempfile.mkdtemp()) / "model.onnx"
    export_model(model, card, onnx_path)
    out = Path(__file__).parent / "results" / "inference_throughput.jsonl"
    out.parent.mkdir(exist_ok=True)
    with OnnxRuntimeRunner(onnx_path) as runner, torch.inference_mode():
        for b in args.batches:
            x = np.random.default_rng(0).standard_normal((b, 1, 64, 64)).astype(np.float32)
            ort_rate = rate(runner.infer, x, args.seconds)
            torch_rate = rate(lambda a: model(torch.from_numpy(a)).numpy(), x, args.seconds)
            row = {"recipe": args.model.name if args.model else args.recipe, "batch": b,
                   "ort_cpu_patches_per_s": round(ort_rate, 1), "torch_eager_patches_per_s": round(torch_rate, 1),
                   "ort_over_torch": round(ort_rate / torch_rate, 2), **stamp()}
            print(json.dumps(row))
            append_jsonl(out, [row])


if __name__ == "__main__":
    main()
