"""Plain NumPy (and OpenCV) references for the kernels of :mod:`vcorner.postprocess.kernels`.

Written to be read, not to be fast; the tests compare the kernels against them, and the benchmarks compare
:func:`backproject_cv2` (the per-patch ``cv2.warpAffine`` loop the kernel replaces) against the kernel.
"""

from __future__ import annotations

import cv2
import numpy as np


def _region_grid(origin: tuple[int, int], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) float64 image x and y of every pixel of a region."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (cols + int(origin[0])).astype(np.float64), (rows + int(origin[1])).astype(np.float64)


def _bilinear(patch: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear samples of an (N, N) map at columns ``u`` and rows ``v`` inside [0, N - 1]."""
    n = patch.shape[0]
    iu = np.minimum(u.astype(np.int64), n - 2)
    iv = np.minimum(v.astype(np.int64), n - 2)
    fu, fv = u - iu, v - iv
    top = (1.0 - fu) * patch[iv, iu] + fu * patch[iv, iu + 1]
    bottom = (1.0 - fu) * patch[iv + 1, iu] + fu * patch[iv + 1, iu + 1]
    return (1.0 - fv) * top + fv * bottom


def backproject(
    maps: np.ndarray, to_patch: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]
) -> np.ndarray:
    """Reference of :func:`vcorner.postprocess.kernels.backproject` (same arguments, same result)."""
    x, y = _region_grid(origin, shape)
    total = np.zeros(x.shape, dtype=np.float64)
    last = maps.shape[-1] - 1.0
    for patch, a in zip(maps, to_patch, strict=True):
        u = a[0, 0] * x + (a[0, 1] * y + a[0, 2])
        v = a[1, 0] * x + (a[1, 1] * y + a[1, 2])
        inside = (u >= 0.0) & (u <= last) & (v >= 0.0) & (v <= last)
        total[inside] += _bilinear(patch, u[inside], v[inside])
    return (total / max(len(maps), 1)).astype(np.float32)


def backproject_cv2(
    maps: np.ndarray, patch_to_image: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]
) -> np.ndarray:
    """The per-patch ``cv2.warpAffine`` loop: mean of the patch maps warped onto the region.

    OpenCV quantizes source coordinates to 1/32 pixel and blends the map's edge with the zero border over
    the half pixel beyond it, so it agrees with :func:`backproject` only approximately.

    Args:
        maps: (P, N, N) float32 patch maps.
        patch_to_image: (P, 2, 3) patch-to-image affines.
        origin: ``(x0, y0)`` image pixel of the region's first pixel.
        shape: ``(H, W)`` of the region.

    Returns:
        (H, W) float32 mean over patches.
    """
    height, width = shape
    total = np.zeros((height, width), dtype=np.float32)
    shift = np.array([[0.0, 0.0, origin[0]], [0.0, 0.0, origin[1]]])
    for patch, affine in zip(maps, patch_to_image, strict=True):
        total += cv2.warpAffine(
            np.ascontiguousarray(patch, dtype=np.float32), affine - shift, (width, height),
            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
        )
    return total / max(len(maps), 1)


def quadrant_argmax(
    acc: np.ndarray, origin: tuple[int, int], center: np.ndarray, axes: np.ndarray, size: float,
    prior_means: np.ndarray, prior_inv_cov: np.ndarray, radius: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference of :func:`vcorner.postprocess.kernels.quadrant_argmax` (same arguments, same result)."""
    x, y = _region_grid(origin, acc.shape)
    pixels = np.stack([x, y], axis=-1)  # (H, W, 2)
    offset = pixels - center
    within = np.sum(offset**2, axis=-1) <= (radius * size) ** 2
    q = offset @ axes  # frame coordinates times size: only the signs matter
    quadrant = 2 * (q[..., 1] >= 0.0) + (q[..., 0] >= 0.0)
    peaks = np.full((4, 2), -1, dtype=np.int64)
    values = np.full(4, -1.0)
    for k in range(4):
        d = pixels - prior_means[k]
        mahalanobis = np.einsum("hwi,ij,hwj->hw", d, prior_inv_cov[k], d)
        score = acc.astype(np.float64) * np.exp(-0.5 * mahalanobis)
        score[~(within & (quadrant == k))] = -1.0
        if score.size and score.max() >= 0.0:
            flat = int(np.argmax(score))
            peaks[k] = np.unravel_index(flat, score.shape)
            values[k] = score.flat[flat]
    return peaks, values


def _prior_weight(x: np.ndarray, y: np.ndarray, mean: np.ndarray, inv_cov: np.ndarray) -> np.ndarray:
    """``exp(-0.5 d^T inv_cov d)`` at pixels ``(x, y)``, with ``d`` the offset from ``mean``."""
    d = np.stack([x - mean[0], y - mean[1]], axis=-1)
    return np.exp(-0.5 * np.einsum("...i,ij,...j->...", d, inv_cov, d))


def quadratic_offset(f: np.ndarray) -> np.ndarray:
    """Sub-pixel offset ``(dx, dy)`` of the maximum of a 2-D quadratic through a (3, 3) neighbourhood.

    The fit runs on ``log f`` when every value is positive (exact for a Gaussian peak times a Gaussian
    prior), else on ``f``. Zero when the fit has no maximum; clamped to [-1, 1] pixel per axis.
    """
    f = np.log(f) if np.all(f > 0.0) else f
    gx, gy = 0.5 * (f[1, 2] - f[1, 0]), 0.5 * (f[2, 1] - f[0, 1])
    hxx, hyy = f[1, 2] - 2.0 * f[1, 1] + f[1, 0], f[2, 1] - 2.0 * f[1, 1] + f[0, 1]
    hxy = 0.25 * (f[2, 2] - f[2, 0] - f[0, 2] + f[0, 0])
    det = hxx * hyy - hxy * hxy
    if not (hxx < 0.0 and det > 0.0):
        return np.zeros(2)
    offset = -np.array([hyy * gx - hxy * gy, hxx * gy - hxy * gx]) / det
    return np.clip(offset, -1.0, 1.0)


def _window_covariance(
    score: np.ndarray, x: np.ndarray, y: np.ndarray, center: np.ndarray, radius: float, scale: float, floor: float
) -> np.ndarray:
    """(2, 2) second moments (px^2) of ``score`` minus its minimum, in a disc around ``center``.

    Scaled by ``scale ** 2``, plus ``floor`` on the diagonal.
    """
    inside = (x - center[0]) ** 2 + (y - center[1]) ** 2 <= radius**2
    weight = np.where(inside, score - score[inside].min(), 0.0)
    total = weight.sum()
    cov = np.zeros((2, 2))
    if total > 0.0:
        d = np.stack([x - np.sum(weight * x) / total, y - np.sum(weight * y) / total], axis=-1)
        cov = np.einsum("hw,hwi,hwj->ij", weight, d, d) / total
    return cov * scale**2 + floor * np.eye(2)


def refine_corner(
    acc: np.ndarray, origin: tuple[int, int], peak: np.ndarray, mean: np.ndarray, inv_cov: np.ndarray,
    reach: int, radius: float, scale: float, floor: float, subpixel: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference of :func:`vcorner.postprocess.kernels.refine_corner` (same arguments, same result)."""
    row, col = int(peak[0]), int(peak[1])
    top, left = max(row - reach, 0), max(col - reach, 0)
    window = acc[top : row + reach + 1, left : col + reach + 1].astype(np.float64)
    x, y = np.meshgrid(origin[0] + left + np.arange(window.shape[1]), origin[1] + top + np.arange(window.shape[0]))
    x, y = x.astype(np.float64), y.astype(np.float64)
    score = window * _prior_weight(x, y, mean, inv_cov)
    r, c = row - top, col - left
    xy = np.array([x[r, c], y[r, c]])
    cov = _window_covariance(score, x, y, xy, radius, scale, floor)
    if subpixel and 0 < r < score.shape[0] - 1 and 0 < c < score.shape[1] - 1:
        xy = xy + quadratic_offset(score[r - 1 : r + 2, c - 1 : c + 2])
    return xy, cov
