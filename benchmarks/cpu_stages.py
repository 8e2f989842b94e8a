"""Images/s of ``vcorner batch``'s CPU stages when inference is free: the ceiling beside a fast GPU.

    python benchmarks/cpu_stages.py [--images 40] [--batch 256] [--workers 1 2] [--repeats 2]

With a GPU engine doing tens of thousands of patches/s, decoding images, cutting patches, back-projecting
maps and searching quadrants decide the end-to-end rate. This runs ``run_batch`` on fixed phantoms with a
*replay* runner: one recording run stores the shipped model's maps batch by batch (ONNX Runtime, CPU), then
each timed run gets those same maps back in the same order at no cost, so only the CPU stages are timed, with
``--workers`` threads (``vcorner batch --workers``; its default beside GPU inference is every core). The
corners of every replayed run are checked to equal the recorded run's. Appends JSON lines to
benchmarks/results/cpu_stages.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from vcorner import benchmark as lib
from vcorner.backends.ort.runner import OnnxRuntimeRunner
from vcorner.models.modelfile import default_model_path, read_model_card
from vcorner.phantoms.dataset import synthesize_dataset
from vcorner.pipeline.local import run_threads
from vcorner.pipeline.run import BatchSettings
from vcorner.runtime.base import Runner
from vcorner.stages.plan import make_plan

SEED = 20250503
RESULTS = Path(__file__).parent / "results" / "cpu_stages.jsonl"


class Recorder(Runner):
    """Wraps a runner and keeps every batch of maps it returns, in call order."""

    def __init__(self, inner: Runner) -> None:
        self.inner, self.maps = inner, []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        maps = self.inner.infer(batch)
        self.maps.append(maps)
        return maps


class Replay(Runner):
    """Returns recorded maps in order, as a GPU runner would (``on_gpu``: the CPU stages get every core)."""

    on_gpu = True

    def __init__(self, maps: list[np.ndarray]) -> None:
        self.maps, self.calls = maps, 0

    def infer(self, batch: np.ndarray) -> np.ndarray:
        maps = self.maps[self.calls]
        if maps.shape != batch.shape:
            raise RuntimeError("replayed batches out of step with the recording")
        self.calls += 1
        return maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per worker count (best is kept)")
    args = parser.parse_args()
    model = default_model_path()
    card = read_model_card(model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vcorner-cpu-stages-") as tmp:
        scratch = Path(tmp)
        synthesize_dataset(scratch / "data", args.images, SEED)
        plan = make_plan(scratch / "data", scratch / "data" / "centers.csv")
        with OnnxRuntimeRunner(model, "cpu") as ort:
            recorder = Recorder(ort)
            recorded = run_threads(plan, scratch / "recorded", recorder, card,
                                   BatchSettings(batch_size=args.batch, resume=False, workers=1))
        reference = (scratch / "recorded" / "corners.csv").read_text()
        for workers in args.workers * args.repeats:
            out = scratch / f"w{workers}"
            summary = run_threads(plan, out, Replay(recorder.maps), card,
                                  BatchSettings(batch_size=args.batch, resume=False, workers=workers))
            same = (out / "corners.csv").read_text() == reference
            rows.append({"benchmark": "cpu_stages", "model": model.name, "images": len(plan.images),
                         "done": summary.done, "workers": workers, "batch": args.batch,
                         "images_per_s": round(summary.done / summary.seconds, 2),
                         "patches_per_s": round(summary.patches / summary.seconds, 1),
                         "recorded_end_to_end_images_per_s": round(recorded.done / recorded.seconds, 2),
                         "corners_identical_to_recorded": same, "seed": SEED, **lib.stamp()})
            print(json.dumps({k: rows[-1][k] for k in ("workers", "images_per_s", "patches_per_s",
                                                       "corners_identical_to_recorded")}))
    best = {w: max(r["images_per_s"] for r in rows if r["workers"] == w) for w in args.workers}
    for row in rows:
        row["speedup_over_1_worker"] = round(row["images_per_s"] / best[1], 3) if 1 in best else None
    lib.append_jsonl(RESULTS, rows)
    print(f"best images/s by workers: {best}; appended {len(rows)} rows to {RESULTS}")


if __name__ == "__main__":
    main()
