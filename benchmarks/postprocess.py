"""Post-processing cost: numba back-projection against the per-patch ``cv2.warpAffine`` loop, and the whole
decode per image as a share of its inference time.

    python benchmarks/postprocess.py [--model M] [--images 6] [--repeats 5] [--batch 256] [--seconds 3]

Sizes are real: every vertebra of ``--images`` phantoms (fixed seed), its patches as the model's card cuts
them and its accumulator region as decoding sizes it. Back-projection is timed with numba on one thread (as
the batch pipeline's finisher runs it) and on all cores; ``finish`` (background removal, back-projection,
prior-weighted quadrant search, sub-pixel refinement) per image on one thread. The share is decode time per
image over inference time per image (patches per image / ONNX Runtime patches/s at ``--batch``); target
<= 10%. ``prepare`` (image decoding and patch cutting, the loader thread's work) is timed the same way: on a
machine whose cores inference already fills, both shares come off the end-to-end rate. Medians over
``--repeats``. Appends a JSON line to benchmarks/results/postprocess.jsonl.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np

from vcorner import benchmark as lib
from vcorner.backends.ort.runner import OnnxRuntimeRunner
from vcorner.geometry.patches import invert_affines
from vcorner.models.card import ModelCard
from vcorner.models.modelfile import default_model_path, read_model_card
from vcorner.postprocess.background import remove_background
from vcorner.postprocess.decode import vertebra_region
from vcorner.postprocess.kernels import backproject
from vcorner.postprocess.reference import backproject_cv2
from vcorner.stages.finish import finish
from vcorner.stages.plan import PlannedImage
from vcorner.stages.prepare import prepare

SEED = 20250503
TARGET_SHARE = 0.10
RESULTS = Path(__file__).parent / "results" / "postprocess.jsonl"


def median_seconds(work: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``work()`` over ``repeats`` calls, after one warm-up call."""
    work()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return float(np.median(times))


def vertebra_cases(jobs: list, card: ModelCard) -> list[tuple]:
    """Per vertebra: (cleaned maps, image-to-patch affines, patch-to-image affines, origin, shape)."""
    cases = []
    for job in jobs:
        cleaned = remove_background(job.maps[:, 0], card.decode.background_quantile)
        to_patch = invert_affines(job.affines)
        for index in range(len(job.frames)):
            origin, shape = vertebra_region(job.frames, index, card.decode.search_radius, job.shape)
            mine = job.owner == index
            cases.append((cleaned[mine], to_patch[mine], job.affines[mine], origin, shape))
    return cases


def backprojection(cases: list[tuple], repeats: int) -> dict:
    """Seconds per vertebra of the numba kernel (1 thread, all threads) and of the cv2 loop."""
    def numba_all() -> None:
        for maps, to_patch, _, origin, shape in cases:
            backproject(maps, to_patch, origin, shape)

    def cv2_all() -> None:
        for maps, _, affines, origin, shape in cases:
            backproject_cv2(maps, affines, origin, shape)

    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    one = median_seconds(numba_all, repeats)
    numba.set_num_threads(threads)
    every = median_seconds(numba_all, repeats)
    loop = median_seconds(cv2_all, repeats)
    maps, to_patch, affines, origin, shape = cases[0]
    diff = np.abs(backproject(maps, to_patch, origin, shape) - backproject_cv2(maps, affines, origin, shape)).max()
    n = len(cases)
    return {"vertebrae": n, "patches_per_vertebra": round(float(np.mean([len(c[0]) for c in cases])), 1),
            "region_pixels_mean": int(np.mean([c[4][0] * c[4][1] for c in cases])),
            "numba_1_thread_ms_per_vertebra": round(1e3 * one / n, 3),
            f"numba_{threads}_threads_ms_per_vertebra": round(1e3 * every / n, 3),
            "cv2_loop_ms_per_vertebra": round(1e3 * loop / n, 3), "speedup_1_thread": round(loop / one, 2),
            f"speedup_{threads}_threads": round(loop / every, 2), "max_abs_diff_first_vertebra": float(diff)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="ONNX model or checkpoint (default: shipped, else random lite)")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vcorner-post-") as tmp:
        scratch = Path(tmp)
        if args.model is None and not default_model_path().is_file():
            model = lib.random_model("lite", scratch / "lite.onnx")
        else:
            model = lib.model_files(args.model, scratch).onnx
        card, folder = read_model_card(model), scratch / "phantoms"
        phantoms = lib.phantom_set(folder, card, args.images, SEED)
        with OnnxRuntimeRunner(model) as runner:
            maps = runner.infer_all(phantoms.patches, args.batch)
            rate = lib.speed(runner, phantoms.patches, args.batch, args.seconds)["patches_per_s"]
        offset = 0
        for job in phantoms.jobs:
            job.maps, offset = maps[offset:offset + len(job.patches)], offset + len(job.patches)
        row = {"benchmark": "postprocess", "model": model.name, "images": args.images, "seed": SEED,
               **backprojection(vertebra_cases(phantoms.jobs, card), args.repeats)}
        numba.set_num_threads(1)  # as the pipeline's finisher thread
        count = len(phantoms.jobs)
        decode = median_seconds(lambda: [finish(job, card) for job in phantoms.jobs], args.repeats) / count
        load = median_seconds(lambda: [prepare(PlannedImage(r, folder / r.file), card) for r in phantoms.truth],
                              args.repeats) / count
    inference = len(phantoms.patches) / count / rate
    row.update(finish_ms_per_image_1_thread=round(1e3 * decode, 2), ort_patches_per_s=rate, batch=args.batch,
               inference_ms_per_image=round(1e3 * inference, 1), decode_share_of_inference=round(decode / inference, 4),
               target_share=TARGET_SHARE, prepare_ms_per_image=round(1e3 * load, 2),
               prepare_share_of_inference=round(load / inference, 4), **lib.stamp())
    print(json.dumps(row))
    lib.append_jsonl(RESULTS, [row])


if __name__ == "__main__":
    main()
