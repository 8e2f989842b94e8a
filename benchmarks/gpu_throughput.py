"""GPU throughput: patches/s per batch size and precision, and achieved TFLOP/s against the card's peak.

    python benchmarks/gpu_throughput.py [--model runs/lite | --recipe lite] [--batches 64 256 1024]
        [--seconds 3] [--peak-tflops 989] [--peak-tflops-fp32 67] [--compile] [--trt-fp32] [--out FILE]

Variants, measured side by side in one run on the same weights and patches:
  torch eager FP32 (the reference), torch CUDA FP16 with channels_last and one CUDA graph per batch size
  (``--compile`` adds torch.compile FP16), TensorRT FP16 (strongly typed engine of the mixed-precision ONNX;
  ``--trt-fp32`` adds the FP32 engine) when ``tensorrt`` and ``cuda-python`` are installed.
Each point times ``runner.infer`` on a numpy batch, so host-to-device and device-to-host copies are included
(what ``vcorner batch`` sees), after warm-up calls (which also capture the CUDA graphs).

FLOPs per patch are 2 x the multiply-adds of every Conv2d and ConvTranspose2d, counted from each layer's
weight shape and output size (forward hooks on one patch); batch norm (folded at export), ReLU, pooling and
the normalization add well under 1%. Achieved TFLOP/s = FLOPs per patch x patches/s; ``--peak-tflops``
(dense FP16 tensor-core peak of the card, from its datasheet) and ``--peak-tflops-fp32`` give the fraction.

Without a CUDA GPU the GPU variants are skipped with a message and torch eager FP32 runs on the CPU at the
batches up to 64, so the script still runs end to end; those CPU rows are recorded only with --out. Appends
JSON lines (with machine, library versions and date) to benchmarks/results/gpu_throughput.jsonl unless --out
says otherwise.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vcorner import benchmark as lib
from vcorner.backends.torch.runner import TorchRunner
from vcorner.export.fp16 import convert_fp16
from vcorner.export.onnx_export import export_model
from vcorner.models.modelfile import resolve_checkpoint
from vcorner.models.profiles import ExportProfile
from vcorner.network.checkpoint import load_model, save_model
from vcorner.runtime.base import Runner

RESULTS = Path(__file__).parent / "results" / "gpu_throughput.jsonl"
CPU_MAX_BATCH = 64


def conv_flops_per_patch(model: nn.Module, patch_size: int) -> int:
    """2 x multiply-adds of all Conv2d / ConvTranspose2d layers for one (1, C, N, N) patch."""
    total = 0

    def count(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = layer.kernel_size
        per_output = layer.in_channels // layer.groups * kh * kw
        if isinstance(layer, nn.ConvTranspose2d):  # each input pixel feeds kh*kw outputs per output channel
            total += 2 * inputs[0].shape[-2] * inputs[0].shape[-1] * layer.in_channels * layer.out_channels * kh * kw
        else:
            total += 2 * output.shape[-3] * output.shape[-2] * output.shape[-1] * per_output

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, model.in_channels, patch_size, patch_size))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def time_runner(runner: Runner, batch: np.ndarray, seconds: float, warmup: int = 3) -> dict:
    """Patches/s and batch latency of ``runner.infer(batch)`` after ``warmup`` calls."""
    for _ in range(warmup):
        runner.infer(batch)
    times, began = [], time.perf_counter()
    while time.perf_counter() - began < seconds or len(times) < 3:
        start = time.perf_counter()
        runner.infer(batch)
        times.append(time.perf_counter() - start)
    return {"patches_per_s": round(len(batch) * len(times) / sum(times), 1),
            "ms_per_batch_p50": round(1e3 * float(np.median(times)), 3), "batches_timed": len(times)}


def variants(args, checkpoint: Path, onnx: Path, scratch: Path, cuda: bool) -> list[tuple[str, str, str, object]]:
    """(backend, precision, detail, runner factory) for each variant that can run here; prints skips."""
    device = "cuda" if cuda else "cpu"
    found = [("torch", "fp32", f"eager {device}", lambda: TorchRunner(checkpoint, device))]
    if not cuda:
        print("skip: torch CUDA FP16 and TensorRT need a CUDA GPU (none visible to torch)")
        return found
    found.append(("torch", "fp16", "channels_last + CUDA graphs",
                  lambda: TorchRunner(checkpoint, "cuda", half=True, cuda_graphs=True)))
    if args.compile:
        found.append(("torch", "fp16", "channels_last + torch.compile",
                      lambda: TorchRunner(checkpoint, "cuda", half=True, compile=True)))
    from vcorner.hardware.tensorrt import tensorrt_installed

    if not tensorrt_installed():
        print("skip: TensorRT FP16 needs tensorrt and cuda-python: pip install 'vcorner[gpu]'")
        return found
    from vcorner.backends.trt.runner import TensorRTRunner
    from vcorner.export.tensorrt_build import engine_source, ensure_engine

    def engine(profile: ExportProfile) -> TensorRTRunner:
        """The profile's engine, built (the cache step) before its runner opens."""
        source = engine_source(onnx, profile, scratch / "engines")
        return TensorRTRunner(ensure_engine(source, profile, scratch / "engines").plan)

    top = max(args.batches)
    for precision in ("fp16", "fp32") if args.trt_fp32 else ("fp16",):
        profile = ExportProfile(f"bench-{precision}", precision, 1, top, top, args.workspace_mb)
        found.append(("trt", precision, f"strongly typed engine, batch 1..{top}",
                      lambda p=profile: engine(p)))
    return found


def prepare_model(args, scratch: Path) -> tuple[Path, Path, nn.Module, int]:
    """(checkpoint, FP32 ONNX with its FP16 sibling, model, patch size) from --model or a random --recipe."""
    if args.model:
        checkpoint = resolve_checkpoint(args.model)
        model, card = load_model(checkpoint)
    else:
        onnx_random = lib.random_model(args.recipe, scratch / "random.onnx")
        from vcorner.models.modelfile import read_model_card
        from vcorner.network.unet import create_model

        card = read_model_card(onnx_random)
        torch.manual_seed(0)
        model = create_model(args.recipe).eval()
        checkpoint = scratch / "model.safetensors"
        save_model(checkpoint, model, card)
    onnx = export_model(model, card, scratch / "model.onnx")
    convert_fp16(onnx)
    return checkpoint, onnx, model, card.sampling.patch_size


def measure(runner: Runner, x: np.ndarray, reference: dict[int, np.ndarray], flops: int, args) -> dict:
    """One row: speed of ``runner`` on batch ``x``, achieved TFLOP/s, and its map delta to the reference."""
    maps = runner.infer(x)
    ref = reference.setdefault(len(x), maps)  # the first variant, torch eager FP32, is the reference
    row = {"batch": len(x), "gflop_per_patch": round(flops / 1e9, 4), **time_runner(runner, x, args.seconds),
           "max_map_delta_vs_fp32_eager_over_peak": float(np.abs(maps - ref).max() / ref.max())}
    row["achieved_tflops"] = round(row["patches_per_s"] * flops / 1e12, 3)
    return row


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="checkpoint (run folder or .safetensors); default: random --recipe")
    parser.add_argument("--recipe", default="lite")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per point")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense FP16 tensor-core peak, TFLOP/s")
    parser.add_argument("--peak-tflops-fp32", type=float, help="the card's FP32 (or TF32) peak, TFLOP/s")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile FP16")
    parser.add_argument("--trt-fp32", action="store_true", help="also time the TensorRT FP32 engine")
    parser.add_argument("--workspace-mb", type=int, default=4096, help="TensorRT builder workspace")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cuda = torch.cuda.is_available()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        checkpoint, onnx, model, n = prepare_model(args, scratch)
        flops = conv_flops_per_patch(model, n)
        print(f"{flops / 1e9:.3f} GFLOP per {n}x{n} patch (convolutions)")
        batches = args.batches if cuda else [b for b in args.batches if b <= CPU_MAX_BATCH] or [min(args.batches)]
        reference: dict[int, np.ndarray] = {}
        for backend, precision, detail, make in variants(args, checkpoint, onnx, scratch, cuda):
            peak = args.peak_tflops if precision == "fp16" else args.peak_tflops_fp32
            with make() as runner:
                for b in batches:
                    x = np.random.default_rng(b).standard_normal((b, 1, n, n)).astype(np.float32)
                    row = measure(runner, x, reference, flops, args)
                    row.update(backend=backend, precision=precision, detail=detail, runner=runner.name,
                               device="cuda" if cuda else "cpu", peak_tflops=peak,
                               fraction_of_peak=round(row["achieved_tflops"] / peak, 4) if peak else None,
                               model=str(args.model) if args.model else f"random {args.recipe}")
                    rows.append({**row, **lib.stamp()})
                    shown = ("runner", "batch", "patches_per_s", "achieved_tflops", "fraction_of_peak",
                             "max_map_delta_vs_fp32_eager_over_peak")
                    print(json.dumps({k: row[k] for k in shown}))
    if not cuda and args.out == RESULTS:
        print(f"no CUDA GPU: the CPU rows are not added to {RESULTS.name} (pass --out FILE to keep them)")
        return
    lib.append_jsonl(args.out, rows)
    print(f"appended {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
