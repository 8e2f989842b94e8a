"""Patch sampling as affine maps from the patch grid to the image, and patch extraction.

An affine ``A`` (2, 3) maps patch pixel ``(u, v)`` (column, row; origin at the first pixel's centre) to image
pixels: ``p = A[:, :2] @ (u, v) + A[:, 2]``.
"""

from __future__ import annotations

import cv2
import numpy as np

from vcorner.config import SamplingConfig
from vcorner.geometry.frames import Frames, rotation


def grid_offsets(config: SamplingConfig) -> np.ndarray:
    """(G, 2) grid points around a centre in frame units (G = grid_steps ** 2)."""
    radius = config.grid_radius if config.grid_steps > 1 else 0.0
    line = np.linspace(-radius, radius, config.grid_steps)
    gx, gy = np.meshgrid(line, line)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def sample_poses(config: SamplingConfig, rng: np.random.Generator | None = None) -> np.ndarray:
    """(K, 4) patch poses ``(offset_x, offset_y, scale, rotation_rad)`` in frame units.

    The full grid x scales x rotations; with ``rng`` (training) each pose is jittered.
    """
    offsets = grid_offsets(config)
    g, s, r = np.meshgrid(
        np.arange(len(offsets)), np.asarray(config.scales), np.deg2rad(config.rotations_deg), indexing="ij"
    )
    poses = np.stack([offsets[g.ravel(), 0], offsets[g.ravel(), 1], s.ravel(), r.ravel()], axis=1)
    if rng is not None:
        n = len(poses)
        poses[:, :2] += rng.normal(0.0, config.jitter_offset, (n, 2))
        poses[:, 2] *= np.exp(rng.normal(0.0, config.jitter_scale, n))
        poses[:, 3] += np.deg2rad(rng.normal(0.0, config.jitter_rotation_deg, n))
    return poses


def patch_affines(frames: Frames, index: int, poses: np.ndarray, config: SamplingConfig) -> np.ndarray:
    """(K, 2, 3) patch-to-image affines of vertebra ``index`` for ``poses`` from :func:`sample_poses`."""
    n = config.patch_size
    size = frames.sizes[index]
    centres = frames.to_image(index, poses[:, :2])
    linear = frames.axes[index] @ rotation(poses[:, 3])  # (K, 2, 2)
    linear = linear * (config.extent * size * poses[:, 2] / n)[:, None, None]
    middle = np.full(2, (n - 1) / 2.0)
    translation = centres - linear @ middle
    return np.concatenate([linear, translation[:, :, None]], axis=2)


def invert_affines(affines: np.ndarray) -> np.ndarray:
    """(K, 2, 3) inverses of (K, 2, 3) affines."""
    linear_inv = np.linalg.inv(affines[:, :, :2])
    return np.concatenate([linear_inv, -(linear_inv @ affines[:, :, 2:])], axis=2)


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (..., 2) points through one (2, 3) affine."""
    return np.asarray(points) @ affine[:, :2].T + affine[:, 2]


def build_pyramid(pixels: np.ndarray, levels: int = 5) -> list[np.ndarray]:
    """Gaussian pyramid of a (H, W) float32 image; level L pixel j sits at level-0 pixel ``2**L * j``."""
    pyramid = [np.ascontiguousarray(pixels, dtype=np.float32)]
    while len(pyramid) < levels and min(pyramid[-1].shape) >= 32:
        pyramid.append(cv2.pyrDown(pyramid[-1]))
    return pyramid


def extract_patches(pyramid: list[np.ndarray], affines: np.ndarray, patch_size: int | tuple[int, int],
                    fill: float = 0.0) -> np.ndarray:
    """Cut patches through their affines, anti-aliased by sampling the right pyramid level.

    Args:
        pyramid: from :func:`build_pyramid`.
        affines: (K, 2, 3) patch-to-image affines.
        patch_size: N, or (height, width) for a non-square cut (the detector's view of a tall film).
        fill: the value pixels outside the image read as, before standardization.

    Returns:
        (K, N, N) (or (K, height, width)) float32 patches, each standardized to zero mean and unit standard
        deviation.
    """
    rows, columns = (patch_size, patch_size) if np.isscalar(patch_size) else patch_size
    out = np.empty((len(affines), rows, columns), dtype=np.float32)
    step = np.sqrt(np.abs(np.linalg.det(affines[:, :, :2])))  # image pixels per patch pixel
    levels = np.clip(np.floor(np.log2(np.maximum(step, 1.0))).astype(int), 0, len(pyramid) - 1)
    for k, (affine, level) in enumerate(zip(affines, levels, strict=True)):
        scaled = affine / float(2**level)
        out[k] = cv2.warpAffine(
            pyramid[level], scaled, (columns, rows),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=fill,
        )
    return standardize(out)


def standardize(patches: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(K, N, N) patches to zero mean, unit standard deviation each (float32)."""
    mean = patches.mean(axis=(1, 2), keepdims=True)
    sd = patches.std(axis=(1, 2), keepdims=True)
    return ((patches - mean) / (sd + eps)).astype(np.float32)
