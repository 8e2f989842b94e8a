"""Every measurement of one image with a 95% interval, by Monte Carlo over the corners' uncertainty ellipses.

The corners' covariances (``corners.csv``: sd_major_px, sd_minor_px, angle_deg; the prior's own covariance
for a prior fallback, which so widens the intervals it enters) define independent Gaussians; ``samples``
draws of all corners at once (seeded by the image name, so a re-run gives the same intervals) go through the
same functions as the found corners (:mod:`vcorner.measure.definitions`), and each interval is the 2.5th to
97.5th percentile of its measure over the draws. The percentile interval was chosen over the basic
(reflected) one on validation phantoms, where it held 93.4% of the annotated values against 89.7%; the
reflected interval held only 60% for height loss, whose value the network's corners bias low (README.md,
Measurements).

The Cobb angle is a maximum over pairs of endplates: taken anew in every draw, the maximum of noisy angles is
biased upward and its percentile interval sits above the truth (47.7% coverage on 128 real AP films); see
:func:`cobb_with_interval` for the estimator used instead.

The corners' ellipses are calibrated to hold 95% of an annotator's clicks, so the intervals are those of a reader's
measure. Where the card knows that reader's own spread about the true corners (``trust.reader_sd_mm``), a second
pair of bounds, ``anatomy_ci95_low/high``, comes from draws whose covariances have it taken out
(:func:`anatomy_covariance`): the interval of the patient's true value (README.md, Measurements).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from vcorner.geometry.sequence import spine_levels
from vcorner.measure import definitions as d

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 2000
Spacing = float | tuple[float, float] | None
"""A pixel spacing in mm: one number, (x, y) per axis (a DICOM with anisotropic PixelSpacing), or None (px)."""
SLIP_MM = 3.0
"""A slip whose 95% interval lies beyond this many mm (either way) is flagged ``slip``, one whose interval reaches it
``possible_slip`` (mm only: pixels without a spacing are not flagged)."""


@dataclass(frozen=True)
class Measurement:
    """One row of ``measurements.csv``."""

    image: str
    measure: str
    level: str
    value: float
    unit: str
    ci95_low: float
    ci95_high: float
    flags: str = ""
    anatomy_low: float | None = None
    anatomy_high: float | None = None


@dataclass(frozen=True)
class ImageCorners:
    """The corners of one image as ``corners.csv`` gives them.

    Attributes:
        image: path relative to DIR.
        names: V vertebra names, cranial first.
        xy: (V, 4, 2) corners, pixels.
        cov: (V, 4, 2, 2) covariances, px^2.
        network: (V, 4) True where the network found the corner (False: prior fallback or outside).
        flags: V tuples of each vertebra's flags (corners.csv's ``flags``; README.md, "Flags"); empty: none.
    """

    image: str
    names: tuple[str, ...]
    xy: np.ndarray
    cov: np.ndarray
    network: np.ndarray
    flags: tuple[tuple[str, ...], ...] = ()

    def base_flags(self, *indices: int) -> list[str]:
        """The flags every measure of the vertebrae ``indices`` carries: ``prior_corner`` when one of their
        corners is not the network's, then their own flags (:attr:`flags`), each once."""
        prior = ["prior_corner"] if any(not self.network[i].all() for i in indices) else []
        own = [f for i in indices if i < len(self.flags) for f in self.flags[i]]
        return list(dict.fromkeys(prior + own))


def sample_corners(xy: np.ndarray, cov: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """(samples, V, 4, 2) draws of corners ``xy`` (V, 4, 2) from their covariances (V, 4, 2, 2)."""
    root = np.linalg.cholesky(cov + 1e-9 * np.eye(2))  # lower triangular: [[a, 0], [b, c]]
    z = rng.standard_normal((2, samples, *xy.shape[:-1]))
    dx = root[..., 0, 0] * z[0]
    dy = root[..., 1, 0] * z[0] + root[..., 1, 1] * z[1]
    return xy + np.stack([dx, dy], axis=-1)


ANATOMY_FLOOR = 0.03
"""The share of each of a corner's two variances that :func:`anatomy_covariance` keeps at least, where the reader's
spread would take out (nearly) all of it. Chosen on 700 clinical validation phantoms (seeds 2929, 5252 and 5253,
pooled, against their ``truth.json``; reader spread 0.35 mm) among 0-0.2 as the floor whose anatomy intervals come
nearest 95% for heights, listhesis and angles: 94.5%, 95.6%, 95.7% (0: 86-91%; 0.05: 96-97%; README.md,
Measurements)."""


def anatomy_covariance(cov: np.ndarray, reader_px: tuple[float, float] | np.ndarray,
                       floor: float = ANATOMY_FLOOR) -> np.ndarray:
    """(..., 2, 2) covariances, px^2, of the found corners about the true ones: ``cov`` (about a reader's clicks)
    less the reader's own spread ``reader_px`` (sd along x and y, px), each eigenvalue kept at least ``floor``
    times the matching (sorted) eigenvalue of ``cov``."""
    reader = np.diag(np.square(np.asarray(reader_px, dtype=np.float64)))
    w_cov = np.linalg.eigvalsh(cov)
    w, v = np.linalg.eigh(cov - reader)
    w = np.maximum(w, floor * w_cov)
    return np.einsum("...ij,...j,...kj->...ik", v, w, v)


def _intervals(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M,) 95% interval bounds of M measures from their (1 + S, M) values (row 0: the value, then the S
    Monte Carlo draws): the 2.5th and 97.5th percentiles of the draws."""
    low, high = np.percentile(values[1:], [2.5, 97.5], axis=0)
    return low, high


GENANT_POSSIBLE_PERCENTILE = 70.0
"""``possible_genant_N`` is raised when this percentile of the height loss's draws reaches grade N's threshold that
its 95% interval does not lie above (97.5 would be: the interval straddles it). Chosen with the shipped model on 700
clinical validation phantoms (seeds 2929, 5252 and 5253, pooled) as the highest sensitivity at a specificity of at
least 95%, among 60-90 (README.md, Measurements: ``benchmarks/pathology_flags.py VAL --possible 60 65 ... 90``)."""
SLIP_POSSIBLE_PERCENTILE = 90.0
"""``possible_slip`` likewise, for the slip's draws and :data:`SLIP_MM`, chosen the same way (ties in sensitivity
go to the higher specificity)."""


def _percentiles(values: np.ndarray, possible: float) -> tuple[float, float, float, float]:
    """2.5th, 97.5th, ``100 - possible``-th and ``possible``-th percentiles of (1 + S,) values' draws (the value
    itself when there are none)."""
    values = np.asarray(values, dtype=np.float64)
    draws = values[1:] if len(values) > 1 else values[:1]
    low, high, down, up = np.percentile(draws, [2.5, 97.5, 100.0 - possible, possible])
    return float(low), float(high), float(down), float(up)


def genant_flags(loss_pct: np.ndarray, possible: float = GENANT_POSSIBLE_PERCENTILE) -> list[str]:
    """Flags of one vertebra's height loss, percent, (1 + S,) value and draws: ``genant_N`` for the highest grade N
    whose threshold (:data:`vcorner.measure.definitions.GENANT_LOSS`) the whole 95% interval reaches, and
    ``possible_genant_M`` for a higher grade M whose threshold only the ``possible``-th percentile of the draws
    reaches; none when that percentile lies below 20%."""
    low, _, _, up = _percentiles(loss_pct, possible)
    thresholds = 100.0 * np.asarray(d.GENANT_LOSS)
    sure, maybe = int(np.sum(thresholds <= low)), int(np.sum(thresholds <= up))
    return ([f"genant_{sure}"] if sure else []) + ([f"possible_genant_{maybe}"] if maybe > sure else [])


def slip_flags(slip_mm: np.ndarray, possible: float = SLIP_POSSIBLE_PERCENTILE) -> list[str]:
    """Flags of one pair's slip, mm, (1 + S,) value and draws: ``slip`` when the whole 95% interval lies at or beyond
    :data:`SLIP_MM` (anterior or posterior), else ``possible_slip`` when the ``possible``-th percentile of the draws
    reaches it (or the ``100 - possible``-th reaches ``-SLIP_MM``)."""
    low, high, down, up = _percentiles(slip_mm, possible)
    if low >= SLIP_MM or high <= -SLIP_MM:
        return ["slip"]
    return ["possible_slip"] if up >= SLIP_MM or down <= -SLIP_MM else []


def adjacent_pairs(names: Sequence[str]) -> list[int]:
    """Indices i of the pairs (i, i + 1) that are neighbours on the spine (anatomical names one level apart;
    any consecutive pair for other names)."""
    levels = spine_levels(names)
    return [i for i in range(len(names) - 1) if levels is None or levels[i + 1] - levels[i] == 1]


def measure_image(corners: ImageCorners, spacing_mm: Spacing, anterior: str = "right", ap: bool = False,
                  samples: int = DEFAULT_SAMPLES,
                  possible: tuple[float, float] = (GENANT_POSSIBLE_PERCENTILE, SLIP_POSSIBLE_PERCENTILE),
                  reader_sd_mm: float = 0.0) -> list[Measurement]:
    """Every measure of one image with its 95% interval (README.md, Measurements, defines them); with ``ap``
    (an AP film) only those an AP film defines (:data:`AP_MEASURES`; ``anterior`` is then unused).

    Lengths are in mm with ``spacing_mm``, else in px (never a guessed millimetre). With an anisotropic
    spacing (x, y) the corners (and their draws) are first stretched by (1, y / x), so that lengths times x
    and the angles are those of the patient, not of a mean spacing. Images with one vertebra
    get only the per-vertebra measures. A value that is not finite (a degenerate vertebra) is left out with
    a warning, never written. ``possible``: the percentiles of the draws that raise a ``possible_`` flag
    (:func:`genant_flags`, :func:`slip_flags`). With ``reader_sd_mm`` (the card's ``trust.reader_sd_mm``) and a
    spacing, each row also gets its anatomy interval (:func:`anatomy_covariance`).
    """
    rows = _measured(corners, corners.cov, spacing_mm, anterior, ap, samples, possible)
    if reader_sd_mm <= 0.0 or not spacing_mm:
        return rows
    sx, sy = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (2,))
    anatomy = {(r.measure, r.level): r for r in _measured(
        corners, anatomy_covariance(corners.cov, (reader_sd_mm / sx, reader_sd_mm / sy)), spacing_mm, anterior, ap,
        samples, possible, warn=False)}
    out = []
    for r in rows:
        a = anatomy.get((r.measure, r.level))
        shift = r.value - a.value if a is not None else 0.0  # the Cobb angle's bias correction differs per pass
        out.append(replace(r, anatomy_low=a.ci95_low + shift, anatomy_high=a.ci95_high + shift) if a else r)
    return out


def _measured(corners: ImageCorners, cov: np.ndarray, spacing_mm: Spacing, anterior: str, ap: bool, samples: int,
              possible: tuple[float, float], warn: bool = True) -> list[Measurement]:
    """:func:`measure_image`'s rows with the corners drawn from ``cov`` (V, 4, 2, 2), px^2 (``warn``: of a measure
    left out)."""
    rng = np.random.default_rng(zlib.crc32(corners.image.encode()))
    draws = sample_corners(corners.xy, cov, samples, rng)
    both = np.concatenate([corners.xy[None], draws])  # index 0: the found corners
    scale, length_unit = 1.0, "px"
    if spacing_mm:
        sx, sy = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (2,))
        scale, length_unit = float(sx), "mm"
        if sy != sx:
            both = both * np.array([1.0, sy / sx])
    names, base = corners.names, corners.base_flags
    labels: list[tuple[str, str, str, list[str]]] = []
    columns: list[np.ndarray] = []

    def add(measure: str, level: str, values: np.ndarray, unit: str, flags: list[str]) -> None:
        labels.append((measure, level, unit, flags))
        columns.append(np.asarray(values, dtype=np.float64))

    if ap:
        _ap_measures(add, both, names, base, scale, length_unit)
        return _rows(corners.image, labels, np.stack(columns, axis=1), warn)
    h = d.heights(both, anterior)
    loss = d.height_loss(h)
    grade = d.genant_grade(loss)
    for v, name in enumerate(names):
        flags = base(v)
        for key in ("anterior_height", "middle_height", "posterior_height"):
            add(key, name, h[key][:, v] * scale, length_unit, flags)
        add("wedge_ratio", name, h["anterior_height"][:, v] / h["posterior_height"][:, v], "ratio", flags)
        add("height_loss", name, 100.0 * loss[:, v], "%", flags)
        grade_flags = genant_flags(100.0 * loss[:, v], possible[0])
        add("genant_grade", name, grade[:, v].astype(float), "grade", flags + grade_flags)
    if len(names) >= 2:
        _pair_measures(add, both, names, base, scale, length_unit, anterior, possible[1])
    return _rows(corners.image, labels, np.stack(columns, axis=1), warn)


AP_MEASURES = ("middle_height", "width", "lateral_tilt", "coronal_angle", "cobb_angle")
"""What ``--ap`` writes: the measures defined on an AP film (README.md, Measurements). Anterior and posterior
heights, wedge ratio, Genant grade and listhesis are sagittal: an AP film does not show them."""


def _ap_measures(add, both: np.ndarray, names: Sequence[str], base, scale: float, length_unit: str) -> None:
    """The measures of an AP film (:data:`AP_MEASURES`) of (1 + S, V, 4, 2) corners, passed to ``add``;
    ``base(*vertebrae)`` gives the flags of measures built on those vertebrae (:meth:`ImageCorners.base_flags`)."""
    middle, width, tilt = d.heights(both)["middle_height"], d.endplate_width(both), d.lateral_tilt(both)
    for v, name in enumerate(names):
        flags = base(v)
        add("middle_height", name, middle[:, v] * scale, length_unit, flags)
        add("width", name, width[:, v] * scale, length_unit, flags)
        add("lateral_tilt", name, tilt[:, v], "deg", flags)
    if len(names) < 2:
        return
    angle = d.coronal_angle(both)
    for i in adjacent_pairs(names):
        add("coronal_angle", f"{names[i]}-{names[i + 1]}", angle[:, i], "deg", base(i, i + 1))
    cobb, upper, lower = cobb_with_interval(both)
    add("cobb_angle", f"{names[upper]}-{names[lower]}", cobb, "deg", base(upper, lower))


def cobb_with_interval(both: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The Cobb angle of (1 + S, V, 4, 2) corners (row 0: found, then S draws), degrees, bias-corrected, and its
    end vertebrae (indices).

    The end vertebrae are chosen once, on the found corners, and every draw measures the angle between those two
    endplates. The found maximum is still the largest of many noisy angles, so it is corrected by the bootstrap
    estimate of that selection bias (the draws' mean maximum over all pairs minus the found value); the draws
    are shifted by the same amount. On simulated spines with known angles (tests/test_measure.py) the 95%
    intervals hold 94-95% of the true angles at corner noise of 0.5-3 px, against 26-86% for the maximum taken
    anew in each draw.
    """
    largest, uppers, lowers = d.cobb_angle(both)  # per row: row 0 chooses the end vertebrae
    upper, lower = int(uppers[0]), int(lowers[0])
    fixed = d.cobb_between(both, upper, lower)
    bias = float(np.mean(largest[1:])) - float(fixed[0]) if len(both) > 1 else 0.0
    return np.maximum(fixed - bias, 0.0), upper, lower


def _rows(image: str, labels: list[tuple[str, str, str, list[str]]], values: np.ndarray,
          warn: bool = True) -> list[Measurement]:
    """Measurement rows of (1 + S, M) ``values``; a measure that is not finite is left out (with a warning)."""
    low, high = _intervals(values)
    rows = []
    for m, (measure, level, unit, flags) in enumerate(labels):
        if not (np.isfinite(values[0, m]) and np.isfinite(low[m]) and np.isfinite(high[m])):
            if warn:
                log.warning("%s: %s of %s is not finite; left out", image, measure, level)
            continue
        rows.append(Measurement(image, measure, level, float(values[0, m]), unit, float(low[m]), float(high[m]),
                                ";".join(flags)))
    return rows


def _pair_measures(add, both: np.ndarray, names: Sequence[str], base, scale: float, length_unit: str,
                   anterior: str, possible: float = SLIP_POSSIBLE_PERCENTILE) -> None:
    """The per-level and per-image measures of (1 + S, V, 4, 2) corners, V >= 2, passed to ``add`` (``base``: as
    for :func:`_ap_measures`)."""
    slip, pct = d.listhesis(both, anterior)
    angle = d.segmental_angle(both, anterior)
    meyerding = d.meyerding_grade(pct)
    for i in adjacent_pairs(names):
        level, flags = f"{names[i]}-{names[i + 1]}", base(i, i + 1)
        slipped = slip_flags(slip[:, i] * scale, possible) if length_unit == "mm" else []
        add("listhesis", level, slip[:, i] * scale, length_unit, flags + slipped)
        add("listhesis_pct", level, pct[:, i], "%", flags)
        add("meyerding_grade", level, meyerding[:, i].astype(float), "grade", flags)
        add("segmental_angle", level, angle[:, i], "deg", flags)
    add("global_angle", f"{names[0]}-{names[-1]}", d.global_angle(both, anterior), "deg", base(*range(len(names))))
