"""Corners from patch maps (docs/design.md section 2, steps 7 and 8).

Per vertebra: remove each patch's background, back-project the patches cut for that vertebra into its own
region (docs/design.md section 5: one shared accumulator lets a vertebra's superior corners capture the inferior
corners of the vertebra above), weight by the learned prior, take each frame quadrant's maximum, refine it to
sub-pixel precision, and describe its uncertainty by the moments of the weighted map around it. A quadrant
without enough mass falls back to the prior.

The accumulated map is the mean over the vertebra's patches of maps rescaled to a maximum of 1 (a patch that
does not cover a pixel counts 0 there), so its value at a corner reads as the fraction of patches that put
their maximum there; that value is the corner's ``confidence``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vcorner.config import DecodeConfig
from vcorner.geometry.frames import Frames
from vcorner.geometry.patches import invert_affines
from vcorner.postprocess.background import remove_background
from vcorner.postprocess.kernels import backproject, quadrant_argmax, refine_corner
from vcorner.postprocess.prior import CornerPrior

COV_FLOOR_PX2 = 1.0 / 12.0
"""Variance added to every network covariance (px^2): a uniform position within one pixel; never singular."""


def covariance_ellipse(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-sigma ellipses of (..., 2, 2) covariances in image pixels.

    Returns:
        sd_major: (...) standard deviation along the major axis, pixels.
        sd_minor: (...) standard deviation along the minor axis, pixels.
        angle_deg: (...) angle of the major axis from +x towards +y (image coordinates, y down), in
            (-90, 90]; 0 for a circle.
    """
    cov = np.asarray(cov, dtype=np.float64)
    a, c = cov[..., 0, 0], cov[..., 1, 1]
    b = 0.5 * (cov[..., 0, 1] + cov[..., 1, 0])
    mid, half = 0.5 * (a + c), np.hypot(0.5 * (a - c), b)
    angle = 0.5 * np.degrees(np.arctan2(2.0 * b + 0.0, a - c))  # + 0.0 turns -0.0 into 0.0: never -90
    angle = np.where(angle <= -90.0, angle + 180.0, angle)
    return np.sqrt(np.maximum(mid + half, 0.0)), np.sqrt(np.maximum(mid - half, 0.0)), angle


def ellipse_covariance(sd_major: np.ndarray, sd_minor: np.ndarray, angle_deg: np.ndarray) -> np.ndarray:
    """(..., 2, 2) covariances, px^2, of 1-sigma ellipses (inverse of :func:`covariance_ellipse`)."""
    a = np.deg2rad(np.asarray(angle_deg, dtype=np.float64))
    c, s = np.cos(a), np.sin(a)
    major, minor = np.asarray(sd_major, dtype=np.float64) ** 2, np.asarray(sd_minor, dtype=np.float64) ** 2
    return np.stack([np.stack([c * c * major + s * s * minor, c * s * (major - minor)], -1),
                     np.stack([c * s * (major - minor), s * s * major + c * c * minor], -1)], -2)


@dataclass(frozen=True)
class VertebraCorners:
    """The four corners of one vertebra, in the order of ``vcorner.CORNER_NAMES``.

    Attributes:
        name: vertebra label, e.g. ``"C3"``.
        xy: (4, 2) float64 corners, image pixels.
        confidence: (4,) in [0, 1]: the accumulated map at the corner (fraction of patches agreeing); 0 for
            prior fallbacks.
        cov: (4, 2, 2) positional covariance, px^2 (the prior's own covariance for prior fallbacks).
        source: per corner ``"network"``, or ``"prior"`` where the prior fallback was used.
        flags: the vertebra's flags (README.md, "Flags"): the image's own, then
            :data:`vcorner.postprocess.plausibility.VERTEBRA_FLAGS`; empty when none applies.
    """

    name: str
    xy: np.ndarray
    confidence: np.ndarray
    cov: np.ndarray
    source: tuple[str, ...]
    flags: tuple[str, ...] = ()

    def ellipses(self) -> np.ndarray:
        """(4, 3) ``(sd_major_px, sd_minor_px, angle_deg)`` per corner (see :func:`covariance_ellipse`)."""
        return np.stack(covariance_ellipse(self.cov), axis=-1)


@dataclass(frozen=True)
class AccumulatedMap:
    """One vertebra's accumulated map, for decoding and drawing.

    Attributes:
        acc: (H, W) float32 mean over the vertebra's patches of their background-free maps, in [0, 1].
        origin: ``(x0, y0)`` image pixel of ``acc[0, 0]``.
    """

    acc: np.ndarray
    origin: tuple[int, int]


def vertebra_region(
    frames: Frames, index: int, radius: float, image_shape: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Square region of half-width ``radius`` vertebra sizes around a centre, clipped to the image.

    Returns:
        origin: ``(x0, y0)`` image pixel of the region's first pixel.
        shape: ``(H, W)``; zero-sized when the square misses the image.
    """
    half = radius * float(frames.sizes[index])
    cx, cy = (float(c) for c in frames.centers[index])
    height, width = image_shape
    x0, x1 = max(0, math.floor(cx - half)), min(width - 1, math.ceil(cx + half))
    y0, y1 = max(0, math.floor(cy - half)), min(height - 1, math.ceil(cy + half))
    return (x0, y0), (max(0, y1 - y0 + 1), max(0, x1 - x0 + 1))


def confidence_inflation(peak: np.ndarray, config: DecodeConfig) -> np.ndarray:
    """(4,) prior covariance multipliers of the four corners from their quadrants' (4,) unweighted peak values in
    [0, 1]: ``prior_inflation * (prior_sharp_inflation / prior_inflation) ** peak`` (``prior_inflation`` at every
    peak when ``prior_sharp_inflation`` is 0)."""
    base = float(config.prior_inflation)
    if config.prior_sharp_inflation <= 0:
        return np.full(4, base)
    ratio = float(config.prior_sharp_inflation) / base
    return base * ratio ** np.clip(np.asarray(peak, dtype=np.float64), 0.0, 1.0)


def decode_vertebra(
    acc: np.ndarray, origin: tuple[int, int], frames: Frames, index: int, name: str, prior: CornerPrior,
    config: DecodeConfig,
) -> VertebraCorners:
    """Four corners of one vertebra from its accumulated map.

    The map is weighted by the prior (covariance inflated by ``config.prior_inflation``) and each frame
    quadrant within ``config.search_radius`` sizes keeps its weighted maximum. With
    ``config.prior_sharp_inflation`` set, the search runs again with each corner's prior inflated by
    :func:`confidence_inflation` of the unweighted map at its first peak: a sharp map is weighted less. With
    ``config.subpixel`` that pixel is refined by a quadratic fit to the log of the weighted map on its 3 x 3
    neighbourhood (clamped to +-1 px). The covariance is the second moment of the weighted map minus its minimum,
    over a disc of ``config.refine_radius_px`` around the peak, about its weighted mean, times
    ``config.ellipse_scale ** 2``, plus :data:`COV_FLOOR_PX2`. The confidence is the unweighted accumulated value
    at the peak pixel. ``config.corner_offset`` (frame units) is then added to each network corner.
    Where that value is below ``config.min_peak`` (no patch mass where the prior allows a corner), or the
    quadrant lies outside the image, the corner is the prior mean with confidence 0 and the prior's own
    (uninflated) covariance.

    Args:
        acc: (H, W) accumulated map of the vertebra's region (from :func:`accumulate_image`).
        origin: ``(x0, y0)`` image pixel of ``acc[0, 0]``.
        frames: the image's vertebra frames.
        index: the vertebra's index in ``frames``.
        name: its label, which selects the prior.
        prior: the model's corner prior.
        config: decoding settings.
    """
    means, covs = prior.in_image(frames, index, name)
    inv_cov = np.linalg.inv(config.prior_inflation * covs)
    search = (acc, origin, frames.centers[index], frames.axes[index], float(frames.sizes[index]), means)
    peaks, _ = quadrant_argmax(*search, inv_cov, config.search_radius)
    if config.prior_sharp_inflation > 0:
        first = np.array([acc[r, c] if r >= 0 else 0.0 for r, c in peaks])
        inv_cov = np.linalg.inv(confidence_inflation(first, config)[:, None, None] * covs)
        peaks, _ = quadrant_argmax(*search, inv_cov, config.search_radius)
    xy, cov = means.astype(np.float64), covs.astype(np.float64)
    confidence, source = np.zeros(4), ["prior"] * 4
    offset = (frames.sizes[index] * np.reshape(config.corner_offset, (4, 2)) @ frames.axes[index].T
              if config.corner_offset else None)  # (4, 2) pixels: each corner's fitted move in this vertebra's frame
    for k, (row, col) in enumerate(peaks):
        if row < 0 or acc[row, col] < config.min_peak:
            continue
        xy[k], cov[k] = refine_corner(acc, origin, peaks[k], means[k], inv_cov[k],
                                      max(1, math.ceil(config.refine_radius_px)), max(config.refine_radius_px, 1.0),
                                      config.ellipse_scale, COV_FLOOR_PX2, config.subpixel)
        confidence[k] = float(np.clip(acc[row, col], 0.0, 1.0))
        source[k] = "network"
        if offset is not None:
            xy[k] += offset[k]
    return VertebraCorners(name=name, xy=xy, confidence=confidence, cov=cov, source=tuple(source))


def accumulate_image(
    maps: np.ndarray, affines: np.ndarray, vertebra_of_patch: np.ndarray, frames: Frames,
    image_shape: tuple[int, int], config: DecodeConfig,
) -> list[AccumulatedMap]:
    """Background-free patch maps back-projected per vertebra, each into its own region.

    Args:
        maps: (P, N, N) raw network outputs.
        affines: (P, 2, 3) patch-to-image affines.
        vertebra_of_patch: (P,) index in ``frames`` of the vertebra each patch was cut for.
        frames: the image's vertebra frames (V of them).
        image_shape: ``(H, W)`` of the image.
        config: decoding settings (``background_quantile``, ``search_radius``).

    Returns:
        V accumulated maps, in the order of ``frames``.

    Raises:
        ValueError: inconsistent shapes.
    """
    owner = np.asarray(vertebra_of_patch).reshape(-1)
    if np.shape(maps)[:1] != owner.shape or np.shape(affines) != (len(owner), 2, 3):
        raise ValueError(
            f"maps {np.shape(maps)}, affines {np.shape(affines)} and vertebra_of_patch {owner.shape} disagree"
        )
    cleaned = remove_background(maps, config.background_quantile)
    to_patch = invert_affines(np.asarray(affines, dtype=np.float64))
    out = []
    for index in range(len(frames)):
        origin, shape = vertebra_region(frames, index, config.search_radius, image_shape)
        mine = owner == index
        out.append(AccumulatedMap(backproject(cleaned[mine], to_patch[mine], origin, shape), origin))
    return out


def decode_accumulated(
    accumulated: Sequence[AccumulatedMap], frames: Frames, names: Sequence[str], prior: CornerPrior,
    config: DecodeConfig,
) -> list[VertebraCorners]:
    """Corners of every vertebra from the maps of :func:`accumulate_image` (order of ``frames``)."""
    if len(accumulated) != len(frames) or len(names) != len(frames):
        raise ValueError(f"{len(frames)} frames, {len(accumulated)} maps and {len(names)} names disagree")
    return [
        decode_vertebra(m.acc, m.origin, frames, i, names[i], prior, config) for i, m in enumerate(accumulated)
    ]


def decode_image(
    maps: np.ndarray, affines: np.ndarray, vertebra_of_patch: np.ndarray, frames: Frames, names: Sequence[str],
    prior: CornerPrior, image_shape: tuple[int, int], config: DecodeConfig,
) -> list[VertebraCorners]:
    """Corners of every vertebra of one image from the raw network maps of its patches.

    :func:`accumulate_image` then :func:`decode_accumulated`; call those two to keep the accumulated maps
    (e.g. to draw them).

    Args:
        maps: (P, N, N) float32 raw network outputs.
        affines: (P, 2, 3) patch-to-image affines.
        vertebra_of_patch: (P,) index in ``frames`` of the vertebra each patch was cut for.
        frames: the image's vertebra frames (V of them).
        names: V vertebra labels (they select the prior).
        prior: the model's corner prior.
        image_shape: ``(H, W)`` of the image.
        config: decoding settings.

    Returns:
        V :class:`VertebraCorners`, in the order of ``frames``.
    """
    accumulated = accumulate_image(maps, affines, vertebra_of_patch, frames, image_shape, config)
    return decode_accumulated(accumulated, frames, names, prior, config)
