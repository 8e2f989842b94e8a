"""Tune the decoding constants and calibrate the uncertainty ellipses on an annotated validation set.

The network runs once per image; decoding (cheap) then runs for every candidate setting. The setting with the
lowest mean P2P error wins; then the mean offset from found to true corners is fitted (``corner_offset``) and
``ellipse_scale`` is chosen so that the 95% ellipses hold 95% of the true corners. Never tune on the test set: use
a validation split (e.g. phantoms of another seed).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vcorner import CORNER_NAMES
from vcorner.config import DecodeConfig, SamplingConfig, from_dict, to_dict
from vcorner.evaluation.metrics import CornerErrors, match, table1_row
from vcorner.geometry.sequence import checked_annotation
from vcorner.io.paths import safe_path
from vcorner.io.records import ImageRecord, InputError
from vcorner.io.spacing import common_unit
from vcorner.models.card import ModelCard
from vcorner.postprocess.decode import VertebraCorners, accumulate_image, decode_accumulated
from vcorner.runtime.base import Runner
from vcorner.stages.plan import PlannedImage
from vcorner.stages.prepare import ImageJob, prepare

log = logging.getLogger(__name__)

CHI2_2DOF = {0.5: 1.3863, 0.95: 5.9915}
"""Squared Mahalanobis radius of the 50% and 95% ellipses of a 2-D Gaussian."""

DEFAULT_GRID: dict[str, tuple] = {
    "background_quantile": (0.6, 0.75, 0.9, 0.95),
    "prior_inflation": (1.0, 4.0, 9.0, 16.0, 25.0),
    "min_peak": (0.05, 0.15, 0.3),
}


SAMPLING_TOLERANCE_MM = 0.01
"""Largest mean P2P loss (mm; px when some tuning image has no pixel spacing) :func:`cheapest_sampling` accepts for
fewer patches."""


def sampling_variants(base: SamplingConfig) -> dict[str, SamplingConfig]:
    """Named patch-sampling variants of a model's own, from its full grid down to one patch per vertebra
    (distinct ones only, in the order given)."""
    mid_scale = (sum(base.scales) / len(base.scales),)
    flat = (0.0,)
    candidates = {
        f"full grid ({base.patches_per_vertebra}/vertebra)": base,
        "no rotations": replace(base, rotations_deg=flat),
        "one scale": replace(base, scales=mid_scale),
        "one scale, no rotations": replace(base, scales=mid_scale, rotations_deg=flat),
        "2x2 grid, no rotations": replace(base, grid_steps=2, rotations_deg=flat),
        "2x2 grid, one scale, no rotations": replace(base, grid_steps=2, scales=mid_scale, rotations_deg=flat),
        "centre only, its scales": replace(base, grid_steps=1, rotations_deg=flat),
        "centre only (1/vertebra)": replace(base, grid_steps=1, scales=mid_scale, rotations_deg=flat),
    }
    distinct: dict[str, SamplingConfig] = {}
    for name, sampling in candidates.items():
        if sampling not in distinct.values():
            distinct[name] = sampling
    return distinct


def untuned(card: ModelCard) -> dict:
    """The sampling and decoding ``card`` had before any tuning (its first ``before_tuning``, else its own), as
    plain dicts: a model tuned again is compared with, and may return to, the sampling it was trained with."""
    first = card.training.get("before_tuning")
    return first if first else {"sampling": to_dict(card.sampling), "decode": to_dict(card.decode)}


def cheapest_sampling(root: Path, records: Sequence[ImageRecord], runner: Runner, card: ModelCard,
                      tolerance_mm: float = SAMPLING_TOLERANCE_MM) -> tuple[SamplingConfig, list[dict]]:
    """The sampling variant with the fewest patches (the speed objective: inference is most of an image's cost)
    whose mean P2P is at most ``tolerance_mm`` above the sampling the model was trained with (:func:`untuned`), and
    every variant's scores."""
    scores = []
    for name, sampling in sampling_variants(from_dict(SamplingConfig, untuned(card)["sampling"])).items():
        variant = replace(card, sampling=sampling)
        row = table1_row(evaluate_decode(infer_records(root, records, runner, variant), variant, card.decode)[0])
        scores.append({"variant": name, "patches_per_vertebra": sampling.patches_per_vertebra,
                       "p2p_mean": row["p2p_mean"], "p2p_median": row["p2p_median"], "sampling": sampling})
    own = scores[0]["p2p_mean"]
    chosen = min((s for s in scores if s["p2p_mean"] <= own + tolerance_mm),
                 key=lambda s: (s["patches_per_vertebra"], s["p2p_mean"]))
    return chosen["sampling"], [{k: v for k, v in s.items() if k != "sampling"} for s in scores]


@dataclass(frozen=True)
class TuneResult:
    """The chosen decoding settings, the P2P of every candidate, and calibration figures."""

    decode: DecodeConfig
    candidates: list[dict]
    coverage: dict[str, float]
    unit: str = "mm"
    """Unit of the candidates' P2P: mm when every tuning image has a pixel spacing, else px for all."""
    unit_note: str | None = None
    """Why the unit is px (``k of n images have no pixel spacing: ...``), None in mm."""


def infer_records(root: Path, records: Sequence[ImageRecord], runner: Runner, card: ModelCard,
                  batch_size: int = 256, progress: Callable[[], None] | None = None
                  ) -> list[tuple[ImageJob, ImageRecord]]:
    """Run the network on every usable annotated image (``progress`` called after each); returns jobs with
    filled maps."""
    jobs = []
    for record in records:
        if progress is not None:
            progress()
        try:
            record = checked_annotation(record)
            job = prepare(PlannedImage(record, safe_path(Path(root), record.file)), card)
        except InputError as err:
            log.warning("skipping %s: %s", record.file, err)
            continue
        job.maps = runner.infer_all(job.patches, batch_size)
        jobs.append((job, record))
    if not jobs:
        raise InputError(f"{root}: no usable annotated image to tune on")
    return jobs


def decode_jobs(jobs: Sequence[tuple[ImageJob, ImageRecord]], card: ModelCard,
                decode: DecodeConfig) -> dict[str, list[VertebraCorners]]:
    """Corners of every job under ``decode`` settings, keyed by image."""
    out = {}
    for job, _ in jobs:
        acc = accumulate_image(job.maps[:, 0], job.affines, job.owner, job.frames, job.shape, decode)
        out[job.name] = decode_accumulated(acc, job.frames, job.names, card.prior, decode)
    return out


def as_predictions(corners: dict[str, list[VertebraCorners]]) -> dict[tuple[str, str, str], dict]:
    """Decoded corners in the form of :func:`vcorner.evaluation.metrics.read_predictions`."""
    return {(image, v.name, name): {"x": v.xy[k, 0], "y": v.xy[k, 1], "confidence": v.confidence[k],
                                    "source": v.source[k], "cov": v.cov[k]}
            for image, vertebrae in corners.items() for v in vertebrae for k, name in enumerate(CORNER_NAMES)}


def mahalanobis_squared(predictions: dict, truth: Sequence[ImageRecord]) -> np.ndarray:
    """Squared Mahalanobis distance of each true corner under its predicted covariance (network corners)."""
    out = []
    for record in truth:
        for v in record.vertebrae:
            for k, name in enumerate(CORNER_NAMES):
                p = predictions.get((record.file, v.name, name))
                if p is None or v.corners is None or p["source"] != "network":
                    continue
                d = v.corners[k] - np.array([p["x"], p["y"]])
                out.append(float(d @ np.linalg.solve(p["cov"], d)))
    return np.asarray(out)


def coverage(d2: np.ndarray) -> dict[str, float]:
    """Share of true corners inside the predicted 50% and 95% ellipses."""
    return {f"inside_{int(q * 100)}": float(np.mean(d2 <= r)) if len(d2) else float("nan")
            for q, r in CHI2_2DOF.items()}


def evaluate_decode(jobs, card: ModelCard, decode: DecodeConfig) -> tuple[CornerErrors, dict]:
    """Errors and raw predictions of the jobs under ``decode``."""
    predictions = as_predictions(decode_jobs(jobs, card, decode))
    return match(predictions, [r for _, r in jobs]), predictions


def calibrate_scale(jobs, card: ModelCard, decode: DecodeConfig, target: float = 0.95) -> tuple[float, dict]:
    """The ``ellipse_scale`` whose 95% ellipses hold ``target`` of the true corners, and the coverage then."""
    best, best_gap, best_cov = 1.0, np.inf, {}
    for scale in np.geomspace(0.25, 16.0, 31):
        _, predictions = evaluate_decode(jobs, card, replace(decode, ellipse_scale=float(scale)))
        cov = coverage(mahalanobis_squared(predictions, [r for _, r in jobs]))
        gap = abs(cov["inside_95"] - target)
        if gap < best_gap:
            best, best_gap, best_cov = float(scale), gap, cov
    return round(best, 3), best_cov


def fit_corner_offset(jobs, card: ModelCard, decode: DecodeConfig) -> tuple[float, ...]:
    """:attr:`vcorner.config.DecodeConfig.corner_offset`: the mean displacement from each network corner found
    under ``decode`` (its own offset left out) to the true one, per corner, in the frames of the jobs' vertebrae
    (sizes); () when no corner was found."""
    found = decode_jobs(jobs, card, replace(decode, corner_offset=()))
    moves: list[list[np.ndarray]] = [[] for _ in CORNER_NAMES]
    for job, record in jobs:
        truth = {v.name: v.corners for v in record.vertebrae if v.corners is not None}
        for i, v in enumerate(found[job.name]):
            if v.name not in truth:
                continue
            for k in range(len(CORNER_NAMES)):
                if v.source[k] == "network":
                    moves[k].append(job.frames.to_frame(i, truth[v.name][k]) - job.frames.to_frame(i, v.xy[k]))
    if not all(moves):
        return ()
    return tuple(round(float(x), 5) for k in range(len(CORNER_NAMES)) for x in np.mean(moves[k], axis=0))


def tune_decode(jobs, card: ModelCard, grid: dict[str, tuple] | None = None,
                progress: Callable[[], None] | None = None) -> TuneResult:
    """Grid-search the decoding settings by mean P2P (in mm when every image has a pixel spacing, else in px
    for all, with a warning saying so), then calibrate the ellipses."""
    grid = grid or DEFAULT_GRID
    unit, note = common_unit([r for _, r in jobs])
    if note:
        log.warning("tuning: %s", note)
    candidates = []
    for values in itertools.product(*grid.values()):
        decode = replace(card.decode, **dict(zip(grid, values, strict=True)))
        row = table1_row(evaluate_decode(jobs, card, decode)[0])
        candidates.append({**dict(zip(grid, values, strict=True)), "p2p_mean": row["p2p_mean"],
                           "p2p_median": row["p2p_median"], "fit_failure_pct": row["fit_failure_pct"]})
        if progress:
            progress()
    best = min(candidates, key=lambda c: (c["p2p_mean"], c["p2p_median"]))
    decode = replace(card.decode, **{k: best[k] for k in grid})
    decode = replace(decode, corner_offset=fit_corner_offset(jobs, card, decode))
    scale, cov = calibrate_scale(jobs, card, decode)
    return TuneResult(replace(decode, ellipse_scale=scale), candidates, cov, unit, note)
