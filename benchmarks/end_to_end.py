"""End-to-end ``vcorner batch`` images/s against the inference-only bound, on a fixed phantom set.

    python benchmarks/end_to_end.py [--model M] [--images 40] [--batch 256] [--seconds 5] [--threads N]
                                    [--precision fp32 int8] [--sampling new old]

Each (precision, sampling) is one row: ``fp32`` runs the model, ``int8`` its ``m.int8.onnx``; ``new`` is the
model's card, ``old`` the sampling and decoding its card recorded before ``vcorner tune --sampling``
(``training.before_tuning``). Each row carries Table 1 (P2P mean/median, fit failure) of that run on the
phantoms, so speed and accuracy come from the same corners.

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
from dataclasses import replace
from pathlib import Path

import numpy as np

from vcorner import benchmark as lib
from vcorner.config import DecodeConfig, SamplingConfig, from_dict
from vcorner.evaluation.metrics import match, read_predictions, table1_row
from vcorner.io.annotations import read_annotations
from vcorner.models.card import ModelCard
from vcorner.models.modelfile import default_model_path, read_model_card
from vcorner.models.variants import int8_path
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


def card_for(model: Path, sampling: str) -> ModelCard:
    """``model``'s card (``new``), or with the sampling and decoding recorded before tuning (``old``)."""
    card = read_model_card(model)
    if sampling == "new":
        return card
    before = card.training.get("before_tuning")
    if before is None:
        raise SystemExit(f"{model}: its card records no sampling from before tuning (vcorner tune --sampling)")
    return replace(card, sampling=from_dict(SamplingConfig, before["sampling"]),
                   decode=from_dict(DecodeConfig, before["decode"]))


def table1(out: Path, data: Path) -> dict:
    """Table 1 columns of the run's ``corners.csv`` against the phantoms' annotations."""
    row = table1_row(match(read_predictions(out / "corners.csv"), read_annotations(data / "annotations.json")))
    return {k: round(row[k], 4) for k in ("p2p_mean", "p2p_median", "fit_failure_pct")} | {"unit": row["unit"]}


def measure(model: Path, card: ModelCard, data: Path, out: Path, batch: int, seconds: float,
            threads: int | None) -> dict:
    """End-to-end and inference-only rates of the graph ``model`` with ``card`` on the phantoms in ``data``."""
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
            "patches_per_vertebra": card.sampling.patches_per_vertebra, **table1(out / "run", data),
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
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "int8"])
    parser.add_argument("--sampling", nargs="+", default=["new"], choices=["new", "old"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vcorner-e2e-") as tmp:
        scratch = Path(tmp)
        model = onnx_model(args.model, scratch)
        synthesize_dataset(scratch / "data", args.images, args.seed)
        rows = []
        for precision in args.precision:
            graph = int8_path(model) if precision == "int8" else model
            for sampling in args.sampling:
                out = scratch / f"{precision}-{sampling}"
                row = {**measure(graph, card_for(model, sampling), scratch / "data", out, args.batch, args.seconds,
                                 args.threads),
                       "precision": precision, "sampling": sampling, "seed": args.seed, **lib.stamp()}
                print(json.dumps(row), flush=True)
                rows.append(row)
    lib.append_jsonl(RESULTS, rows)


if __name__ == "__main__":
    main()
