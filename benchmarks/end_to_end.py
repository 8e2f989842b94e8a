"""End-to-end ``vcorner batch`` images/s against the inference-only bound and the work bound, on a fixed
phantom set.

    python benchmarks/end_to_end.py [--model M] [--images 40] [--batch 64] [--seconds 5] [--threads N]
                                    [--repeats 1] [--precision fp32 int8] [--sampling new old]
                                    [--variant ort:fp32 ort:int8 ov:fp32 ov:bf16 ov:int8]

Each (variant, sampling) is one row. A variant is a CPU backend and its precision, opened as ``vcorner batch
--backend B --precision P`` opens it (:func:`vcorner.backends.resolve_model`): ``ort:fp32`` runs the model,
``ort:int8`` its ``m.int8.onnx``, ``ov:fp32``/``ov:bf16`` the model on OpenVINO, ``ov:int8`` the INT8 file on
OpenVINO; ``--precision P`` means ``ort:P``. ``new`` is the
model's card, ``old`` the sampling and decoding its card recorded before ``vcorner tune --sampling``
(``training.before_tuning``). Each row carries Table 1 (P2P mean/median, fit failure) of that run on the
phantoms, so speed and accuracy come from the same corners.

Runs the library (``vcorner.pipeline.local.run_threads``: loader, inference and finisher threads, with the threads
``vcorner batch`` uses, :func:`vcorner.hardware.cpu.inference_threads`, unless ``--threads``) on ``--images``
phantoms written at a fixed seed, ``--repeats`` times over (the rate is over all of them). Two bounds:

- **inference-only**: what the backend alone does at the same batch size on every core (ONNX Runtime: the
  better of its threads spinning or sleeping): patches/s timed before and after the run, averaged, divided by
  the patches per image. Reaching it would need decoding, cutting and the corner search to cost nothing.
- **work**: the cores divided by what one image costs in core-seconds when each stage runs alone: inference on
  one thread, plus the CPU time of ``prepare`` (decode, pyramid, patches) and ``finish`` (back-projection,
  quadrant search) run one image at a time on the same images. No schedule of that work on these cores is
  faster.

Also recorded: the process's CPU time per image during the run (from ``getrusage``), which shows what threading
costs on top of the stages' own work. Without --model: the shipped model, else a random ``lite`` model (speed
does not depend on the weights; decoding work barely does). Appends a JSON line per row to
benchmarks/results/end_to_end.jsonl.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from vcorner import benchmark as lib
from vcorner.backends import open_runner, resolve_model
from vcorner.backends.openvino.rule import COST
from vcorner.backends.ort.runner import OnnxRuntimeRunner
from vcorner.config import DecodeConfig, SamplingConfig, from_dict
from vcorner.evaluation.metrics import match, read_predictions, table1_row
from vcorner.hardware.cpu import available_cores, inference_threads
from vcorner.io.annotations import read_annotations
from vcorner.models.card import ModelCard
from vcorner.models.modelfile import default_model_path, read_model_card
from vcorner.phantoms.dataset import synthesize_dataset
from vcorner.pipeline.local import run_threads
from vcorner.pipeline.run import BatchSettings
from vcorner.stages.plan import Plan, make_plan
from vcorner.stages.prepare import prepare

SEED = 20250502
TARGET = 0.95
"""Issue 17 (scope 3): the pipeline at >= 0.95 of its bound."""
RESULTS = Path(__file__).parent / "results" / "end_to_end.jsonl"
VARIANTS = ("ort:fp32", "ort:int8", "ov:fp32", "ov:bf16", "ov:int8")


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


def cpu_seconds() -> float:
    """User + system CPU time of this process so far, seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def variant_runner(model: Path, backend: str, precision: str, threads: int | None):
    """The (not yet entered) runner ``vcorner batch --backend backend --precision precision`` opens for ``model``
    (``threads``: its inference threads, None: the batch's share), and its resolution."""
    resolved = resolve_model(model, backend, "cpu", threads, precision=precision)
    return open_runner(resolved), resolved


def inference_alone(model: Path, backend: str, precision: str, sample: np.ndarray, batch: int,
                    seconds: float) -> float:
    """patches/s of the backend alone on every core; ONNX Runtime: the better of its threads spinning and
    sleeping between operators (either wins, by turns, on a shared VM)."""
    if backend != "ort":
        with variant_runner(model, backend, precision, available_cores())[0] as alone:
            return lib.speed(alone, sample, batch, seconds)["patches_per_s"]
    graph = variant_runner(model, backend, precision, 1)[1].graph
    rates = []
    for spin in (True, False):
        with OnnxRuntimeRunner(graph, "cpu", available_cores(), spin=spin) as alone:
            rates.append(lib.speed(alone, sample, batch, seconds / 2)["patches_per_s"])
    return max(rates)


def measure(model: Path, variant: tuple[str, str], card: ModelCard, data: Path, out: Path, batch: int,
            seconds: float, threads: int | None, repeats: int) -> dict:
    """End-to-end rate of ``model`` on the (backend, precision) ``variant`` with ``card`` on the phantoms in
    ``data``, and both bounds."""
    backend, precision = variant
    plan = make_plan(data, data / "centers.csv")
    sample = np.concatenate([prepare(item, card).patches for item in plan.images[:3]])
    options = BatchSettings(batch_size=batch, resume=False)
    cost = COST[precision] if backend == "ov" else precision  # the batch's share, as the backend's rule gives it
    threads = threads or inference_threads(cost, card.sampling.patches_per_vertebra)
    before = inference_alone(model, backend, precision, sample, batch, seconds)
    with variant_runner(model, backend, precision, 1)[0] as one:
        one_thread = lib.speed(one, sample, batch, seconds)["patches_per_s"]
    batch_runner, resolved = variant_runner(model, backend, precision, threads)
    with batch_runner as runner:
        run_threads(Plan(plan.images[:2], {}, []), out / "warm-up", runner, card, options)  # numba cache, ORT
        done = patches = 0
        wall, cpu = time.perf_counter(), cpu_seconds()
        for repeat in range(repeats):
            summary = run_threads(plan, out / f"run{repeat}", runner, card, options)
            done, patches = done + summary.done, patches + summary.patches
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    after = inference_alone(model, backend, precision, sample, batch, seconds)
    prepare_s, finish_s = lib.stage_seconds(plan.images, card)
    bound = (before + after) / 2.0
    per_image = patches / max(done, 1)
    e2e = done / wall
    work_s = per_image / one_thread + prepare_s + finish_s  # core-seconds per image, each stage alone
    work_bound = available_cores() / work_s
    return {"benchmark": "end_to_end", "model": resolved.graph.name, "backend": backend, "images": len(plan.images),
            "repeats": repeats,
            "done": done, "patches_per_vertebra": card.sampling.patches_per_vertebra, **table1(out / "run0", data),
            "failed": len(summary.failed), "batch": batch, "threads": threads, "cores": available_cores(),
            "patches_per_image": round(per_image, 1), "end_to_end_images_per_s": round(e2e, 3),
            "end_to_end_patches_per_s": round(patches / wall, 1), "bound_patches_per_s": round(bound, 1),
            "bound_patches_per_s_before_after": [before, after], "bound_images_per_s": round(bound / per_image, 3),
            "ratio": round(e2e * per_image / bound, 3), "target": TARGET,
            "stage_ms_per_image": {"inference_1_thread": round(1000 * per_image / one_thread, 2),
                                   "prepare": round(1000 * prepare_s, 2), "finish": round(1000 * finish_s, 2)},
            "work_bound_images_per_s": round(work_bound, 3), "work_ratio": round(e2e / work_bound, 3),
            "cpu_ms_per_image": round(1000 * cpu / max(done, 1), 2), "cores_busy": round(cpu / wall, 2),
            "seconds": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="ONNX model or checkpoint (default: shipped, else random lite)")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0, help="timing of the bound, before and after")
    parser.add_argument("--threads", type=int,
                        help="inference threads (default: vcorner batch's share for the variant)")
    parser.add_argument("--repeats", type=int, default=1, help="runs over the phantoms (the rate is over all)")
    parser.add_argument("--precision", nargs="+", choices=["fp32", "int8"], help="ONNX Runtime's: ort:P")
    parser.add_argument("--variant", nargs="+", choices=VARIANTS, help="backend:precision (default ort:fp32)")
    parser.add_argument("--sampling", nargs="+", default=["new"], choices=["new", "old"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vcorner-e2e-") as tmp:
        scratch = Path(tmp)
        model = onnx_model(args.model, scratch)
        synthesize_dataset(scratch / "data", args.images, args.seed)
        rows = []
        variants = [f"ort:{p}" for p in args.precision or []] + (args.variant or [])
        for backend, precision in (v.split(":") for v in variants or ["ort:fp32"]):
            for sampling in args.sampling:
                out = scratch / f"{backend}-{precision}-{sampling}"
                row = {**measure(model, (backend, precision), card_for(model, sampling), scratch / "data", out,
                                 args.batch, args.seconds, args.threads, args.repeats),
                       "precision": precision, "sampling": sampling, "seed": args.seed, **lib.stamp()}
                print(json.dumps(row), flush=True)
                rows.append(row)
    lib.append_jsonl(RESULTS, rows)


if __name__ == "__main__":
    main()
