"""Can the centre detector tell a film's true orientation and polarity from its own confidences? (issue #33,
groundwork for choosing among candidate views.)

For every film of a phantom set, runs the detector on candidate views (as is, mirrored, upside down, turned 180
degrees, inverted, mirrored and inverted, turned +-35 degrees) and records each view's mean and lowest name
confidence and whether the names run down the view. A detector that can choose among views needs the film as is
to win, by a margin, over every view that is not a rotation it was trained to read. Writes
``benchmarks/results/orientation_views.{jsonl,md}``.

    python benchmarks/orientation_views.py [--data DIR | --images 100 --seed 4242]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

from vcorner.backends import open_detector
from vcorner.geometry.patches import build_pyramid
from vcorner.io.images import is_image_path, read_image
from vcorner.models.modelfile import default_detector_path
from vcorner.phantoms.dataset import synthesize_dataset
from vcorner.stages.detect import run_detector

RESULTS = Path(__file__).parent / "results"
WRONG = ("mirror", "upside_down", "turned_180", "inverted", "mirror_inverted")
"""Views that put the anatomy where the detector was never trained to see it (rotations of +-35 degrees are
within reach of its rotation augmentation, so a confident answer there is still right once mapped back)."""


def candidate_views(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """(H, W) film -> the views to compare, each (H', W') float32 in [0, 1]."""
    h, w = pixels.shape
    views = {"as_is": pixels, "mirror": pixels[:, ::-1], "upside_down": pixels[::-1, :],
             "turned_180": pixels[::-1, ::-1], "inverted": 1.0 - pixels, "mirror_inverted": 1.0 - pixels[:, ::-1]}
    for angle in (-35, 35):
        turn = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
        views[f"turned_{angle}"] = cv2.warpAffine(pixels, turn, (w, h), borderValue=float(pixels.min()))
    return {name: np.ascontiguousarray(view, dtype=np.float32) for name, view in views.items()}


def view_scores(runner, card, pixels: np.ndarray) -> dict[str, dict]:
    """Per view: mean and lowest confidence of the detector's names, and whether they run down the view."""
    scores = {}
    for name, view in candidate_views(pixels).items():
        found = run_detector(build_pyramid(view), view.shape, card, runner.infer)
        confidence = np.array([d.confidence for d in found])
        ys = np.array([d.xy[1] for d in found])
        scores[name] = {"mean": float(confidence.mean()), "lowest": float(confidence.min()),
                        "ordered": bool(np.all(np.diff(ys) > 0))}
    return scores


def summary(rows: list[dict]) -> str:
    """A markdown table: how often the film as is beats every wrong view, by each score."""
    lines = ["| score | films where 'as is' beats every wrong view | median margin | films within 0.05 |",
             "|---|---|---|---|"]
    for key in ("mean", "lowest"):
        margins = np.array([r["views"]["as_is"][key] - max(r["views"][v][key] for v in WRONG) for r in rows])
        lines.append(f"| {key} confidence | {np.mean(margins > 0):.0%} of {len(rows)} | {np.median(margins):+.3f} | "
                     f"{np.mean(np.abs(margins) < 0.05):.0%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="A folder of films (default: fresh phantoms).")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=4242)
    args = parser.parse_args()
    data = args.data
    if data is None:
        data = Path(tempfile.mkdtemp(prefix="vcorner-views-"))
        synthesize_dataset(data, args.images, seed=args.seed, workers=2)
    films = sorted(p for p in data.iterdir() if is_image_path(p))
    runner, card = open_detector(default_detector_path())
    rows = []
    with runner:
        for path in films:
            rows.append({"film": path.name, "views": view_scores(runner, card, read_image(path).pixels)})
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "orientation_views.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    table = summary(rows)
    (RESULTS / "orientation_views.md").write_text(f"Detector: {default_detector_path().name}, {len(rows)} films of "
                                                  f"{data}\n\n{table}", encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
