"""Vertebra frames from clicked centres only (docs/design.md section 2, step 1).

A frame maps frame coordinates ``q`` (units of the vertebra's size, x towards the image's right side of
the spine, y caudal) to image pixels: ``p = center + size * axes @ q``. The same function serves training
and inference so that patches are cut identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vcorner.geometry.sequence import spine_levels
from vcorner.io.records import ImageRecord, InputError


@dataclass(frozen=True)
class Frames:
    """Frames of the V vertebrae of one image.

    Attributes:
        centers: (V, 2) centres, pixels.
        axes: (V, 2, 2) rotation matrices whose columns are the frame's x and y axes (y = caudal).
        sizes: (V,) vertebra size = mean distance to the neighbouring centres, pixels.
    """

    centers: np.ndarray
    axes: np.ndarray
    sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.centers)

    def subset(self, keep: np.ndarray) -> Frames:
        """The frames of the vertebrae where the (V,) boolean ``keep`` is True, in order."""
        keep = np.asarray(keep, dtype=bool)
        return Frames(self.centers[keep], self.axes[keep], self.sizes[keep])

    def to_image(self, index: int, q: np.ndarray) -> np.ndarray:
        """Frame coordinates (..., 2) of vertebra ``index`` to image pixels (..., 2)."""
        return self.centers[index] + self.sizes[index] * (np.asarray(q) @ self.axes[index].T)

    def to_frame(self, index: int, p: np.ndarray) -> np.ndarray:
        """Image pixels (..., 2) to frame coordinates (..., 2) of vertebra ``index``."""
        return ((np.asarray(p) - self.centers[index]) @ self.axes[index]) / self.sizes[index]

    def angles(self) -> np.ndarray:
        """(V,) angle of each frame's x axis from +x towards +y, radians."""
        return np.arctan2(self.axes[:, 1, 0], self.axes[:, 0, 0])


def rotation(angle: float | np.ndarray) -> np.ndarray:
    """(..., 2, 2) rotation matrices for angles in radians (x towards y)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def frames_from_centers(centers: np.ndarray, levels: np.ndarray | None = None) -> Frames:
    """Frames of vertebrae from their centres, listed cranial to caudal.

    Args:
        centers: (V, 2) centres in pixels, V >= 2, cranial first.
        levels: (V,) increasing positions along the spine (anatomical ranks, so that a vertebra left out
            counts), or None for consecutive vertebrae.

    Returns:
        Orientation from the neighbouring centres (central difference inside the spine, one-sided at
        its ends) and size = mean distance to the neighbours per level apart (for consecutive vertebrae:
        the mean distance to the neighbours).

    Raises:
        InputError: fewer than two vertebrae, non-finite or coincident centres.
    """
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    if len(centers) < 2:
        raise InputError("a vertebra frame needs at least two vertebra centres (neighbours give its size)")
    if not np.all(np.isfinite(centers)):
        raise InputError("vertebra centres contain NaN or infinite values")
    steps = np.diff(centers, axis=0)
    lengths = np.linalg.norm(steps, axis=1)
    if np.any(lengths < 1e-6):
        raise InputError("two consecutive vertebra centres coincide")
    padded = np.concatenate([centers[:1], centers, centers[-1:]])
    down = padded[2:] - padded[:-2]
    axis_y = down / np.linalg.norm(down, axis=1, keepdims=True)
    axis_x = np.stack([axis_y[:, 1], -axis_y[:, 0]], axis=1)
    if levels is not None:
        gaps = np.diff(np.asarray(levels, dtype=np.float64).reshape(-1))
        if gaps.shape != lengths.shape or np.any(gaps <= 0):
            raise ValueError(f"levels must increase along the {len(centers)} centres, got {levels}")
        lengths = lengths / gaps
    neighbour = np.concatenate([[lengths[0]], lengths]), np.concatenate([lengths, [lengths[-1]]])
    sizes = 0.5 * (neighbour[0] + neighbour[1])
    return Frames(centers=centers, axes=np.stack([axis_x, axis_y], axis=2), sizes=sizes)


def record_frames(record: ImageRecord) -> Frames:
    """Frames of an image's vertebrae (cranial first), with the anatomical levels of their names when known
    (:func:`vcorner.geometry.sequence.spine_levels`), so that training and inference frame alike."""
    return frames_from_centers(record.centers, spine_levels([v.name for v in record.vertebrae]))
