"""Draw annotations (or predictions) over a radiograph: boundary spline, centres, colour-coded corners."""

from __future__ import annotations

import cv2
import numpy as np

from vcorner import CORNER_NAMES
from vcorner.io.records import ImageRecord
from vcorner.phantoms.shapes import catmull_rom

CORNER_COLOURS: dict[str, tuple[int, int, int]] = {
    "superior_left": (230, 60, 60),
    "superior_right": (60, 200, 60),
    "inferior_left": (70, 120, 255),
    "inferior_right": (255, 210, 40),
}
"""RGB colour of each corner name."""
_BOUNDARY = (0, 220, 230)
_CENTER = (255, 80, 255)
_SHIFT = 4


def to_display(pixels: np.ndarray) -> np.ndarray:
    """(H, W) image of any numeric dtype as uint8 gray, stretched between its 0.5 and 99.5 percentiles."""
    values = pixels.astype(np.float32)
    lo, hi = np.percentile(values[:: max(1, values.shape[0] // 256), :: max(1, values.shape[1] // 256)], (0.5, 99.5))
    scaled = (values - lo) / max(float(hi - lo), 1e-6)
    return np.clip(scaled * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _pts(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64) * (1 << _SHIFT)).astype(np.int32)


def draw_annotations(pixels: np.ndarray, record: ImageRecord) -> np.ndarray:
    """Overlay ``record`` on ``pixels``.

    Args:
        pixels: (H, W) gray image (any dtype) or (H, W, 3) RGB uint8.
        record: Vertebrae in pixel coordinates; ``boundary`` is drawn as a closed Catmull-Rom spline
            through the clicked points (or the quadrilateral through the corners), centres as rings,
            corners as filled dots coloured by ``CORNER_COLOURS``.

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    rgb = pixels.copy() if pixels.ndim == 3 else cv2.cvtColor(to_display(pixels), cv2.COLOR_GRAY2RGB)
    size = max(rgb.shape[:2])
    line = max(1, round(size / 700))
    radius = max(3, round(size / 220))
    for vertebra in record.vertebrae:
        outline = vertebra.boundary
        if outline is None and vertebra.corners is not None:
            outline = vertebra.corners[[0, 1, 3, 2]]
        if outline is not None:
            curve = catmull_rom(outline, 10) if vertebra.boundary is not None else outline
            cv2.polylines(rgb, [_pts(curve)], True, _BOUNDARY, line, cv2.LINE_AA, _SHIFT)
        if vertebra.corners is not None:
            for name, corner in zip(CORNER_NAMES, vertebra.corners, strict=True):
                if np.all(np.isfinite(corner)):
                    cv2.circle(rgb, tuple(_pts(corner)), radius << _SHIFT, CORNER_COLOURS[name], -1, cv2.LINE_AA,
                               _SHIFT)
        if np.all(np.isfinite(vertebra.center)):
            cv2.circle(rgb, tuple(_pts(vertebra.center)), radius << _SHIFT, _CENTER, line, cv2.LINE_AA, _SHIFT)
            origin = (int(vertebra.center[0] + 2.5 * radius), int(vertebra.center[1] + radius))
            cv2.putText(rgb, vertebra.name, origin, cv2.FONT_HERSHEY_SIMPLEX, size / 2500, _CENTER, line, cv2.LINE_AA)
    return rgb
