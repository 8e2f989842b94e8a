"""Ground-truth patch maps (docs/design.md section 2, step 3; the paper's section 2).

Gaussians placed along the splined vertebra boundary, centred at each corner, with standard deviations
proportional to the vertebra's size and aligned with its frame; drawn into each patch through the patch's
affine and normalized to sum 1.
"""

from __future__ import annotations

import cv2
import numpy as np

from vcorner.config import GroundTruthConfig
from vcorner.geometry.frames import Frames
from vcorner.geometry.patches import apply_affine, invert_affines
from vcorner.geometry.spline import contour
from vcorner.io.records import ImageRecord


def weighted_contour(
    frames: Frames, index: int, corners: np.ndarray, boundary: np.ndarray | None, config: GroundTruthConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Boundary samples of one vertebra and their corner weights.

    Returns:
        points: (M, 2) image pixels on the splined boundary (every 0.5 px).
        weights: (M,) sum over the 4 corners of an anisotropic Gaussian (peak 1) centred at the corner,
            with standard deviations ``sigma_width * size`` and ``sigma_height * size`` along the frame axes.
    """
    points = contour(corners, boundary, spacing=0.5)
    local = (points[:, None, :] - corners[None, :, :]) @ frames.axes[index]  # (M, 4, 2) along frame axes
    sd = frames.sizes[index] * np.array([config.sigma_width, config.sigma_height])
    weights = np.exp(-0.5 * np.sum((local / sd) ** 2, axis=2)).max(axis=1)
    return points, weights


def splat(points: np.ndarray, weights: np.ndarray, patch_size: int, line_sd_px: float) -> np.ndarray:
    """Draw weighted points (patch pixels) bilinearly into an (N, N) canvas, then blur by ``line_sd_px``."""
    canvas = np.zeros((patch_size + 2, patch_size + 2), dtype=np.float64)
    x, y = points[:, 0] + 1.0, points[:, 1] + 1.0  # one pixel of margin on each side
    inside = (x >= 0) & (y >= 0) & (x < patch_size + 1) & (y < patch_size + 1)
    x, y, w = x[inside], y[inside], weights[inside]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dx, dy, f in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(canvas, (y0 + dy, x0 + dx), w * f)
    canvas = cv2.GaussianBlur(canvas, (0, 0), line_sd_px, borderType=cv2.BORDER_CONSTANT)
    return canvas[1:-1, 1:-1]


def vertebra_contours(
    record: ImageRecord, frames: Frames, config: GroundTruthConfig
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Weighted boundary samples (points, weights) of every vertebra of an annotated image."""
    out = []
    for i, v in enumerate(record.vertebrae):
        if v.corners is None:
            raise ValueError(f"{record.file}: vertebra {v.name} has no corners; ground truth needs them")
        out.append(weighted_contour(frames, i, v.corners, v.boundary, config))
    return out


def patch_targets(
    contours: list[tuple[np.ndarray, np.ndarray]],
    index: int,
    affines: np.ndarray,
    patch_size: int,
    config: GroundTruthConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth maps for patches cut around vertebra ``index``.

    Args:
        contours: from :func:`vertebra_contours`.
        index: the vertebra the patches were cut for.
        affines: (K, 2, 3) patch-to-image affines.
        patch_size: N.
        config: ``corners="own"`` draws only vertebra ``index``; ``"all"`` every vertebra.

    Returns:
        maps: (K, N, N) float32, each summing to 1 (zeros where ``valid`` is False).
        valid: (K,) bool, False where no corner mass falls inside the patch.
    """
    chosen = [contours[index]] if config.corners == "own" else contours
    inverse = invert_affines(affines)
    maps = np.zeros((len(affines), patch_size, patch_size), dtype=np.float32)
    valid = np.zeros(len(affines), dtype=bool)
    for k, inv in enumerate(inverse):
        canvas = sum(splat(apply_affine(inv, p), w, patch_size, config.line_sd_px) for p, w in chosen)
        total = float(canvas.sum())
        if total > 1e-3:
            maps[k] = canvas / total
            valid[k] = True
    return maps, valid
