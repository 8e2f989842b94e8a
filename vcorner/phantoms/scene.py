"""Image layout: field of view, rotation, translation and crop; where markers and collimator blades go.

Every choice keeps the annotated bodies (C3-C7) inside the image and free of markers; a cropped image
cuts C7 below its centre but keeps every annotated centre inside.
"""

from __future__ import annotations

import numpy as np

from vcorner.phantoms.anatomy import ANNOTATED, Spine
from vcorner.phantoms.render import Placement


def annotated_outlines_mm(spine: Spine) -> np.ndarray:
    """(5, N, 2) outlines of C3-C7 in the spine frame, mm."""
    return np.stack([spine.body(name).outline(90) for name in ANNOTATED])


def _offset_range(points: np.ndarray, size: int, margin: float) -> tuple[float, float]:
    """Interval of offsets along one axis that keep ``points`` at least ``margin`` inside [0, size - 1]."""
    return margin - points.min(), size - 1 - margin - points.max()


def _pick(rng: np.random.Generator, target: float, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return float(np.clip(target, lo, hi)) if lo <= hi else (lo + hi) / 2


def sample_placement(spine: Spine, spacing: float, rng: np.random.Generator) -> tuple[Placement, bool]:
    """Field of view (110-150 mm wide, taller than wide), rotation (+-15 deg), translation and crop.

    Returns:
        The placement and whether C7 is cut by the lower image border.
    """
    width_mm = rng.uniform(110.0, 150.0)
    w, h = round(width_mm / spacing), round(width_mm * rng.uniform(1.12, 1.4) / spacing)
    tilt = spine.body("C5").angle
    angle = float(np.clip(np.deg2rad(rng.uniform(-15.0, 15.0)), np.deg2rad(-20.0) - tilt, np.deg2rad(32.0) - tilt))
    zero = Placement(spacing, angle, np.zeros(2), (h, w))
    points = zero.to_px(annotated_outlines_mm(spine).reshape(-1, 2))
    margin = 3.0 / spacing
    w = max(w, int(np.ptp(points[:, 0]) + 2 * margin + 2))
    h = max(h, int(np.ptp(points[:, 1]) + 2 * margin + 2))
    c5 = zero.to_px(spine.body("C5").center[None])[0]
    ox = _pick(rng, w / 2 + rng.uniform(-5.0, 20.0) / spacing - c5[0], _offset_range(points[:, 0], w, margin))
    oy_bounds = _offset_range(points[:, 1], h, margin)
    oy = _pick(rng, h * rng.uniform(0.42, 0.58) - (points[:, 1].min() + points[:, 1].max()) / 2, oy_bounds)
    cropped = False
    if rng.random() < 0.15:
        c7 = zero.to_px(spine.body("C7").center[None])[0, 1]
        cut = h - 1 - c7 - rng.uniform(0.15, 0.4) * spine.body("C7").shape.height / spacing
        if cut >= oy_bounds[0]:
            oy, cropped = cut, True
    return Placement(spacing, angle, np.array([ox, oy]), (h, w)), cropped


def free_corners(placement: Placement, body_px: np.ndarray, box: tuple[int, int], inset: float,
                 occupied: list[tuple[int, int, int, int]] | None = None) -> list[tuple[int, int]]:
    """Top-left positions of a ``box`` (w, h) in the image corners, 8 mm from every body point.

    Args:
        placement: Image geometry.
        body_px: (N, 2) outline points of the annotated bodies, pixels.
        box: Width and height of the item, pixels.
        inset: Distance from the image border, pixels.
        occupied: (x0, y0, x1, y1) boxes of items already placed; a spot must not overlap them.
    """
    h, w = placement.shape
    bw, bh = box
    clearance = 8.0 / placement.spacing
    spots = []
    for x in (inset, w - inset - bw):
        for y in (inset, h - inset - bh):
            x0, y0 = int(x), int(y)
            if x0 < 0 or y0 < 0 or x0 + bw > w or y0 + bh > h:
                continue
            if any(x0 < b[2] and b[0] < x0 + bw and y0 < b[3] and b[1] < y0 + bh for b in occupied or ()):
                continue
            dx = np.clip(body_px[:, 0], x0, x0 + bw) - body_px[:, 0]
            dy = np.clip(body_px[:, 1], y0, y0 + bh) - body_px[:, 1]
            if np.hypot(dx, dy).min() > clearance:
                spots.append((x0, y0))
    return spots


def collimator_rectangle(placement: Placement, body_px: np.ndarray,
                         rng: np.random.Generator) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) kept region, blades 2-12 % inside the border and 4 mm off the bodies.

    Returns:
        The rectangle, or None when no blade is used.
    """
    h, w = placement.shape
    clear = 4.0 / placement.spacing
    lo, hi = body_px.min(axis=0) - clear, body_px.max(axis=0) + clear
    limits = (lo[0], lo[1], w - 1 - hi[0], h - 1 - hi[1])
    sizes = (w, h, w, h)
    insets = []
    for limit, size in zip(limits, sizes, strict=True):
        wanted = rng.uniform(0.02, 0.12) * size if rng.random() < 0.25 else 0.0
        insets.append(int(min(wanted, max(limit, 0.0))) if wanted > 0.01 * size else 0)
    if not any(insets):
        return None
    return insets[0], insets[1], w - 1 - insets[2], h - 1 - insets[3]
