"""Rasterize a phantom scene into a projected attenuation map (pixels), vectorized with OpenCV.

The map ``A`` is the dimensionless line integral of attenuation: 0 in air, about 1 through the neck,
higher where bone, shoulders or metal add to it. ``degrade.expose`` turns it into a radiograph.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from vcorner.phantoms.elements import Part
from vcorner.phantoms.shapes import place, rotation

_SUBPIXEL_BITS = 4


@dataclass(frozen=True)
class Placement:
    """Map from the spine frame (mm) to image pixels: ``px = R(angle) @ (mm / spacing) + offset``.

    Attributes:
        spacing: Pixel spacing, mm per pixel.
        angle: Global in-plane rotation, radians (positive = clockwise on screen).
        offset: (2,) pixel position of the spine-frame origin (the C5 body).
        shape: Image (height, width) in pixels.
    """

    spacing: float
    angle: float
    offset: np.ndarray
    shape: tuple[int, int]

    def to_px(self, mm: np.ndarray) -> np.ndarray:
        """(N, 2) spine-frame points (mm) in pixel coordinates."""
        return place(np.asarray(mm, dtype=np.float64) / self.spacing, self.angle, self.offset)

    def to_mm(self, px: np.ndarray) -> np.ndarray:
        """(..., 2) pixel coordinates back in the spine frame (mm)."""
        return ((np.asarray(px, dtype=np.float64) - self.offset) @ rotation(self.angle)) * self.spacing

    def grid_mm(self, factor: int) -> tuple[np.ndarray, np.ndarray]:
        """Spine-frame X and Y (mm) of the centres of ``factor`` x ``factor`` pixel blocks.

        Returns:
            Two (ceil(H / factor), ceil(W / factor)) float32 arrays.
        """
        h, w = (-(-self.shape[0] // factor), -(-self.shape[1] // factor))
        xs = np.arange(w) * factor + (factor - 1) / 2
        ys = np.arange(h) * factor + (factor - 1) / 2
        c, s = np.cos(self.angle), np.sin(self.angle)
        dx, dy = xs[None, :] - self.offset[0], ys[:, None] - self.offset[1]
        return ((c * dx + s * dy) * self.spacing).astype(np.float32), ((-s * dx + c * dy) * self.spacing).astype(
            np.float32
        )


def _mask(points_px: np.ndarray, shape: tuple[int, int], pad: int) -> tuple[np.ndarray, slice, slice] | None:
    """Anti-aliased float32 coverage of a polygon within its clipped bounding box, or None when off-image."""
    lo = np.floor(points_px.min(axis=0)).astype(int) - pad
    hi = np.ceil(points_px.max(axis=0)).astype(int) + pad + 1
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], shape[1]), min(hi[1], shape[0])
    if x0 >= x1 or y0 >= y1:
        return None
    pts = np.round((points_px - (x0, y0)) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, _SUBPIXEL_BITS)
    return mask, slice(y0, y1), slice(x0, x1)


def _rim(mask: np.ndarray, points_px: np.ndarray, origin: tuple[int, int], thickness: int) -> np.ndarray:
    """uint8 band of ``thickness`` px drawn along the outline, kept inside the polygon."""
    pts = np.round((points_px - origin) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    ring = np.zeros_like(mask)
    cv2.polylines(ring, [pts], True, 255, thickness, cv2.LINE_AA, _SUBPIXEL_BITS)
    return np.minimum(ring, mask)


def rasterize(parts: Iterable[Part], placement: Placement) -> dict[str, np.ndarray]:
    """Draw parts into float32 (H, W) layers: ``body`` (union), ``bone`` and ``metal`` (additive), ``rim``.

    Args:
        parts: Structures in the spine frame (mm).
        placement: Spine frame to pixels.

    Returns:
        Layers of attenuation; ``rim`` holds the cortical rims of all bony parts.
    """
    layers = {name: np.zeros(placement.shape, np.float32) for name in ("body", "bone", "metal", "rim")}
    for part in parts:
        points = placement.to_px(part.polygon)
        rim_px = max(1, round(2 * part.rim_mm / placement.spacing)) if part.rim else 0
        found = _mask(points, placement.shape, rim_px)
        if found is None:
            continue
        mask, rows, cols = found
        region = layers[part.layer][rows, cols]
        cover = mask.astype(np.float32) * (part.density / 255.0)
        if part.layer == "body":
            np.maximum(region, cover, out=region)
        else:
            region += cover
        if rim_px:
            ring = _rim(mask, points, (cols.start, rows.start), rim_px)
            layers["rim"][rows, cols] += ring.astype(np.float32) * (part.rim / 255.0)
    return layers


def _unit_noise(shape: tuple[int, int], sigma_x: float, sigma_y: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to unit standard deviation, float32 (H, W)."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=max(sigma_x, 0.3), sigmaY=max(sigma_y, 0.3))
    return noise / max(float(noise.std()), 1e-6)


def trabecular_texture(shape: tuple[int, int], spacing: float, strength: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Multiplicative bone texture around 1: a fine, vertically elongated mesh plus coarse mottling.

    Args:
        shape: (H, W) pixels.
        spacing: mm per pixel.
        strength: Relative amplitude (0.1 = subtle, 0.4 = coarse osteopenic pattern).
        rng: Random generator.

    Returns:
        (H, W) float32 factor, positive.
    """
    fine = _unit_noise(shape, 0.22 / spacing, 0.45 / spacing, rng)
    small = (shape[0] // 8 + 1, shape[1] // 8 + 1)
    coarse = cv2.resize(_unit_noise(small, 2.0 / spacing / 8, 2.0 / spacing / 8, rng), shape[::-1],
                        interpolation=cv2.INTER_LINEAR)
    return np.clip(1.0 + strength * (np.tanh(1.2 * fine) + 0.35 * coarse), 0.2, None).astype(np.float32)


def compose(layers: dict[str, np.ndarray], soft: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Total attenuation (H, W) float32: soft tissue + textured bone + cortical rims + metal."""
    bone = layers["body"] + layers["bone"]
    bone *= texture
    bone += soft
    bone += layers["rim"]
    bone += layers["metal"]
    return bone
