"""Centre detector maps -> named centres: the sub-pixel peak of each name's spatial probability map and the
probability mass around it (README.md, "Automatic centres").

Each channel of the detector is a spatial probability map (it sums to 1). Where the vertebra is in the image
the network puts its mass in a small blob; where it is not (cropped, hidden, no spine at all) it was trained to
spread it evenly. So the mass within ``peak_radius_px`` of the maximum is the detection's confidence: about
0.9 for a clear vertebra, about ``pi r^2 / S^2`` (0.002 at S = 128, r = 3) for a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vcorner.config import DetectionConfig
from vcorner.geometry.letterbox import pixel_step, to_image


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


MIN_SPREAD_PX = 20.0
"""A map spread over fewer pixels than this is degenerate, not a blob. Spread: the participation ratio
``1 / sum p^2`` (4 pi sd^2 for a Gaussian: 28 px at sd 1.5). Measured with the namer shipped before issue #33's
namer change: every map of
the 100 validation phantoms spread over at least 34.6 px; on smooth gradient views without a spine, a nearly
constant activation, normalized, piled its rounding differences on a few pixels, 5.4-12.8 px (one name at
confidence up to 1.0)."""


SUPPRESS_SPACINGS = 0.4
"""With a recorded view geometry (``DetectionConfig.spacing_px``), blobs closer than this many of the closest
typical spacings suppress each other (the closest neighbours of a film sit about 0.8 of its typical spacing
apart, so two true neighbours are always both kept)."""


def decoding_limits(detection: DetectionConfig) -> tuple[float, float]:
    """(suppression radius, smallest spread) of the peak decoding, input pixels, from the view's geometry.

    Without a recorded geometry (``spacing_px`` 0, detectors trained before it was recorded): ``2 x peak_radius_px`` and
    :data:`MIN_SPREAD_PX`, as always. With it: the radius shrinks to :data:`SUPPRESS_SPACINGS` closest spacings
    when that is smaller (a 17-level film in 128 px puts neighbours about 6 px apart, inside a fixed 6 px
    radius), and the spread floor to a quarter of the spread of the narrowest target Gaussian the detector was
    trained on (``pi sd^2``, sd = ``max(sigma x spacing_px, min_sigma_px)``) when that is smaller, so that a
    sharp map of a small vertebra is never taken for a degenerate one."""
    radius = 2.0 * detection.peak_radius_px
    if detection.spacing_px <= 0:
        return radius, MIN_SPREAD_PX
    sd = max(detection.sigma * detection.spacing_px, detection.min_sigma_px)
    return min(radius, SUPPRESS_SPACINGS * detection.spacing_px), min(MIN_SPREAD_PX, float(np.pi * sd**2))


def flatten_degenerate(maps: np.ndarray, min_spread: float = MIN_SPREAD_PX) -> np.ndarray:
    """``maps`` (K, S, S) with every degenerate map (spread under ``min_spread``, :data:`MIN_SPREAD_PX`) replaced
    by a flat one."""
    k = len(maps)
    bad = 1.0 / np.maximum(np.sum(maps.reshape(k, -1).astype(np.float64) ** 2, axis=1), 1e-30) < min_spread
    if not bad.any():
        return maps
    out = maps.copy()
    out[bad] = 1.0 / maps[0].size
    return out


def disc_sums(maps: np.ndarray, radius: float) -> np.ndarray:
    """Per pixel, over the disc of ``radius`` around it: the maps' mass and its first moments.

    Args:
        maps: (K, S, S) maps.

    Returns:
        (3, K, S, S) float64 (summed in float32): mass, sum of dx * p and sum of dy * p (dx, dy: offsets from the
        disc's centre); the weighted centroid of the disc at (x, y) is (x, y) + moments / mass. Outside the grid
        counts as 0.
    """
    r = int(np.floor(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float32)
    disc = (dx**2 + dy**2 <= radius**2).astype(np.float32)
    kernels = (disc, disc * dx, disc * dy)
    out = np.empty((3, *maps.shape), dtype=np.float32)
    for k, plane in enumerate(np.ascontiguousarray(maps, dtype=np.float32)):
        for m, kernel in enumerate(kernels):
            out[m, k] = cv2.filter2D(plane, cv2.CV_32F, kernel, borderType=cv2.BORDER_CONSTANT)
    return out.astype(np.float64)


def _centroids(sums: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, J) masses and (K, J, 2) centroids of every map's disc at each of ``points`` (J, 2) integer (x, y)."""
    x, y = points[:, 0], points[:, 1]
    mass = sums[0][:, y, x]
    safe = np.where(mass > 0, mass, 1.0)
    cx = np.where(mass > 0, x + sums[1][:, y, x] / safe, x)
    cy = np.where(mass > 0, y + sums[2][:, y, x] / safe, y)
    return np.clip(mass, 0.0, 1.0), np.stack([cx, cy], axis=-1)


def window_peaks(maps: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel peak and peak mass of each map.

    Args:
        maps: (K, S, S) non-negative maps, each summing to 1.
        radius: window radius around each map's maximum, pixels.

    Returns:
        (K, 2) weighted centroids (x, y) of the windows, grid pixels; (K,) mass inside each window.
    """
    return _own_peaks(maps, disc_sums(maps, radius))


def _own_peaks(maps: np.ndarray, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) centroid and (K,) mass of each map's disc at its own maximum, from its :func:`disc_sums`."""
    k, _, width = maps.shape
    top = np.argmax(maps.reshape(k, -1), axis=1)
    mass, centroid = _centroids(sums, np.stack([top % width, top // width], axis=1))
    index = np.arange(k)
    return centroid[index, index], mass[index, index]


def blob_candidates(total: np.ndarray, radius: float, most: int, floor: float,
                    suppress: float | None = None) -> np.ndarray:
    """(J, 2) integer (x, y) maxima of ``total`` (S, S), strongest first, each more than ``suppress`` (default
    ``2 * radius``) from the others (non-maximum suppression), down to a window mass of ``floor``; at most
    ``most``.

    ``total`` is a disc-summed map (:func:`disc_sums`), so a maximum is where the window holds the most mass."""
    work = total.astype(np.float64).copy()
    height, width = work.shape
    suppress = 2 * radius if suppress is None else suppress
    reach = int(np.ceil(suppress))
    found = []
    for _ in range(most):
        y, x = np.unravel_index(int(np.argmax(work)), work.shape)
        if total[y, x] < floor:
            break
        found.append((x, y))
        y0, y1, x0, x1 = max(y - reach, 0), min(y + reach + 1, height), max(x - reach, 0), min(x + reach + 1, width)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        work[y0:y1, x0:x1][(xx - x) ** 2 + (yy - y) ** 2 <= suppress**2] = -1.0
    return np.array(found, dtype=np.int64).reshape(-1, 2)


def spine_order(maps: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Indices sorting candidate ``points`` (J, 2) along the spine, from the first channel's end to the last's.

    The axis is the candidates' principal direction (the spine's line); its sense is the one in which the maps'
    mass centres advance with the channel index (:func:`channel_slope`), so that names missing from the film (flat
    maps, their centres at the view's middle) cannot turn it; down the image (y) when the maps do not tell.
    """
    k = len(maps)
    if len(points) < 2:
        return np.arange(len(points))
    centred = points - points.mean(axis=0)
    axis = np.linalg.svd(centred.astype(np.float64), full_matrices=False)[2][0]
    sense = channel_slope(maps, axis) if k > 1 else 0.0
    if abs(sense) < 1.0:
        sense = float(axis[1])
    return np.argsort(points @ (axis if sense >= 0 else -axis), kind="stable")


def channel_slope(maps: np.ndarray, axis: np.ndarray) -> float:
    """Grid pixels the maps' mass centres advance along ``axis`` (2,) per channel, a least-squares slope over the
    channels, each weighted by its concentration (the sum of its squared map: about 1 / the pixels it spreads
    over), so that a flat map (a name the film does not show) weighs about nothing. (K, S, S) ``maps``."""
    k, height, width = maps.shape
    yy, xx = np.mgrid[0:height, 0:width]
    flat = maps.reshape(k, -1).astype(np.float64)
    centres = np.stack([flat @ xx.ravel(), flat @ yy.ravel()], axis=1) / np.maximum(flat.sum(axis=1), 1e-30)[:, None]
    along = centres @ axis
    weight = np.sum(flat**2, axis=1)
    index = np.arange(k, dtype=np.float64)
    mean_index, mean_along = np.average(index, weights=weight), np.average(along, weights=weight)
    spread = float(np.sum(weight * (index - mean_index) ** 2))
    return float(np.sum(weight * (index - mean_index) * (along - mean_along)) / spread) if spread > 0 else 0.0


def monotone_assignment(mass: np.ndarray) -> list[int | None]:
    """The candidate of each name, in order, maximizing the total mass: names and candidates both run along the
    spine, so name ``i + 1`` only takes a candidate after name ``i``'s; a name or a candidate may stay unmatched.

    Args:
        mass: (K, J) mass of each name's map on each candidate (candidates in spine order).

    Returns:
        K candidate indices, None for a name left unmatched.
    """
    k, j = mass.shape
    best = np.zeros((k + 1, j + 1))
    for a in range(1, k + 1):
        for b in range(1, j + 1):
            best[a, b] = max(best[a, b - 1], best[a - 1, b], best[a - 1, b - 1] + mass[a - 1, b - 1])
    chosen: list[int | None] = [None] * k
    a, b = k, j
    while a > 0 and b > 0:
        if best[a, b] == best[a - 1, b - 1] + mass[a - 1, b - 1] and mass[a - 1, b - 1] > 0:
            chosen[a - 1] = b - 1
            a, b = a - 1, b - 1
        elif best[a, b] == best[a - 1, b]:
            a -= 1
        else:
            b -= 1
    return chosen


SHORT_GAP = 0.75
"""Two names ``g`` levels apart (a name between them left unmatched) whose candidates are closer than this many
times ``g`` typical steps sit on neighbouring vertebrae (a skipped vertebra puts them about ``g`` steps apart)."""


def closed_gaps(mass: np.ndarray, chosen: list[int | None], points: np.ndarray, floor: float = 0.0
                ) -> tuple[list[int | None], bool]:
    """``chosen`` with every gap in its names that spans a single step closed (:data:`SHORT_GAP`), and whether one
    was.

    :func:`monotone_assignment` may leave a name out between two neighbouring vertebrae when the next name's map
    holds the lower one best (a namer that calls the last body of a film "C7" whatever it is): the names past the
    gap are then one level off. The gap is closed by shifting the names on one side of it towards the other, the
    side whose shifted names hold more mass.

    Args:
        mass: (K, J) mass of each name's map on each candidate.
        chosen: K candidate indices from :func:`monotone_assignment` (None: unmatched).
        points: (J, 2) candidate positions, grid pixels.
        floor: names whose mass on their candidate is at or below this take no part (dropped detections).
    """
    chosen = list(chosen)
    k = len(chosen)
    closed = False
    for _ in range(k):
        named = [(i, j) for i, j in enumerate(chosen) if j is not None and mass[i, j] > max(floor, 0.0)]
        if len(named) < 3:
            return chosen, closed
        levels = np.array([i for i, _ in named], dtype=np.float64)
        lengths = np.linalg.norm(np.diff(points[[j for _, j in named]].astype(np.float64), axis=0), axis=1)
        step = float(np.median(lengths / np.diff(levels)))
        gaps = [n for n in range(len(named) - 1) if named[n + 1][0] - named[n][0] > 1
                and lengths[n] < SHORT_GAP * (named[n + 1][0] - named[n][0]) * step]
        if not gaps or step <= 0:
            return chosen, closed
        closed = True
        n = gaps[0]
        shift = named[n + 1][0] - named[n][0] - 1
        before, after = named[: n + 1], named[n + 1:]
        options = []
        if after[-1][0] - shift >= 0:
            options.append(([(i - shift, j) for i, j in after], before))
        if before[-1][0] + shift < k:
            options.append(([(i + shift, j) for i, j in before], after))
        pairs = max((moved + kept for moved, kept in options), key=lambda o: sum(mass[i, j] for i, j in o))
        weak = [(i, j) for i, j in enumerate(chosen) if j is not None and (i, j) not in named]
        chosen = [None] * k
        for i, j in sorted(pairs):
            chosen[i] = j
        for i, j in weak:  # a name too weak to count keeps its candidate where that stays in order
            lower = [c for c in chosen[:i] if c is not None]
            upper = [c for c in chosen[i + 1:] if c is not None]
            if chosen[i] is None and all(c < j for c in lower) and all(c > j for c in upper):
                chosen[i] = j
    return chosen, closed


def decode_detections(maps: np.ndarray, names: tuple[str, ...], affine: np.ndarray, radius: float,
                      suppress: float | None = None, min_spread: float = MIN_SPREAD_PX) -> list[Detection]:
    """Every channel's detection, confidence included, cranial first (the channels' order): the detections of
    :func:`decode_named`."""
    return decode_named(maps, names, affine, radius, suppress=suppress, min_spread=min_spread)[0]


def decode_named(maps: np.ndarray, names: tuple[str, ...], affine: np.ndarray, radius: float,
                 min_confidence: float = 0.0, suppress: float | None = None,
                 min_spread: float = MIN_SPREAD_PX, close_gaps: bool = False) -> tuple[list[Detection], float]:
    """Every channel's detection, confidence included, cranial first (the channels' order), and the naming's
    margin over the names found at ``min_confidence`` or more (:func:`naming_margin`; NaN when fewer than two).

    The names are read as a sequence, not one map at a time: the blobs of all maps together are the candidate
    vertebrae, put in spine order, and the names go to candidates in the same order (:func:`monotone_assignment`),
    so that two names whose maps both split between the same two neighbouring vertebrae still land one on each.
    A name's confidence is its map's mass on its candidate (0 when it has none: the name is not in the image).

    Args:
        maps: (K, S, S) detector maps of one image.
        names: K channel names, in spine order.
        affine: (2, 3) input-grid-to-image affine (:func:`vcorner.geometry.letterbox.letterbox_affine`).
        radius: peak window radius, grid pixels.
        suppress: non-maximum suppression radius between candidates, grid pixels (default ``2 * radius``).
        min_spread: maps spread over fewer grid pixels are degenerate (:func:`flatten_degenerate`).
    """
    k = len(names)
    if k != len(maps):
        raise ValueError(f"{len(maps)} maps for {len(names)} names")
    maps = flatten_degenerate(maps, min_spread)
    sums = disc_sums(maps, radius)
    own_centroid, own_mass = _own_peaks(maps, sums)
    points = blob_candidates(sums[0].sum(axis=0), radius, 3 * k, floor=0.05, suppress=suppress)
    if len(points) == 0:
        return ([Detection(n, to_image(affine, own_centroid[i]), float(own_mass[i])) for i, n in enumerate(names)],
                float("nan"))
    points = points[spine_order(maps, points)]
    mass, centroid = _centroids(sums, points)
    chosen, closed = monotone_assignment(mass), False
    if close_gaps:
        chosen, closed = closed_gaps(mass, chosen, points, min_confidence)
    found = []
    for i, (name, j) in enumerate(zip(names, chosen, strict=True)):
        if j is None:  # no candidate left for this name: it is not in the image
            found.append(Detection(name, to_image(affine, own_centroid[i]), 0.0))
        else:
            found.append(Detection(name, to_image(affine, centroid[i, j]), float(np.clip(mass[i, j], 0.0, 1.0))))
    margin = naming_margin(mass, chosen, min_confidence)
    return found, min(margin, 0.0) if closed else margin  # a closed gap is a guess: the levels stay uncertain


def naming_margin(mass: np.ndarray, chosen: list[int | None], floor: float = 0.0) -> float:
    """How much better the chosen names fit the maps than the same candidates named one level up or down.

    With ``m[i, j]`` the mass of name i's map on candidate j and ``j_i`` the candidate name i took, a naming
    shifted by ``d`` levels scores ``sum_i m[i + d, j_i]``; the margin is the chosen naming's score minus the
    better of the shifts by one level (up or down), per named candidate: about 0.9 where every map holds its
    own vertebra alone, 0 where the maps cannot tell a vertebra from its neighbour (README.md, "Flags").

    Args:
        mass: (K, J) mass of each name's map on each candidate.
        chosen: K candidate indices from :func:`monotone_assignment` (None: unmatched).
        floor: names whose mass on their candidate is below this take no part (dropped detections).

    Returns:
        The margin in [-1, 1]; NaN when fewer than two names have a candidate.
    """
    named = [(i, j) for i, j in enumerate(chosen) if j is not None and mass[i, j] > max(floor, 0.0)]
    if len(named) < 2:
        return float("nan")
    k = len(mass)

    def score(shift: int) -> float:
        return float(sum(mass[i + shift, j] for i, j in named if 0 <= i + shift < k))

    return (score(0) - max(score(-1), score(1))) / len(named)


def decode_view(maps: np.ndarray, names: tuple[str, ...], affine: np.ndarray,
                detection: DetectionConfig) -> tuple[list[Detection], float]:
    """:func:`decode_named` with a detector card's settings: its peak radius, its confidence threshold (for the
    naming margin) and the limits that follow its view's geometry (:func:`decoding_limits`)."""
    suppress, min_spread = decoding_limits(detection)
    return decode_named(maps, names, affine, detection.peak_radius_px, detection.min_confidence, suppress, min_spread)


def decode_spaced(maps: np.ndarray, names: tuple[str, ...], affine: np.ndarray,
                  detection: DetectionConfig, close_gaps: bool = False) -> tuple[list[Detection], float, bool]:
    """:func:`decode_view`, then again with the suppression radius at :data:`SUPPRESS_SPACINGS` of the film's own
    spacing (:func:`film_spacing`) where that is larger than the card's: two names on one vertebra of a film
    larger in the view than the card's typical one merge. Returns the detections, the margin, and whether the
    names rest on the merge (:func:`rests_on_merge`: flag them)."""
    suppress, min_spread = decoding_limits(detection)
    found, margin = decode_named(maps, names, affine, detection.peak_radius_px, detection.min_confidence, suppress,
                                 min_spread, close_gaps)
    if detection.spacing_px <= 0:
        return found, margin, False
    own = SUPPRESS_SPACINGS * film_spacing(found, affine, detection.min_confidence)
    if own <= suppress * 1.05:
        return found, margin, False
    again, again_margin = decode_named(maps, names, affine, detection.peak_radius_px, detection.min_confidence, own,
                                       min_spread, close_gaps)
    sure = detection.min_confidence
    if all((a.confidence >= sure) == (b.confidence >= sure) and (a.confidence < sure or np.allclose(a.xy, b.xy))
           for a, b in zip(found, again, strict=True)):
        return found, margin, False
    return again, again_margin, rests_on_merge(found, again, names, own * pixel_step(affine), sure)


def rests_on_merge(found: list[Detection], again: list[Detection], names: tuple[str, ...], radius: float,
                   sure: float) -> bool:
    """Whether the names confident in ``again`` (a second decoding merging blobs within ``radius`` image pixels)
    rest on the merge of ``found`` into it (:func:`decode_spaced`): one was moved or made confident by it, or a
    name it dropped below ``sure`` was not outvoted (a name kept within ``radius`` of it, at least :data:`OUTVOTED`
    times as confident: two names alike on one vertebra cannot be told apart by a merge), or it lies between two
    kept names (C6 dropped between C5 and C7: C7 may sit on C6's vertebra)."""
    pairs = list(zip(found, again, strict=True))
    if any(b.confidence >= sure and (a.confidence < sure or not np.allclose(a.xy, b.xy)) for a, b in pairs):
        return True
    kept = [b for b in again if b.confidence >= sure]
    order = {name: i for i, name in enumerate(names)}
    ends = (min(order[b.name] for b in kept), max(order[b.name] for b in kept)) if kept else (0, -1)
    return not all(not ends[0] < order[a.name] < ends[1]  # a hole between kept names: which one is where is unknown
                   and any(np.linalg.norm(np.asarray(b.xy) - a.xy) <= radius
                           and b.confidence >= OUTVOTED * a.confidence for b in kept)
                   for a, b in pairs if a.confidence >= sure > b.confidence)


OUTVOTED = 2.0
"""A name the merge of :func:`decode_spaced` drops is outvoted, and the merge needs no flag, when a name it keeps
within the merge radius is at least this many times as confident (its map holds that much more of the blob)."""


def film_spacing(found: list[Detection], affine: np.ndarray, min_confidence: float) -> float:
    """Median distance between consecutive confident detections, input-grid pixels (0 with fewer than three)."""
    xy = [d.xy for d in found if d.confidence >= min_confidence]
    if len(xy) < 3:
        return 0.0
    return float(np.median(np.linalg.norm(np.diff(np.asarray(xy), axis=0), axis=1))) / pixel_step(affine)


def is_sure(detection: Detection, min_confidence: float) -> bool:
    """Whether ``detection`` reaches ``min_confidence`` at a finite place."""
    return detection.confidence >= min_confidence and bool(np.all(np.isfinite(detection.xy)))


def split_confident(found: list[Detection], min_confidence: float,
                    placed: frozenset[str] = frozenset()) -> tuple[list[Detection], list[Detection]]:
    """(kept, dropped): detections at or above ``min_confidence`` and those below it, order kept; a name just past
    either end of the confident run that continues it (:func:`continued_ends`) is kept too, and so are the names in
    ``placed`` (put at a run's end by a second detector: :func:`vcorner.stages.detect.finder_ends`), which are not
    part of the run that is continued."""
    good = [is_sure(d, min_confidence) and d.name not in placed for d in found]
    for i in continued_ends(found, good, min_confidence):
        good[i] = True
    for i, d in enumerate(found):
        good[i] = good[i] or (d.name in placed and is_sure(d, 0.0))
    pairs = list(zip(found, good, strict=True))
    return [d for d, ok in pairs if ok], [d for d, ok in pairs if not ok]


END_OFFSET = 0.2
"""A name below the confidence threshold just past an end of the confident run is kept when its centre lies within
this many level steps of where the run's own step puts that level (a centre a quarter step off already sits on an
endplate; on the validation films every kept one within 0.25 steps was right, one at 0.27 was not)."""

END_FLOOR = 0.5
"""... and when its map holds at least this share of the mass the confidence threshold asks of a name."""


def continued_ends(found: list[Detection], sure: list[bool], min_confidence: float) -> list[int]:
    """Indices of the names just before and just after the run of ``sure`` detections (``found`` in spine order,
    context names left out) that continue it: below the threshold, yet within :data:`END_OFFSET` level steps of the
    place the run's two nearest sure names put them, and with at least :data:`END_FLOOR` of ``min_confidence``.
    This is a vertebra cut by the film's edge (a C7 below the shoulders' line, the last body of a cut film): its map
    is weak because half of it is missing, not because it is not there (README.md, "Automatic centres")."""
    kept = []
    for end, _, expected, step in run_ends(found, sure):
        candidate = found[end]
        if not is_sure(candidate, END_FLOOR * min_confidence):
            continue
        if np.linalg.norm(candidate.xy - expected) <= END_OFFSET * step:
            kept.append(end)
    return kept


def run_ends(found: list[Detection], sure: list[bool]) -> list[tuple[int, int, np.ndarray, float]]:
    """For each end of the run of ``sure`` detections (``found`` in spine order) that has a name past it: that name's
    index, the index of the run's name next to it, where the run's step puts it (image pixels: its two nearest sure
    names extended by one level) and the step's length per level (pixels). Empty with fewer than two sure names."""
    index = [i for i, ok in enumerate(sure) if ok]
    if len(index) < 2:
        return []
    ends = []
    for end, near, next_ in ((index[0] - 1, index[0], index[1]), (index[-1] + 1, index[-1], index[-2])):
        if 0 <= end < len(found):
            step = (found[near].xy - found[next_].xy) / (near - next_)
            ends.append((end, near, found[near].xy + step * (end - near), float(np.linalg.norm(step))))
    return ends
