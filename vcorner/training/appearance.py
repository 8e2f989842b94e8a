"""Appearance families for training views: the looks of films the phantom renderer does not make (README.md,
"Automatic centres", "A wider training world").

Each function changes one (H, W) standardized detector view and returns a new one; :func:`vary_appearance`
draws a random subset of them. They change how a film looks, never where its vertebrae are, except
:func:`collimate`, whose blades hide what lies under them (it returns the hidden mask so that the targets of
centres under a blade become flat). The names follow what a radiograph shows: exposure (gamma and contrast),
unsharpness (blur), quantum noise, scatter haze, an anti-scatter grid's lines, collimator blades, and burnt-in
text and markers.
"""

from __future__ import annotations

import cv2
import numpy as np


def standardized(view: np.ndarray) -> np.ndarray:
    """(H, W) float32 view at zero mean and unit standard deviation."""
    return ((view - view.mean()) / (view.std() + 1e-6)).astype(np.float32)


def gamma(view: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure and detector response: the view's range mapped to [0, 1], raised to a power in [0.5, 2]."""
    low, high = float(view.min()), float(view.max())
    unit = (view - low) / max(high - low, 1e-6)
    return standardized(unit ** np.exp(rng.uniform(np.log(0.5), np.log(2.0))))


def blur(view: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unsharpness: a Gaussian blur of sd 0.4-1.5 input pixels."""
    return standardized(cv2.GaussianBlur(view, (0, 0), float(rng.uniform(0.4, 1.5))))


def noise(view: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Quantum noise: white noise of sd 0.05-0.5 standardized units, optionally a little blurred (correlated)."""
    grain = rng.normal(0.0, rng.uniform(0.05, 0.5), view.shape).astype(np.float32)
    if rng.random() < 0.5:
        grain = cv2.GaussianBlur(grain, (0, 0), 0.7) * 1.6
    return standardized(view + grain)


def haze(view: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scatter and heel effect: a smooth field (a tilted plane plus a blurred random field) added, 0.2-1.5 sd."""
    height, width = view.shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / height - 0.5, xx / width - 0.5
    field = rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy
    field = field + cv2.GaussianBlur(rng.normal(0, 1, view.shape).astype(np.float32), (0, 0), min(view.shape) / 6) * 8
    field = field / (field.std() + 1e-6)
    return standardized(view + rng.uniform(0.2, 1.5) * field)


def grid_lines(view: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An anti-scatter grid's lines: stripes 2-4 input pixels apart across the view, 0.1-0.4 sd deep."""
    period, phase = rng.uniform(2.0, 4.0), rng.uniform(0, 2 * np.pi)
    across = rng.random() < 0.5
    axis = np.arange(view.shape[1] if across else view.shape[0], dtype=np.float32)
    stripes = np.sin(2 * np.pi * axis / period + phase).astype(np.float32)
    pattern = np.broadcast_to(stripes[None, :] if across else stripes[:, None], view.shape)
    return standardized(view + rng.uniform(0.1, 0.4) * pattern)


def collimate(view: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Collimator blades: one to four bands along the view's edges, 3-20% of that side's length each, set to the view's
    brightest or darkest level (a shuttered or burnt-out border).

    Returns:
        The view, and the (S, S) bool mask of what the blades hide.
    """
    hidden = np.zeros(view.shape, dtype=bool)
    for side in rng.permutation(4)[: int(rng.integers(1, 5))]:
        depth = int(round(rng.uniform(0.03, 0.2) * view.shape[side // 2]))
        if side == 0:
            hidden[:depth] = True
        elif side == 1:
            hidden[-depth:] = True
        elif side == 2:
            hidden[:, :depth] = True
        else:
            hidden[:, -depth:] = True
    out = view.copy()
    out[hidden] = view.max() if rng.random() < 0.3 else view.min()
    return standardized(out), hidden


SLANT_DEG = 60.0
"""Largest angle, degrees, between a slanted cut's edge and the square cut across the spine at its end
(:func:`slanted_cut`): a film turned 45 degrees in its frame and brought upright ends along edges at about 45."""

SLANT_DEPTH = (-0.45, 1.0)
"""Where a slanted cut's edge passes, in steps between the end vertebra's centre and its neighbour's, beyond the
end centre (:func:`slanted_cut`): below 0 the end centre is cut away, up to 1 the body is cut or merely touched."""


def slanted_cut(view: np.ndarray, centres: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A film that was turned in its frame and brought upright: everything beyond a straight edge slanted up to
    :data:`SLANT_DEG` from square across the spine, near the first or the last vertebra in the view (passing
    :data:`SLANT_DEPTH` steps beyond its centre), reads as the view's darkest level (the fill of a turned film).

    Args:
        view: (S, S) standardized view.
        centres: (K, 2) grid centres of the vertebrae in anatomical order (NaN where missing).

    Returns:
        The view, and the (S, S) bool mask of what the cut hides (all False with fewer than two centres).
    """
    hidden = np.zeros(view.shape, dtype=bool)
    seen = np.flatnonzero(np.all(np.isfinite(centres), axis=1))
    if len(seen) < 2:
        return view, hidden
    end, near = (seen[0], seen[1]) if rng.random() < 0.5 else (seen[-1], seen[-2])
    outward = centres[end] - centres[near]
    step = float(np.linalg.norm(outward))
    if step < 1e-6:
        return view, hidden
    angle = np.deg2rad(rng.uniform(-SLANT_DEG, SLANT_DEG))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    normal = rotation @ (outward / step)
    depth = rng.uniform(*SLANT_DEPTH) * step
    rows, columns = np.indices(view.shape)
    hidden = (columns - centres[end][0]) * normal[0] + (rows - centres[end][1]) * normal[1] > depth
    out = view.copy()
    out[hidden] = view.min()
    return standardized(out), hidden


def markers(view: np.ndarray, rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    """Burnt-in text and lead markers: one to three short strings or solid squares, bright, at least 8 input
    pixels from every point of ``avoid`` (K, 2) (grid x, y of the vertebra centres; NaN rows ignored)."""
    height, width = view.shape
    ink = np.zeros(view.shape, dtype=np.uint8)
    bright = float(view.max()) + rng.uniform(0.0, 1.0)
    keep = avoid[np.all(np.isfinite(avoid), axis=1)]
    for _ in range(int(rng.integers(1, 4))):
        x, y = rng.uniform(4, width - 20), rng.uniform(10, height - 4)
        if len(keep) and np.min(np.hypot(keep[:, 0] - x, keep[:, 1] - y)) < 8 + min(height, width) / 10:
            continue
        if rng.random() < 0.6:
            text = "".join(rng.choice(list("LRAPSUPINE0123456789"), size=int(rng.integers(1, 5))))
            cv2.putText(ink, text, (int(x), int(y)), cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.2, 0.45)),
                        255, 1, cv2.LINE_AA)
        else:
            side = int(rng.integers(2, 6))
            ink[int(y) - side:int(y), int(x):int(x) + side] = 255
    alpha = ink.astype(np.float32) / 255.0
    return standardized(view * (1 - alpha) + bright * alpha)


def vary_appearance(view: np.ndarray, rng: np.random.Generator,
                    centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A random subset of the appearance changes, in the order a film acquires them.

    Args:
        view: (S, S) standardized view.
        centres: (K, 2) grid centres of the vertebrae in the view (NaN where missing), kept free of markers.

    Returns:
        The changed view and the (S, S) bool mask hidden by collimator blades (all False without blades).
    """
    hidden = np.zeros(view.shape, dtype=bool)
    out = view.astype(np.float32)
    if rng.random() < 0.5:
        out = gamma(out, rng)
    if rng.random() < 0.3:
        out = haze(out, rng)
    if rng.random() < 0.15:
        out = grid_lines(out, rng)
    if rng.random() < 0.3:
        out = blur(out, rng)
    if rng.random() < 0.4:
        out = noise(out, rng)
    if rng.random() < 0.25:
        out, hidden = collimate(out, rng)
    if rng.random() < 0.3:
        out = markers(out, rng, centres)
    return out, hidden
