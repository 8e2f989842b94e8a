"""Closed splines through clicked contour points (ground truth and the P2C metric)."""

from __future__ import annotations

import numpy as np


def catmull_rom_closed(points: np.ndarray, samples_per_segment: int = 16) -> np.ndarray:
    """Dense points on the closed centripetal Catmull-Rom spline through ``points``.

    Args:
        points: (K, 2) control points in contour order, K >= 3.
        samples_per_segment: samples between consecutive control points.

    Returns:
        (K * samples_per_segment, 2) points on the curve (the first control point first).
    """
    p = np.asarray(points, dtype=np.float64)
    p0, p1, p2, p3 = np.roll(p, 1, 0), p, np.roll(p, -1, 0), np.roll(p, -2, 0)

    def knot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.maximum(np.linalg.norm(b - a, axis=1), 1e-9) ** 0.5

    t1 = knot(p0, p1)
    t2 = t1 + knot(p1, p2)
    t3 = t2 + knot(p2, p3)
    s = np.linspace(0.0, 1.0, samples_per_segment, endpoint=False)
    t = (t1[:, None] + s[None, :] * (t2 - t1)[:, None])[..., None]  # (K, S, 1)
    t1, t2, t3 = t1[:, None, None], t2[:, None, None], t3[:, None, None]
    p0, p1, p2, p3 = (q[:, None, :] for q in (p0, p1, p2, p3))
    a1 = ((t1 - t) * p0 + t * p1) / t1
    a2 = ((t2 - t) * p1 + (t - t1) * p2) / (t2 - t1)
    a3 = ((t3 - t) * p2 + (t - t2) * p3) / (t3 - t2)
    b1 = ((t2 - t) * a1 + t * a2) / t2
    b2 = ((t3 - t) * a2 + (t - t1) * a3) / (t3 - t1)
    curve = ((t2 - t) * b1 + (t - t1) * b2) / (t2 - t1)
    return curve.reshape(-1, 2)


def resample_closed(curve: np.ndarray, spacing: float) -> np.ndarray:
    """Resample a closed polyline (M, 2) at uniform arc length ``spacing`` (same units as the points)."""
    closed = np.concatenate([curve, curve[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(np.ceil(arc[-1] / max(spacing, 1e-9))), 8)
    s = np.linspace(0.0, arc[-1], n, endpoint=False)
    return np.stack([np.interp(s, arc, closed[:, 0]), np.interp(s, arc, closed[:, 1])], axis=1)


def contour(corners: np.ndarray, boundary: np.ndarray | None, spacing: float = 0.5) -> np.ndarray:
    """The vertebra's outline sampled every ``spacing`` pixels.

    Args:
        corners: (4, 2) corners in the order superior-left, superior-right, inferior-left, inferior-right.
        boundary: (K, 2) clicked contour points in contour order, or None for the quadrilateral fallback.
        spacing: arc-length step, pixels.

    Returns:
        (M, 2) points on the splined boundary, or on the quadrilateral through the corners.
    """
    if boundary is not None and len(boundary) >= 3:
        return resample_closed(catmull_rom_closed(boundary), spacing)
    quad = np.asarray(corners, dtype=np.float64)[[0, 1, 3, 2]]
    return resample_closed(quad, spacing)


def point_to_curve(points: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """(N,) distance from each of (N, 2) points to the closest of the densely sampled (M, 2) curve."""
    d = np.linalg.norm(np.asarray(points)[:, None, :] - curve[None, :, :], axis=2)
    return d.min(axis=1)
