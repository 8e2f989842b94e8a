"""Which side of a lateral film is anterior, read from the film itself (README.md, "Flags": ``view_contradicted``).

On a lateral cervical film the bone behind each vertebral body (pedicles, articular pillars, laminae) reads
brighter than the soft tissue and airway in front of it. A vertebra frame (:mod:`vcorner.geometry.frames`) points
its +x anterior when the film's view is right (:mod:`vcorner.geometry.views`: mirrored frames on a mirrored film),
so the film's intensity beside each body, posterior minus anterior, is positive. A film read in the wrong mirror
or polarity turns it negative: its corners' anterior and posterior labels would be swapped.
"""

from __future__ import annotations

import numpy as np

from vcorner.geometry.frames import Frames
from vcorner.geometry.patches import extract_patches

BAND = (0.7, 1.6)
"""Where the side bands lie on each side of a vertebra's centre, along its frame's x axis, in vertebra sizes: beyond
its body (half a size wide) and within about one body width of it."""
HALF_HEIGHT = 0.3
"""Half the height of the strip sampled across each body, in vertebra sizes (its middle third)."""
STRIP = (13, 81)
"""The strip's (rows, columns): its columns span -2 to +2 vertebra sizes along the frame's x axis."""


def strip_affine(frames: Frames, index: int) -> np.ndarray:
    """(2, 3) strip-to-image affine of vertebra ``index``: column u reads frame x = -2 + 4 u / 80, row v frame
    y = -HALF_HEIGHT + 2 HALF_HEIGHT v / 12 (pixels of the image)."""
    rows, columns = STRIP
    axes, size = frames.axes[index], float(frames.sizes[index])
    out = np.empty((2, 3))
    out[:, 0] = size * axes[:, 0] * (4.0 / (columns - 1))
    out[:, 1] = size * axes[:, 1] * (2.0 * HALF_HEIGHT / (rows - 1))
    out[:, 2] = frames.centers[index] + size * (axes @ np.array([-2.0, -HALF_HEIGHT]))
    return out


def side_contrast(pyramid: list[np.ndarray], frames: Frames, inverted: bool = False) -> np.ndarray:
    """(V,) per vertebra: the mean standardized intensity of the band behind its body minus that of the band in
    front of it (:data:`BAND`; positive when the film agrees with its frames' +x anterior); ``inverted`` reads the
    film's intensities negated, as an inverted view's patches are.

    Args:
        pyramid: the image's pyramid (:func:`vcorner.geometry.patches.build_pyramid`).
        frames: the V vertebra frames the corners are found in (mirrored on a mirrored film).
    """
    if not len(frames):
        return np.zeros(0)
    strips = extract_patches(pyramid, np.stack([strip_affine(frames, i) for i in range(len(frames))]), STRIP)
    profile = strips.mean(axis=1) * (-1.0 if inverted else 1.0)  # (V, columns), each strip standardized
    x = np.linspace(-2.0, 2.0, STRIP[1])
    behind = (x <= -BAND[0]) & (x >= -BAND[1])
    front = (x >= BAND[0]) & (x <= BAND[1])
    return profile[:, behind].mean(axis=1) - profile[:, front].mean(axis=1)


def film_side(pyramid: list[np.ndarray], frames: Frames, inverted: bool = False) -> float:
    """The film's side contrast: the median of :func:`side_contrast` over its vertebrae (NaN without one). Negative:
    the film contradicts the view its frames were built for (``view_contradicted``)."""
    contrast = side_contrast(pyramid, frames, inverted)
    return float(np.median(contrast)) if len(contrast) else float("nan")
