"""docs/detection.png: the shipped centre detector on fresh phantoms (seed 4242): each image with its detected
centres (yellow cross, name and confidence) and the annotated centres (green dot), and beside it the sum of the
detector's five maps at its 128 x 128 input.

    python docs/make_detection_figure.py [--data data/det-test] [--images 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from vcorner.backends import open_detector
from vcorner.geometry.letterbox import detector_input, letterbox_affine
from vcorner.geometry.patches import build_pyramid
from vcorner.io.annotations import read_annotations
from vcorner.io.images import read_image
from vcorner.models.modelfile import default_detector_path
from vcorner.stages.detect import detect_centres

HEIGHT = 420


def panel(path: Path, truth, runner, card) -> np.ndarray:
    """The image with detected and annotated centres, and the summed maps, side by side (RGB uint8)."""
    image = read_image(path)
    pyramid = build_pyramid(image.pixels)
    found = detect_centres(pyramid, image.pixels.shape, path.name, None, card, runner.infer)
    grey = (image.pixels * 255).astype(np.uint8)
    scale = HEIGHT / grey.shape[0]
    small = cv2.resize(grey, (int(grey.shape[1] * scale), HEIGHT), interpolation=cv2.INTER_AREA)
    left = np.repeat(small[..., None], 3, axis=2)
    for v in truth.vertebrae:
        cv2.circle(left, tuple(int(round(c * scale)) for c in v.center), 3, (0, 200, 0), -1, cv2.LINE_AA)
    for v in found.listed.vertebrae:
        x, y = (int(round(c * scale)) for c in v.center)
        cv2.drawMarker(left, (x, y), (255, 230, 0), cv2.MARKER_CROSS, 12, 1, cv2.LINE_AA)
        cv2.putText(left, f"{v.name} {found.confidence[v.name]:.2f}", (x - 88, y + 4), cv2.FONT_HERSHEY_SIMPLEX,
                    0.42, (255, 230, 0), 1, cv2.LINE_AA)
    affine = letterbox_affine(image.pixels.shape, card.detection.input_size)
    maps = runner.infer(detector_input(pyramid, affine, card.detection.input_size))[0].sum(axis=0)
    heat = cv2.applyColorMap((255 * maps / maps.max()).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
    right = cv2.resize(heat, (HEIGHT // 2, HEIGHT // 2), interpolation=cv2.INTER_NEAREST)
    right = np.vstack([right, np.full_like(right, 255)])
    return np.hstack([left, right, np.full((HEIGHT, 8, 3), 255, np.uint8)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/det-test"))
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args()
    records = read_annotations(args.data / "annotations.json")[: args.images]
    runner, card = open_detector(default_detector_path())
    with runner:
        row = np.hstack([panel(args.data / r.file, r, runner, card) for r in records])
    out = Path(__file__).parent / "detection.png"
    cv2.imwrite(str(out), row[..., ::-1])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
