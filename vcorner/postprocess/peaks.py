"""Centre detector maps -> named centres: the sub-pixel peak of each name's spatial probability map and the
probability mass around it (README.md, "Automatic centres").

Each channel of the detector is a spatial probability map (it sums to 1). Where the vertebra is in the image
the network puts its mass in a small blob; where it is not (cropped, hidden, no spine at all) it was trained to
spread it evenly. So the mass within ``peak_radius_px`` of the maximum is the detection's confidence: about
0.9 for a clear vertebra, about ``pi r^2 / S^2`` (0.002 at S = 128, r = 3) for a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vcorner.geometry.letterbox import to_image


@dataclass(frozen=True, eq=False)
class Detection:
    """One named centre found by the detector.

    Attributes:
        name: vertebra name of the channel.
        xy: (2,) centre in image pixels.
        confidence: probability mass of the map within the peak window, in [0, 1].
    """

    name: str
    xy: np.ndarray
    confidence: float


def window_peaks(maps: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel peak and peak mass of each map.

    Args:
        maps: (K, S, S) non-negative maps, each summing to 1.
        radius: window radius around each map's maximum, pixels.

    Returns:
        (K, 2) weighted centroids (x, y) of the windows, grid pixels; (K,) mass inside each window.
    """
    k, height, width = maps.shape
    flat = maps.reshape(k, -1)
    top = np.argmax(flat, axis=1)
    ty, tx = np.divmod(top, width)
    yy, xx = np.mgrid[0:height, 0:width]
    inside = (xx[None] - tx[:, None, None]) ** 2 + (yy[None] - ty[:, None, None]) ** 2 <= radius**2
    weights = np.where(inside, maps, 0.0).astype(np.float64)
    mass = weights.sum(axis=(1, 2))
    safe = np.maximum(mass, 1e-12)
    cx = (weights * xx[None]).sum(axis=(1, 2)) / safe
    cy = (weights * yy[None]).sum(axis=(1, 2)) / safe
    centroid = np.where(mass[:, None] > 0, np.stack([cx, cy], axis=1), np.stack([tx, ty], axis=1).astype(float))
    return centroid, np.clip(mass, 0.0, 1.0)


def blob_candidates(total: np.ndarray, radius: float, most: int, floor: float) -> np.ndarray:
    """(J, 2) integer (x, y) maxima of ``total`` (S, S), strongest first, each at least ``2 * radius`` from the
    others (non-maximum suppression), down to a window mass of ``floor``; at most ``most``."""
    work = total.astype(np.float64).copy()
    yy, xx = np.mgrid[0:work.shape[0], 0:work.shape[1]]
    found = []
    for _ in range(most):
        y, x = np.unravel_index(int(np.argmax(work)), work.shape)
        near = (xx - x) ** 2 + (yy - y) ** 2
        if total[near <= radius**2].sum() < floor:
            break
        found.append((x, y))
        work[near <= (2 * radius) ** 2] = -1.0
    return np.array(found, dtype=np.int64).reshape(-1, 2)


def window_masses(maps: np.ndarray, points: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(K, J) mass of each map within ``radius`` of each point (J, 2), and (K, J, 2) the weighted centroids."""
    k, height, width = maps.shape
    yy, xx = np.mgrid[0:height, 0:width]
    mass = np.zeros((k, len(points)))
    centroid = np.zeros((k, len(points), 2))
    for j, (x, y) in enumerate(points):
        inside = (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
        window = maps[:, inside].astype(np.float64)  # (K, n)
        mass[:, j] = window.sum(axis=1)
        safe = np.maximum(mass[:, j], 1e-12)
        centroid[:, j] = np.stack([window @ xx[inside], window @ yy[inside]], axis=1) / safe[:, None]
        centroid[mass[:, j] <= 0, j] = (x, y)
    return mass, centroid


def spine_order(maps: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Indices sorting ``points`` (J, 2) from the first channel's end of the spine to the last's: along the line
    from the mass centre of the first map to that of the last."""
    k, height, width = maps.shape
    yy, xx = np.mgrid[0:height, 0:width]
    first = np.array([(maps[0] * xx).sum(), (maps[0] * yy).sum()])
    last = np.array([(maps[-1] * xx).sum(), (maps[-1] * yy).sum()])
    direction = last - first if k > 1 and np.linalg.norm(last - first) > 1e-6 else np.array([0.0, 1.0])
    return np.argsort(points @ direction, kind="stable")


def decode_detections(maps: np.ndarray, names: tuple[str, ...], affine: np.ndarray,
                      radius: float) -> list[Detection]:
    """Every channel's detection, confidence included, cranial first (the channels' order).

    The names are read as a sequence, not one map at a time: the blobs of all maps together are the
    candidate vertebrae, put in spine order, and the K names go to K consecutive candidates, at the offset that
    gives the most mass of each name's map on its candidate. A map whose mass is split between two
    neighbouring vertebrae so still names the right one when its neighbours' maps agree; its confidence is its
    mass on the chosen candidate (0 where the sequence runs past the candidates).

    Args:
        maps: (K, S, S) detector maps of one image.
        names: K channel names, in spine order.
        affine: (2, 3) input-grid-to-image affine (:func:`vcorner.geometry.letterbox.letterbox_affine`).
        radius: peak window radius, grid pixels.
    """
    k = len(names)
    if k != len(maps):
        raise ValueError(f"{len(maps)} maps for {len(names)} names")
    points = blob_candidates(maps.sum(axis=0), radius, k + 6, floor=0.05)
    if len(points) == 0:
        centroid, mass = window_peaks(maps, radius)
        return [Detection(n, to_image(affine, centroid[i]), float(mass[i])) for i, n in enumerate(names)]
    points = points[spine_order(maps, points)]
    mass, centroid = window_masses(maps, points, radius)
    offsets = range(-(k - 1), len(points))
    scores = [sum(mass[i, i + o] for i in range(k) if 0 <= i + o < len(points)) for o in offsets]
    best = list(offsets)[int(np.argmax(scores))]
    own_centroid, own_mass = window_peaks(maps, radius)
    found = []
    for i, name in enumerate(names):
        j = i + best
        if 0 <= j < len(points):
            found.append(Detection(name, to_image(affine, centroid[i, j]), float(np.clip(mass[i, j], 0.0, 1.0))))
        else:  # the sequence runs past the candidates: this name is not in the image
            found.append(Detection(name, to_image(affine, own_centroid[i]), 0.0))
    return found


def split_confident(found: list[Detection], min_confidence: float) -> tuple[list[Detection], list[Detection]]:
    """(kept, dropped): detections at or above ``min_confidence`` and those below it, order kept."""
    good = [d.confidence >= min_confidence and bool(np.all(np.isfinite(d.xy))) for d in found]
    pairs = list(zip(found, good, strict=True))
    return [d for d, ok in pairs if ok], [d for d, ok in pairs if not ok]
