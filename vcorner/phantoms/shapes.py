"""Small pure geometry helpers for phantom outlines (numpy only; units are whatever the caller uses)."""

from __future__ import annotations

import numpy as np


def rotation(angle: float) -> np.ndarray:
    """(2, 2) rotation by ``angle`` radians in image axes (x right, y down: positive turns clockwise)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def place(points: np.ndarray, angle: float, shift: np.ndarray | tuple[float, float]) -> np.ndarray:
    """(N, 2) points rotated by ``angle`` about the origin, then translated by ``shift``."""
    return np.asarray(points, dtype=np.float64) @ rotation(angle).T + np.asarray(shift, dtype=np.float64)


def superellipse(half_w: float, half_h: float, exponent: float = 4.0, n: int = 64) -> np.ndarray:
    """(n, 2) closed outline |x/a|^e + |y/b|^e = 1, centred at the origin (a rounded rectangle for large e)."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    return np.stack([half_w * np.sign(c) * np.abs(c) ** (2 / exponent),
                     half_h * np.sign(s) * np.abs(s) ** (2 / exponent)], axis=1)


def ellipse(center: np.ndarray | tuple[float, float], half_w: float, half_h: float, angle: float = 0.0,
            n: int = 48) -> np.ndarray:
    """(n, 2) ellipse outline."""
    return place(superellipse(half_w, half_h, 2.0, n), angle, center)


def arc_length(points: np.ndarray, closed: bool = True) -> np.ndarray:
    """(N,) cumulative length at each vertex (and, when closed, the total is the last + closing edge)."""
    pts = np.vstack([points, points[:1]]) if closed else points
    steps = np.hypot(*np.diff(pts, axis=0).T)
    return np.concatenate([[0.0], np.cumsum(steps)])


def resample(points: np.ndarray, n: int, closed: bool = True) -> np.ndarray:
    """(n, 2) points evenly spaced by arc length along a polyline (closed: the last joins the first)."""
    pts = np.vstack([points, points[:1]]) if closed else np.asarray(points)
    s = arc_length(points, closed)
    targets = np.linspace(0.0, s[-1], n, endpoint=not closed)
    return np.stack([np.interp(targets, s, pts[:, 0]), np.interp(targets, s, pts[:, 1])], axis=1)


def stroke(path: np.ndarray, widths: np.ndarray | float) -> np.ndarray:
    """(2K, 2) closed outline of a band of varying width along a (K, 2) polyline."""
    path = np.asarray(path, dtype=np.float64)
    tangent = np.gradient(path, axis=0)
    tangent /= np.maximum(np.hypot(*tangent.T), 1e-9)[:, None]
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    half = np.broadcast_to(np.asarray(widths, dtype=np.float64), (len(path),))[:, None] / 2
    return np.vstack([path + normal * half, (path - normal * half)[::-1]])


def polyline(points: list[tuple[float, float]] | np.ndarray, n: int = 32) -> np.ndarray:
    """(n, 2) smooth open curve through control points (Catmull-Rom), evenly resampled."""
    return resample(catmull_rom(np.asarray(points, dtype=np.float64), closed=False), n, closed=False)


def catmull_rom(points: np.ndarray, per_segment: int = 12, closed: bool = True) -> np.ndarray:
    """Dense centripetal-free (uniform) Catmull-Rom spline through (K, 2) points.

    Returns:
        (M, 2) points; for ``closed`` the curve returns to the first point (not repeated).
    """
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) < 3:
        return pts.copy()
    ext = np.vstack([pts[-1:], pts, pts[:2]]) if closed else np.vstack([2 * pts[:1] - pts[1:2], pts,
                                                                        2 * pts[-1:] - pts[-2:-1]])
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None]
    segments = len(pts) if closed else len(pts) - 1
    out = []
    for i in range(segments):
        p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
        out.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (3 * p1 - p0 - 3 * p2 + p3) * t**3))
    if not closed:
        out.append(pts[-1:])
    return np.vstack(out)


def centroid(polygon: np.ndarray) -> np.ndarray:
    """(2,) area centroid of a simple closed polygon (vertices not repeated)."""
    x, y = polygon[:, 0], polygon[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2
    if abs(area) < 1e-12:
        return polygon.mean(axis=0)
    return np.array([((x + xn) * cross).sum(), ((y + yn) * cross).sum()]) / (6 * area)


def point_to_polygon_distance(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(N,) distance from each of (N, 2) points to the closed polygon's edges."""
    a = polygon[None, :, :]
    b = np.roll(polygon, -1, axis=0)[None, :, :]
    p = np.asarray(points, dtype=np.float64)[:, None, :]
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    nearest = a + t[..., None] * ab
    return np.hypot(*(p - nearest).transpose(2, 0, 1)).min(axis=1)
