"""docs/views.png: the automatic path on films in other poses: a fresh training-style film (seed 4343) mirrored
(patient facing left), flipped top to bottom, turned by 35 degrees, inverted (bone dark), cut below C5 and cut
above C5, each run through ``vcorner batch DIR --out OUT`` without centres. Each panel shows the detected names
(yellow), the corners found (red) and the annotated corners (green), with the view the detector chose and the
image's flags.

    python docs/make_views_figure.py [--data DIR] [--image 0]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from vcorner.io.annotations import read_annotations
from vcorner.io.images import read_image

HEIGHT = 380


def variants(pixels: np.ndarray, corners: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, dict]]:
    """Film name -> (8-bit pixels, name -> (4, 2) annotated corners moved along) of each pose shown."""
    height, width = pixels.shape
    grey = np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8)
    flip_x = {n: np.stack([width - 1 - c[:, 0], c[:, 1]], axis=1) for n, c in corners.items()}
    flip_y = {n: np.stack([c[:, 0], height - 1 - c[:, 1]], axis=1) for n, c in corners.items()}
    turn = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), 35.0, 1.0)
    turned = {n: c @ turn[:, :2].T + turn[:, 2] for n, c in corners.items()}
    bottom = int(0.5 * (corners["C5"][:, 1].max() + corners["C6"][:, 1].min()))
    top = int(0.5 * (corners["C4"][:, 1].max() + corners["C5"][:, 1].min()))
    cut = {n: c for n, c in corners.items() if n in ("C3", "C4", "C5")}
    low = {n: c - np.array([0.0, top]) for n, c in corners.items() if n in ("C5", "C6", "C7")}
    return {"mirrored.png": (cv2.flip(grey, 1), flip_x), "upside_down.png": (cv2.flip(grey, 0), flip_y),
            "turned_35.png": (cv2.warpAffine(grey, turn, (width, height), borderValue=int(grey.min())), turned),
            "inverted.png": (255 - grey, corners), "cropped_C2_C5.png": (grey[:bottom], cut),
            "cropped_C5_C7.png": (grey[top:], low)}


def panel(pixels: np.ndarray, truth: dict, found: dict, names: dict, label: str) -> np.ndarray:
    """One film with its annotated (green) and found (red) corners and the detected names (RGB uint8)."""
    scale = HEIGHT / pixels.shape[0]
    small = cv2.resize(pixels, (int(pixels.shape[1] * scale), HEIGHT), interpolation=cv2.INTER_AREA)
    out = np.repeat(small[..., None], 3, axis=2)
    for points in truth.values():
        for x, y in points * scale:
            cv2.circle(out, (int(round(x)), int(round(y))), 3, (0, 200, 0), -1, cv2.LINE_AA)
    for points in found.values():
        for x, y in points * scale:
            cv2.circle(out, (int(round(x)), int(round(y))), 2, (230, 30, 30), -1, cv2.LINE_AA)
    for name, (x, y) in names.items():
        cv2.putText(out, name, (int(x * scale) - 12, int(y * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 230, 0), 1, cv2.LINE_AA)
    cv2.rectangle(out, (0, 0), (out.shape[1], 22), (255, 255, 255), -1)
    cv2.putText(out, label, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return np.hstack([out, np.full((HEIGHT, 8, 3), 255, np.uint8)])


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/train-views"),
                        help="An annotated phantom set (default: vcorner synth DIR --images 100 --seed 4343).")
    parser.add_argument("--image", type=int, default=0)
    args = parser.parse_args()
    record = read_annotations(args.data / "annotations.json")[args.image]
    films = variants(read_image(args.data / record.file).pixels, {v.name: v.corners for v in record.vertebrae})
    scratch = Path(tempfile.mkdtemp(prefix="vcorner-views-"))
    for name, (pixels, _) in films.items():
        cv2.imwrite(str(scratch / name), pixels)
    subprocess.run([sys.executable, "-m", "vcorner", "batch", str(scratch), "--out", str(scratch / "out")],
                   check=False, capture_output=True)
    detected = read_rows(scratch / "out" / "centers.detected.csv")
    corners = read_rows(scratch / "out" / "corners.csv")
    panels = []
    for name, (pixels, truth) in films.items():
        rows = [r for r in detected if r["image"] == name]
        found: dict[str, list] = {}
        for r in corners:
            if r["image"] == name:
                found.setdefault(r["vertebra"], []).append([float(r["x"]), float(r["y"])])
        view = rows[0]["view"] if rows else "none"
        flags = rows[0]["flags"] if rows and rows[0]["flags"] else "no flag"
        panels.append(panel(pixels, truth, {n: np.array(p) for n, p in found.items()},
                            {r["vertebra"]: (float(r["x"]), float(r["y"])) for r in rows},
                            f"{name[:-4]}: view {view}, {flags}"))
    out = Path(__file__).parent / "views.png"
    cv2.imwrite(str(out), np.hstack(panels)[..., ::-1])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
