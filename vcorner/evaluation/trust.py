"""Fitting a model card's ``trust`` (README.md, "Flags"; issue #27) on in-style validation images: the constants
of the evidence-grown ellipses (:func:`vcorner.postprocess.plausibility.evidence_covariance`) and the limits of
the ``implausible_shape`` and ``patches_disagree`` flags. Used by ``vcorner tune`` (`cli/tune.py`) and
``benchmarks/trust_calibration.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vcorner.config import TrustConfig
from vcorner.io.records import ImageRecord, InputError
from vcorner.models.card import ModelCard
from vcorner.postprocess.decode import COV_FLOOR_PX2, accumulate_image, decode_accumulated
from vcorner.postprocess.plausibility import height_deviation, patch_scatter, prior_heights, single_patch_corners
from vcorner.stages.prepare import ImageJob

CHI2_95 = 5.991
"""The 95% quantile of the chi-square distribution with 2 degrees of freedom."""
CHI2_50 = 1.386
"""Its 50% quantile."""
SIDE_SHARE = 0.99
"""``trust.side_check`` is set when at least this share of the validation films (and at least 20) read with their
anterior side where their annotated view puts it: a world of lateral films, where the check contradicts at most 1
right film in 100; frontal films, whose sides look alike, leave it off."""
PERCENTILE = 99.8
"""Flag limits sit at this percentile of the validation vertebrae's own measures: about 1 in 500 in-style
vertebrae is flagged."""


@dataclass(frozen=True)
class Evidence:
    """What the validation images show of the network's corners.

    Attributes:
        offset: (N, 2) true minus found position of every network corner with a known truth, pixels.
        size: (N,) its vertebra's size, pixels.
        confidence: (N,) its confidence.
        scatter: (N, 2, 2) scatter of the single patches' corners about it, px^2.
        deviation: (V,) every vertebra's height deviation (:func:`height_deviation`).
        spread: (V,) every vertebra's farthest single-patch network corner, in vertebra sizes.
        sides: (F,) every film's side contrast through its annotated view
            (:func:`vcorner.geometry.sides.film_side`).
    """

    offset: np.ndarray
    size: np.ndarray
    confidence: np.ndarray
    scatter: np.ndarray
    deviation: np.ndarray
    spread: np.ndarray
    sides: np.ndarray = field(default_factory=lambda: np.zeros(0))


def corner_evidence(jobs: Sequence[tuple[ImageJob, ImageRecord]], card: ModelCard) -> Evidence:
    """The :class:`Evidence` of inferred ``jobs`` (maps filled; :func:`vcorner.evaluation.tune.infer_records`)
    decoded with ``card``."""
    out: dict[str, list] = {k: [] for k in ("offset", "size", "confidence", "scatter", "deviation", "spread")}
    for job, record in jobs:
        truth = {v.name: v.corners for v in record.vertebrae}
        accumulated = accumulate_image(job.maps[:, 0], job.affines, job.owner, job.frames, job.shape, card.decode)
        corners = decode_accumulated(accumulated, job.frames, job.names, card.prior, card.decode)
        single = single_patch_corners(job.maps[:, 0], job.affines, job.owner, accumulated, job.frames, job.names,
                                      card.prior, card.decode)
        out["deviation"] += height_deviation(np.stack([v.xy for v in corners]), prior_heights(card.prior,
                                                                                                 job.names)).tolist()
        for i, v in enumerate(corners):
            scatter, farthest = patch_scatter(single[i], v.xy)
            network = np.array([s == "network" for s in v.source])
            size = float(job.frames.sizes[i])
            out["spread"].append(float(np.where(network, farthest, 0.0).max()) / size)
            for k in np.flatnonzero(network):
                if truth.get(v.name) is None:
                    continue
                out["offset"].append(truth[v.name][k] - v.xy[k])
                out["size"].append(size)
                out["confidence"].append(float(v.confidence[k]))
                out["scatter"].append(scatter[k])
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
    if len(arrays["offset"]) < 20:
        raise InputError(f"only {len(arrays['offset'])} network corners with a known truth: too few to fit the "
                         "trust constants (README.md, Flags)")
    sides = np.array([job.side for job, _ in jobs], dtype=np.float64)
    return Evidence(arrays["offset"], arrays["size"], arrays["confidence"], arrays["scatter"].reshape(-1, 2, 2),
                    arrays["deviation"], arrays["spread"], sides[np.isfinite(sides)])


def covariances(data: Evidence, size_sd: float, flat_sd: float, scatter_scale: float) -> np.ndarray:
    """(N, 2, 2) covariances of :func:`vcorner.postprocess.plausibility.evidence_covariance` for every corner."""
    flat = 1.0 - np.clip(data.confidence, 0.0, 1.0)
    variance = (size_sd ** 2 + (flat_sd * flat) ** 2) * data.size ** 2 + COV_FLOOR_PX2
    return variance[:, None, None] * np.eye(2) + scatter_scale ** 2 * data.scatter


def mahalanobis2(data: Evidence, cov: np.ndarray) -> np.ndarray:
    """(N,) squared Mahalanobis distances of the true corners under ``cov`` (N, 2, 2)."""
    return np.einsum("ni,nij,nj->n", data.offset, np.linalg.inv(cov), data.offset)


def grid_likelihood(data: Evidence, size_sd: np.ndarray, flat_sd: np.ndarray,
                    scatter_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean negative log-likelihood (G,) of the true corners and their squared Mahalanobis distances (G, N) for G
    pairs ``size_sd``, ``flat_sd`` (G,) at one ``scatter_scale``: :func:`covariances` in closed form (each one
    ``v I + s^2 S`` with S the 2 x 2 scatter)."""
    flat = 1.0 - np.clip(data.confidence, 0.0, 1.0)
    v = (size_sd[:, None] ** 2 + (flat_sd[:, None] * flat) ** 2) * data.size ** 2 + COV_FLOOR_PX2  # (G, N)
    s2 = scatter_scale ** 2
    a, b, c = (s2 * data.scatter[:, i, j] for i, j in ((0, 0), (0, 1), (1, 1)))
    det = (v + a) * (v + c) - b ** 2
    x, y = data.offset[:, 0], data.offset[:, 1]
    d2 = ((v + c) * x ** 2 - 2 * b * x * y + (v + a) * y ** 2) / det
    return 0.5 * np.mean(d2 + np.log(det), axis=1), d2


def fit_ellipses(data: Evidence) -> tuple[float, float, float]:
    """``(size_sd, flat_sd, scatter_scale)``: the grid point of the largest Gaussian likelihood of the true
    corners, then scaled by one factor so that 95% of them lie inside the 95% ellipses."""
    sizes, flats = (g.ravel() for g in np.meshgrid(np.linspace(0.01, 0.04, 31), np.linspace(0.0, 0.4, 21),
                                                   indexing="ij"))
    best, best_nll = (0.02, 0.0, 0.0), np.inf
    for scale in np.linspace(0, 2, 21):
        nll, _ = grid_likelihood(data, sizes, flats, float(scale))
        i = int(np.argmin(nll))
        if nll[i] < best_nll:
            best, best_nll = (float(sizes[i]), float(flats[i]), float(scale)), float(nll[i])
    factors = np.linspace(0.7, 1.5, 161)
    inside = [float(np.mean(grid_likelihood(data, np.array([f * best[0]]), np.array([f * best[1]]),
                                            f * best[2])[1] <= CHI2_95)) for f in factors]
    factor = float(factors[int(np.argmin(np.abs(np.asarray(inside) - 0.95)))])
    return tuple(round(float(f * factor), 4) for f in best)  # type: ignore[return-value]


def sides_agree(sides: np.ndarray) -> bool:
    """Whether the validation films' side contrasts ``sides`` (F,) show which side is anterior: at least
    :data:`SIDE_SHARE` of them positive, of at least 20 films."""
    return len(sides) >= 20 and float(np.mean(sides > 0.0)) >= SIDE_SHARE


def reader_spread(sets: Sequence[tuple[Path, Sequence[ImageRecord]]]) -> float:
    """The annotator's spread about the true corners, mm per axis (root mean square of x and y), pooled over
    ``sets`` (a folder and the clicked annotations of its images, each against the folder's ``truth.json`` from
    ``vcorner synth``); 0 (unknown) unless every record has its truth and a pixel spacing."""
    from vcorner.io.annotations import read_annotations
    from vcorner.phantoms.dataset import TRUTH_FILE

    offsets = []
    for folder, records in sets:
        if not (Path(folder) / TRUTH_FILE).is_file():
            return 0.0
        truth = {r.file: r for r in read_annotations(Path(folder) / TRUTH_FILE)}
        for record in records:
            known = {v.name: v.corners for v in truth[record.file].vertebrae} if record.file in truth else {}
            if not record.pixel_spacing_mm:
                return 0.0
            for v in record.vertebrae:
                if v.corners is None or known.get(v.name) is None:
                    return 0.0
                offsets.append((v.corners - known[v.name]) * record.pixel_spacing_mm)
    return round(float(np.sqrt(np.mean(np.square(np.concatenate(offsets))))), 4) if offsets else 0.0


def fit_trust(data: Evidence, percentile: float = PERCENTILE) -> tuple[TrustConfig, dict[str, float]]:
    """The card's ``trust`` fitted on ``data``, and what it reaches there (corners, vertebrae, the share of films
    whose sides agree with their view, the share of true corners inside the 50% and 95% ellipses)."""
    size_sd, flat_sd, scatter_scale = fit_ellipses(data)
    trust = TrustConfig(size_sd=size_sd, flat_sd=flat_sd, scatter_scale=scatter_scale,
                        height_limit=round(float(np.percentile(data.deviation, percentile)), 4),
                        spread_limit=round(float(np.percentile(data.spread, percentile)), 4),
                        side_check=sides_agree(data.sides))
    d2 = mahalanobis2(data, covariances(data, size_sd, flat_sd, scatter_scale))
    return trust, {"corners": len(data.offset), "vertebrae": len(data.deviation), "percentile": percentile,
                   "sides_agree": float(np.mean(data.sides > 0.0)) if len(data.sides) else float("nan"),
                   "inside_95": float(np.mean(d2 <= CHI2_95)), "inside_50": float(np.mean(d2 <= CHI2_50))}
