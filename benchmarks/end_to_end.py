"""End-to-end ``vcorner batch`` images/s against the inference-only bound, on a fixed phantom set.

    python benchmarks/end_to_end.py [--model M] [--images 40] [--batch 256] [--seconds 5] [--threads N]

Runs the library (``vcorner.pipeline.batch.run_batch``: loader, inference and finisher threads) on ``--images``
phantoms written at a fixed seed. The bound is what the runner alone does at the same batch size: its
patches/s (timed before and after the run, averaged, since other jobs may share the machine) divided by the
patches per image. The ratio end-to-end / bound says how well decoding, patch cutting and back-projection hide
behind inference; the target is >= 0.85. Without --model: the shipped model, else a random ``lite`` model
(speed does not depend on the weights; decoding work barely does). Appends a JSON line to
benchmarks/results/end_to_end.jsonl.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from vcorner import benchmark as lib
from vcorner.models.modelfile import default_model_path, read_model_card
from vcorner.phantoms.dataset import synthesize_dataset
from vcorner.pipeline.batch import BatchOptions, run_batch
from vcorner.runtime.onnxruntime_runner import OnnxRuntimeRunner
from vcorner.stages.plan import Plan, make_plan
from vcorner.stages.prepare import prepare

SEED = 20250502
TARGET = 0.85
RESULTS = Path(__file__).parent / "results" / "end_to_end.jsonl"


def onnx_model(model: Path | None, scratch: Path) -> Path:
    """The ONNX file to run: ``model`` (a checkpoint is exported), the shipped model, or a random lite model."""
    if model is None and not default_model_path().is_file():
        return lib.random_model("lite", scratch / "lite.onnx")
    files = lib.model_files(model, scratch)
    if files.onnx is None:
        raise SystemExit(files.no_onnx_reason)
    return files.onnx


def measure(model: Path, data: Path, out: Path, batch: int, seconds: float, threads: int | None) -> dict:
    """End-to-end and inference-only rates of ``model`` on the phantoms in ``data``."""
    card = read_model_card(model)
    plan = make_plan(data, data / "centers.csv")
    sample = np.concatenate([prepare(item, card).patches for item in plan.images[:3]])
    options = BatchOptions(batch_size=batch, resume=False)
    with OnnxRuntimeRunner(model, "cpu", threads) as runner:
        run_batch(Plan(plan.images[:2], {}, []), out / "warm-up", runner, card, options)  # numba cache, ORT
        before = lib.speed(runner, sample, batch, seconds)["patches_per_s"]
        summary = run_batch(plan, out / "run", runner, card, options)
        after = lib.speed(runner, sample, batch, seconds)["patches_per_s"]
    bound = (before + after) / 2.0
    per_image = summary.patches / max(summary.done, 1)
    e2e = summary.patches / summary.seconds
    return {"benchmark": "end_to_end", "model": model.name, "images": len(plan.images), "done": summary.done,
            "failed": len(summary.failed), "batch": batch, "patches_per_image": round(per_image, 1),
            "end_to_end_images_per_s": round(summary.done / summary.seconds, 3),
            "end_to_end_patches_per_s": round(e2e, 1), "bound_patches_per_s": round(bound, 1),
            "bound_patches_per_s_before_after": [before, after],
            "bound_images_per_s": round(bound / per_image, 3), "ratio": round(e2e / bound, 3), "target": TARGET,
            "seconds": round(summary.seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="ONNX model or checkpoint (default: shipped, else random lite)")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=5.0, help="timing of the bound, before and after")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads (default: all cores)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vcorner-e2e-") as tmp:
        scratch = Path(tmp)
        model = onnx_model(args.model, scratch)
        synthesize_dataset(scratch / "data", args.images, args.seed)
        row = {**measure(model, scratch / "data", scratch, args.batch, args.seconds, args.threads),
               "seed": args.seed, **lib.stamp()}
    print(json.dumps(row))
    lib.append_jsonl(RESULTS, [row])


if __name__ == "__main__":
    main()
