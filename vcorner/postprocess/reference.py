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
