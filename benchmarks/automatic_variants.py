"""The automatic path on films users have (issue #33's "before" table): a phantom set as rendered, mirrored
(patient facing left), upside down, turned by +-35 degrees, inverted (bone dark) and cropped to C5-C7, each run
through ``vcorner batch`` without centres and scored against its transformed annotations.

Per variant: named-centre recall (the right name within 3 mm), misnamed centres, films answered with no flag
("no vertebrae found" and left-out vertebrae are flags; a misnamed centre in an answered film is not), and mean
corner P2P of the vertebrae found under their right name. Corner labels follow the frame's convention: a mirror
or an upside-down film swaps left and right (README.md, "Data formats"). Writes
``benchmarks/results/automatic_variants.md``.

    python benchmarks/automatic_variants.py --data DIR [--variants as_is mirror upside_down ...]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from vcorner.io.annotations import read_annotations, write_annotations
from vcorner.io.images import read_image
from vcorner.io.records import ImageRecord, Vertebra

RESULTS = Path(__file__).parent / "results"
SWAP = [1, 0, 3, 2]
"""superior_left <-> superior_right, inferior_left <-> inferior_right: a reflection flips the frame's sides."""


def _affine(name: str, shape: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int], bool]:
    """(2, 3) image -> variant affine, the variant's (H, W), and whether it is a reflection."""
    h, w = shape
    if name == "mirror":
        return np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]]), shape, True
    if name == "upside_down":
        return np.array([[1.0, 0.0, 0.0], [0.0, -1.0, h - 1.0]]), shape, True
    if name.startswith("turned_"):
        return cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), float(name.split("_")[1]), 1.0), shape, False
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), shape, False


def transformed(record: ImageRecord, affine: np.ndarray, reflect: bool, keep: Callable[[str], bool]) -> ImageRecord:
    """The record's centres and corners through ``affine`` (corner labels swapped for a reflection)."""
    def move(points: np.ndarray) -> np.ndarray:
        return np.asarray(points) @ affine[:, :2].T + affine[:, 2]

    vertebrae = tuple(Vertebra(v.name, move(v.center), move(v.corners)[SWAP] if reflect else move(v.corners))
                      for v in record.vertebrae if keep(v.name))
    return ImageRecord(record.file, vertebrae, record.pixel_spacing_mm)


def _everyone(name: str) -> bool:
    return True


def _lower_three(name: str) -> bool:
    return name in ("C5", "C6", "C7")


def write_variant(data: Path, out: Path, name: str) -> None:
    """The films of ``data`` as variant ``name`` in ``out`` (8-bit PNG) with their annotations."""
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for record in read_annotations(data / "annotations.json"):
        pixels = read_image(data / record.file).pixels
        affine, (h, w), reflect = _affine(name, pixels.shape)
        view = cv2.warpAffine(pixels, affine, (w, h), flags=cv2.INTER_LINEAR, borderValue=float(pixels.min()))
        keep = _everyone
        if name == "inverted":
            view = 1.0 - view
        if name == "cropped_C5_C7":
            c4, c5 = (next(v for v in record.vertebrae if v.name == n) for n in ("C4", "C5"))
            top = int(max(c4.corners[:, 1].max(), c5.corners[:, 1].min() - 0.6 * (c5.corners[:, 1].min()
                                                                                  - c4.corners[:, 1].max())))
            view, affine = view[top:], np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -float(top)]])
            keep = _lower_three
        file = Path(record.file).with_suffix(".png").name
        cv2.imwrite(str(out / file), np.clip(np.round(view * 255), 0, 255).astype(np.uint8))
        moved = transformed(record, affine, reflect, keep)
        records.append(ImageRecord(file, moved.vertebrae, record.pixel_spacing_mm))
    write_annotations(out / "annotations.json", records)


def score(folder: Path, run: Path) -> dict[str, float]:
    """Recall and misnamed centres, films answered without a flag, and P2P (mm) of rightly named vertebrae."""
    truth = {r.file: r for r in read_annotations(folder / "annotations.json")}
    detected: dict[str, dict[str, np.ndarray]] = {}
    for row in csv.DictReader(open(run / "centers.detected.csv", encoding="utf-8")):
        detected.setdefault(row["image"], {})[row["vertebra"]] = np.array([float(row["x"]), float(row["y"])])
    flagged = {row["image"] for row in csv.DictReader(open(run / "errors.csv", encoding="utf-8"))}
    corners: dict[tuple[str, str], np.ndarray] = {}
    for row in csv.DictReader(open(run / "corners.csv", encoding="utf-8")):
        corners.setdefault((row["image"], row["vertebra"]), []).append([float(row["x"]), float(row["y"])])
    found = misnamed = annotated = silent_wrong = 0
    p2p = []
    for image, record in truth.items():
        known = {v.name: v for v in record.vertebrae}
        annotated += len(known)
        wrong = False
        for name, xy in detected.get(image, {}).items():
            right = name in known and np.hypot(*(xy - known[name].center)) * record.pixel_spacing_mm <= 3.0
            found += right
            if not right:
                misnamed += 1
                wrong = True
            elif (image, name) in corners:
                p2p.append(np.hypot(*(np.array(corners[image, name]) - known[name].corners).T).mean()
                           * record.pixel_spacing_mm)
        silent_wrong += wrong and image not in flagged
    return {"recall": found / annotated, "misnamed": misnamed, "films": len(truth),
            "unflagged_wrong_films": silent_wrong, "p2p_mean_mm": float(np.mean(p2p)) if p2p else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="An annotated phantom set (vcorner synth).")
    parser.add_argument("--variants", nargs="+", default=["as_is", "mirror", "upside_down", "turned_-35",
                                                          "turned_35", "inverted", "cropped_C5_C7"])
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="vcorner-variants-"))
    lines = ["| variant | named-centre recall | misnamed | films wrong without a flag | P2P of rightly named (mm) |",
             "|---|---|---|---|---|"]
    for name in args.variants:
        folder = scratch / name
        write_variant(args.data, folder, name)
        run = scratch / f"{name}-out"
        subprocess.run([sys.executable, "-m", "vcorner", "batch", str(folder), "--out", str(run)],
                       capture_output=True, check=False)
        s = score(folder, run)
        lines.append(f"| {name} | {s['recall']:.1%} | {s['misnamed']} | {s['unflagged_wrong_films']} of {s['films']} "
                     f"| {s['p2p_mean_mm']:.2f} |")
        print(lines[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "automatic_variants.md").write_text(
        f"Shipped detector and corner model on {args.data}, `vcorner batch DIR --out OUT` per variant\n\n"
        + "\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
