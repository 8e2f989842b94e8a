"""Automatic centres: detection scores, corners from detected against clicked centres, and the detector's cost.

    python benchmarks/detection.py [--images 60] [--seed 4242] [--detector D] [--model M]

On a fresh phantom test set (``--seed``, never used to train or tune the detector or the corner model) it runs,
as a user would, through the CLI:

1. ``vcorner detect DATA --out centers.csv`` and ``vcorner evaluate centers.csv annotations.json``: named-centre
   recall and precision within 3 mm, centre error, misnamed centres;
2. ``vcorner batch DATA --centers DATA/centers.csv`` (clicked) and ``vcorner batch DATA`` (detected), each
   timed, then Table 1 of both on the same images (``vcorner/evaluation/metrics.py``), with the corner model's
   FP32 and INT8 graphs (``--precision``);
3. the detection stage's own time per image (the view finder's search and the namer, each on the batch's one ONNX
   Runtime thread per loader, sequence decoding; image decoding excluded, the batch shares it with the patches)
   against the corner stage's time per image (the clicked batch's seconds per image).

Writes benchmarks/results/detection.json and .md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vcorner.benchmark.machine import machine_info
from vcorner.evaluation.detection import score_detections
from vcorner.evaluation.metrics import match, read_predictions, table1_row
from vcorner.geometry.patches import build_pyramid
from vcorner.io.annotations import read_annotations
from vcorner.io.centers import load_centers
from vcorner.io.images import read_image
from vcorner.models.modelfile import default_detector_path
from vcorner.pipeline.detection import open_detector_use, resolve_detector

RESULTS = Path(__file__).parent / "results"


def vcorner(*args: str) -> float:
    """Run the CLI; its wall time in seconds (exit codes 0 and 1 are results, 2 fails)."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vcorner", *map(str, args)], capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"vcorner {' '.join(map(str, args))} failed:\n{done.stderr}")
    return time.perf_counter() - began


def detector_ms(data: Path, detector: Path, repeats: int = 3) -> float:
    """Median time per image (ms) of the detection stage alone, as one batch loader runs it: the namer and its view
    finder (the view search included), one ONNX Runtime thread each, one film at a time; image decoding excluded."""
    choice = resolve_detector(detector, True)
    images = [build_pyramid(read_image(p).pixels) for p in sorted(data.glob("phantom_*"))]
    times = []
    with open_detector_use(choice, threads=1) as use:
        use(images[0], images[0][0].shape, "warm-up", None)
        for _ in range(repeats):
            for pyramid in images:
                began = time.perf_counter()
                use(pyramid, pyramid[0].shape, "timed", None)
                times.append(time.perf_counter() - began)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--detector", type=Path, default=None)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--precision", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"],
                        help="the corner model's CPU graph (int8 needs its m.int8.onnx)")
    args = parser.parse_args()
    detector = args.detector or default_detector_path()
    model = ["--model", args.model] if args.model else []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data = root / "test"
        vcorner("synth", data, "--images", args.images, "--seed", args.seed)
        truth = read_annotations(data / "annotations.json")
        vcorner("detect", data, "--out", root / "centers.csv", "--detector", detector)
        scores = score_detections(load_centers(root / "centers.csv").records, truth)
        seconds = {}
        for precision in args.precision:
            seconds[f"clicked {precision}"] = vcorner("batch", data, "--centers", data / "centers.csv", "--out",
                                                      root / f"clicked-{precision}", "--precision", precision, *model)
            seconds[f"detected {precision}"] = vcorner("batch", data, "--out", root / f"detected-{precision}",
                                                       "--detector", detector, "--precision", precision, *model)
        tables = {k: table1_row(match(read_predictions(root / k.replace(" ", "-") / "corners.csv"), truth))
                  for k in seconds}
        per_image = {k: 1000 * v / args.images for k, v in seconds.items()}
        cost = detector_ms(data, detector)
    result = {"machine": machine_info(), "date": time.strftime("%Y-%m-%d"), "images": args.images,
              "seed": args.seed, "detector": str(detector), "detection": scores.to_dict(),
              "table1": tables, "batch_seconds": seconds, "batch_ms_per_image": per_image,
              "detector_ms_per_image": cost,
              "detector_share_of_corner_stage": {p: cost / per_image[f"clicked {p}"] for p in args.precision},
              "images_per_s": {k: args.images / v for k, v in seconds.items()}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "detection.json").write_text(json.dumps(result, indent=1))
    lines = [f"# Automatic centres ({args.images} phantoms, seed {args.seed}, {result['date']})", "",
             f"Detection: recall {scores.recall:.1%}, precision {scores.precision:.1%} (right name within "
             f"{scores.radius:g} {scores.unit}), {scores.misnamed} misnamed, centre error median "
             f"{scores.error_median:.2f} / mean {scores.error_mean:.2f} {scores.unit}, {scores.images_without} "
             "image(s) without centres.", "",
             "| centres | P2P median | P2P mean | fit failure % | images/s (whole CLI run) |", "|---|---|---|---|---|"]
    for k, row in tables.items():
        lines.append(f"| {k} | {row['p2p_median']:.3f} | {row['p2p_mean']:.3f} | {row['fit_failure_pct']:.2f} | "
                     f"{result['images_per_s'][k]:.2f} |")
    lines += [""] + [f"Detection (view search and naming, one thread): {cost:.1f} ms per image against "
                     f"{per_image[f'clicked {p}']:.0f} ms per image for the "
                     f"clicked-centre batch ({p} corner model): {100 * cost / per_image[f'clicked {p}']:.1f}% of the "
                     "corner stage." for p in args.precision]
    (RESULTS / "detection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
