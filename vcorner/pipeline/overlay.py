"""``--vis`` overlays: the image, each vertebra's accumulated probability map, corners and 95% ellipses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from vcorner.io.atomic import write_bytes_atomic
from vcorner.postprocess.decode import AccumulatedMap, VertebraCorners

CORNER_COLOURS = ((255, 80, 80), (80, 200, 255), (255, 200, 0), (120, 255, 120))
"""RGB per corner, in CORNER_NAMES order."""
CHI2_95 = 2.4477  # sqrt of the chi-square(2) 95% quantile: 1-sigma ellipse -> 95% ellipse


def heat_overlay(grey: np.ndarray, accumulated: Sequence[AccumulatedMap]) -> np.ndarray:
    """(H, W, 3) uint8: the image in grey with the accumulated maps blended in as a heat map."""
    rgb = np.repeat((np.clip(grey, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    heat = np.zeros(grey.shape, np.float32)
    for m in accumulated:
        x0, y0 = m.origin
        h, w = m.acc.shape
        np.maximum(heat[y0:y0 + h, x0:x0 + w], m.acc, out=heat[y0:y0 + h, x0:x0 + w])
    colour = cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
    alpha = np.clip(heat * 1.5, 0, 0.75)[..., None]
    return (rgb * (1 - alpha) + colour * alpha).astype(np.uint8)


def draw_corners(rgb: np.ndarray, corners: Sequence[VertebraCorners]) -> np.ndarray:
    """Draw each corner (filled dot: network, ring: prior fallback) and its 95% ellipse, in place."""
    scale = max(1, round(max(rgb.shape[:2]) / 800))
    for v in corners:
        for k, ((x, y), (major, minor, angle)) in enumerate(zip(v.xy, v.ellipses(), strict=True)):
            colour = CORNER_COLOURS[k]
            centre = (int(round(x)), int(round(y)))
            axes = (max(1, int(round(CHI2_95 * major))), max(1, int(round(CHI2_95 * minor))))
            cv2.ellipse(rgb, centre, axes, float(angle), 0, 360, colour, scale, cv2.LINE_AA)
            cv2.circle(rgb, centre, 2 * scale, colour, -1 if v.source[k] == "network" else scale, cv2.LINE_AA)
        label_at = (int(v.xy[:, 0].max()) + 6 * scale, int(v.xy[:, 1].mean()))
        cv2.putText(rgb, v.name, label_at, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (255, 255, 255), scale,
                    cv2.LINE_AA)
    return rgb


def overlay_name(image: str) -> str:
    """Overlay file for an image path relative to DIR: ``a/b.dcm`` -> ``a/b.dcm.png``, ``a/b.png`` unchanged."""
    return image if image.lower().endswith(".png") else f"{image}.png"


def write_overlay(path: Path, grey: np.ndarray, corners: Sequence[VertebraCorners],
                  accumulated: Sequence[AccumulatedMap]) -> None:
    """Write the overlay PNG for one image atomically."""
    rgb = draw_corners(heat_overlay(grey, accumulated), corners)
    ok, data = cv2.imencode(".png", rgb[..., ::-1])
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed")
    write_bytes_atomic(path, data.tobytes())
