"""How far to trust each vertebra's corners: ellipses that grow where the evidence is weak, and flags (README.md,
"Flags"; issue #27).

Three kinds of evidence, all from what decoding already has:

- the **single patches**: each patch's own map, decoded alone exactly as the vertebra's accumulated map is
  (:func:`single_patch_corners`); their scatter about the found corner (:func:`patch_scatter`) says how much the
  patches disagree;
- the **flatness** of the accumulated map at a corner: 1 minus its peak value (the accumulated map is the mean of
  maps rescaled to a maximum of 1, :mod:`vcorner.postprocess.decode`, so 1 - peak is 0 where every patch puts its
  maximum on the same pixel and grows as the maps flatten or part);
- the **shape**: a vertebra's height against the median height of the image's other vertebrae, each first divided
  by the height the learned prior expects of its name (:func:`height_deviation`: in-style C7 bodies are about 5%
  taller than C3-C6, which the prior knows).

The constants live in the model card (:class:`vcorner.config.TrustConfig`), chosen on in-style validation phantoms
by ``benchmarks/trust_calibration.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from vcorner.config import DecodeConfig, TrustConfig
from vcorner.geometry.frames import Frames
from vcorner.geometry.patches import invert_affines
from vcorner.geometry.sequence import level_ranks
from vcorner.postprocess.background import remove_background
from vcorner.postprocess.decode import COV_FLOOR_PX2, AccumulatedMap, VertebraCorners, decode_vertebra
from vcorner.postprocess.kernels import backproject
from vcorner.postprocess.prior import CornerPrior

UNKNOWN_NAME = "unknown_name"
IMPLAUSIBLE_SHAPE = "implausible_shape"
PATCHES_DISAGREE = "patches_disagree"
VERTEBRA_FLAGS = (UNKNOWN_NAME, IMPLAUSIBLE_SHAPE, PATCHES_DISAGREE)
"""The per-vertebra flags, in the order they are written (after the image's own, e.g. ``levels_uncertain``)."""


def single_patch_corners(maps: np.ndarray, affines: np.ndarray, owner: np.ndarray,
                         accumulated: Sequence[AccumulatedMap], frames: Frames, names: Sequence[str],
                         prior: CornerPrior, config: DecodeConfig) -> list[list[VertebraCorners]]:
    """Per vertebra, the corners each of its patches gives alone: the patch's background-free map back-projected
    into the vertebra's region and decoded as the accumulated map is (prior weight, quadrants, sub-pixel).

    Args:
        maps: (P, N, N) raw network outputs. affines: (P, 2, 3) patch-to-image affines.
        owner: (P,) index in ``frames`` of the vertebra each patch was cut for.
        accumulated: the V accumulated maps (their regions are reused).
        frames, names, prior, config: as for :func:`vcorner.postprocess.decode.decode_accumulated`.

    Returns:
        V lists, one :class:`VertebraCorners` per patch of that vertebra (in patch order).
    """
    cleaned = remove_background(maps, config.background_quantile)
    to_patch = invert_affines(np.asarray(affines, dtype=np.float64))
    owner = np.asarray(owner).reshape(-1)
    out = []
    for index, region in enumerate(accumulated):
        single = []
        for p in np.flatnonzero(owner == index):
            acc = backproject(cleaned[p:p + 1], to_patch[p:p + 1], region.origin, region.acc.shape)
            single.append(decode_vertebra(acc, region.origin, frames, index, names[index], prior, config))
        out.append(single)
    return out


def patch_scatter(single: Sequence[VertebraCorners], xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How far a vertebra's single patches put its corners from the found ones.

    Args:
        single: the vertebra's single-patch corners (:func:`single_patch_corners`).
        xy: (4, 2) found corners, pixels.

    Returns:
        scatter: (4, 2, 2) mean outer product of the single-patch corners about ``xy``, px^2 (zero without patches).
        farthest: (4,) largest distance of a single-patch corner from ``xy``, pixels.
    """
    if not single:
        return np.zeros((4, 2, 2)), np.zeros(4)
    offsets = np.stack([s.xy for s in single]) - np.asarray(xy, dtype=np.float64)  # (P, 4, 2)
    scatter = np.einsum("pki,pkj->kij", offsets, offsets) / len(single)
    return scatter, np.linalg.norm(offsets, axis=-1).max(axis=0)


def evidence_covariance(size: float, confidence: np.ndarray, scatter: np.ndarray, trust: TrustConfig) -> np.ndarray:
    """(4, 2, 2) covariances, px^2, of a vertebra's network corners from the evidence:
    ``((size_sd * size)^2 + (flat_sd * (1 - confidence) * size)^2) I + scatter_scale^2 * scatter`` plus
    :data:`COV_FLOOR_PX2`.

    Args:
        size: the vertebra's size, pixels. confidence: (4,) accumulated map at each corner, in [0, 1].
        scatter: (4, 2, 2) from :func:`patch_scatter`, px^2. trust: the card's constants.
    """
    flat = 1.0 - np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    variance = (trust.size_sd ** 2 + (trust.flat_sd * flat) ** 2) * float(size) ** 2 + COV_FLOOR_PX2
    return variance[:, None, None] * np.eye(2) + trust.scatter_scale ** 2 * np.asarray(scatter, dtype=np.float64)


def heights(xy: np.ndarray) -> np.ndarray:
    """(V,) mean of the anterior and posterior heights of (V, 4, 2) corners (``vcorner.CORNER_NAMES`` order), px."""
    xy = np.asarray(xy, dtype=np.float64)
    return 0.5 * (np.linalg.norm(xy[:, 0] - xy[:, 2], axis=-1) + np.linalg.norm(xy[:, 1] - xy[:, 3], axis=-1))


def widths(xy: np.ndarray) -> np.ndarray:
    """(V,) mean of the superior and inferior endplate lengths of (V, 4, 2) corners (``vcorner.CORNER_NAMES``
    order), px."""
    xy = np.asarray(xy, dtype=np.float64)
    return 0.5 * (np.linalg.norm(xy[:, 0] - xy[:, 1], axis=-1) + np.linalg.norm(xy[:, 2] - xy[:, 3], axis=-1))


def height_deviation(xy: np.ndarray, expected: np.ndarray | None = None) -> np.ndarray:
    """(V,) ``|log(r_v / median of the other vertebrae's r)|`` with ``r = h / expected`` of (V, 4, 2) corners
    (:func:`heights`, px) and each vertebra's ``expected`` (V,) height in any common unit (:func:`prior_heights`;
    None: all alike); 0 for an image of one vertebra or a degenerate height."""
    h = heights(xy)
    r = h / (np.ones(len(h)) if expected is None else np.asarray(expected, dtype=np.float64))
    out = np.zeros(len(h))
    for v in range(len(h)):
        others = np.delete(r, v)
        reference = float(np.median(others)) if len(others) else 0.0
        if r[v] > 0 and reference > 0:
            out[v] = abs(float(np.log(r[v] / reference)))
    return out


def prior_heights(prior: CornerPrior, names: Sequence[str]) -> np.ndarray:
    """(V,) the height (:func:`heights`) of each name's prior mean corners, in frame units (the pooled prior for a
    name it did not learn)."""
    return heights(np.stack([prior.lookup(name)[0] for name in names])) if names else np.zeros(0)


WIDTH_ORDER_LEVELS = 4
"""The fewest ranked vertebrae :func:`width_slope` measures an order on (three give too noisy a slope)."""
WIDTH_SLOPE_LIMIT = -0.03
"""An image whose bodies narrow down the spine faster than this (:func:`width_slope`, share of their mean width per
level) has its levels flagged uncertain (:func:`narrowing_flags`): its names may run the wrong way. Chosen on the
validation variants (benchmarks/results/width_order_choice.md): every one of 2,291 films named right stays above it
(lowest -0.027); a neck read flipped, names reversed, gave -0.035."""
LEVELS_UNCERTAIN = "levels_uncertain"


def narrowing_flags(flags: Sequence[str], xy: np.ndarray, names: Sequence[str]) -> tuple[str, ...]:
    """``flags`` with ``levels_uncertain`` added when the bodies of (V, 4, 2) corners named ``names`` narrow down the
    spine beyond :data:`WIDTH_SLOPE_LIMIT` (:func:`width_slope`; never with too few names to tell)."""
    if LEVELS_UNCERTAIN in flags or not width_slope(xy, names) < WIDTH_SLOPE_LIMIT:
        return tuple(flags)
    return (*flags, LEVELS_UNCERTAIN)


def width_slope(xy: np.ndarray, names: Sequence[str]) -> float:
    """How the vertebral bodies' widths change per level down the spine: the least-squares slope of each body's
    endplate width (:func:`widths` of (V, 4, 2) corners) over its anatomical rank, as a share of their mean width
    (about +0.03 in a neck named the right way, whose bodies widen caudally; negative when the names run the wrong
    way). NaN with fewer than :data:`WIDTH_ORDER_LEVELS` ranked names."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 4, 2)
    ranks = level_ranks(list(names))
    keep = [i for i, r in enumerate(ranks) if r is not None]
    if len(keep) < WIDTH_ORDER_LEVELS or len({ranks[i] for i in keep}) < WIDTH_ORDER_LEVELS:
        return float("nan")
    width = widths(xy[keep])
    if not np.all(np.isfinite(width)) or width.mean() <= 0:
        return float("nan")
    return float(np.polyfit(np.array([ranks[i] for i in keep], dtype=np.float64), width / width.mean(), 1)[0])


def vertebra_flags(name: str, deviation: float, farthest: np.ndarray, size: float, network: np.ndarray,
                   prior: CornerPrior, trust: TrustConfig) -> tuple[str, ...]:
    """The per-vertebra flags (:data:`VERTEBRA_FLAGS` order) of one vertebra.

    Args:
        name: its label. deviation: its :func:`height_deviation`. farthest: (4,) from :func:`patch_scatter`, px.
        size: its size, px. network: (4,) True for corners the network found (only those are judged by patches).
        prior, trust: the card's prior (which names it trained on) and limits.
    """
    flags = []
    if prior.unseen([name]):
        flags.append(UNKNOWN_NAME)
    if trust.height_limit > 0 and deviation > trust.height_limit:
        flags.append(IMPLAUSIBLE_SHAPE)
    spread = np.where(network, farthest, 0.0) / max(float(size), 1e-9)
    if trust.spread_limit > 0 and float(spread.max(initial=0.0)) > trust.spread_limit:
        flags.append(PATCHES_DISAGREE)
    return tuple(flags)


def judge_corners(corners: Sequence[VertebraCorners], maps: np.ndarray, affines: np.ndarray, owner: np.ndarray,
                  accumulated: Sequence[AccumulatedMap], frames: Frames, prior: CornerPrior, config: DecodeConfig,
                  trust: TrustConfig, image_flags: Sequence[str] = ()) -> list[VertebraCorners]:
    """``corners`` with their flags (the image's ``image_flags`` first, then :func:`vertebra_flags`), the
    confidence of a vertebra with a flag of its own times ``trust.flagged_confidence``, and, when
    ``trust.grows_ellipses``, the covariance of each network corner from :func:`evidence_covariance`.

    Args: as :func:`single_patch_corners`, with the decoded ``corners`` of the V vertebrae.
    """
    names = [v.name for v in corners]
    needs_patches = trust.grows_ellipses or trust.spread_limit > 0
    single = single_patch_corners(maps, affines, owner, accumulated, frames, names, prior, config) \
        if needs_patches else [[] for _ in corners]
    deviation = height_deviation(np.stack([v.xy for v in corners]), prior_heights(prior, names)) \
        if corners else np.zeros(0)
    out = []
    for i, v in enumerate(corners):
        network = np.array([s == "network" for s in v.source])
        scatter, farthest = patch_scatter(single[i], v.xy)
        size = float(frames.sizes[i])
        own = vertebra_flags(v.name, float(deviation[i]), farthest, size, network, prior, trust)
        cov = v.cov
        if trust.grows_ellipses:
            grown = evidence_covariance(size, v.confidence, scatter, trust)
            cov = np.where(network[:, None, None], grown, v.cov)
        confidence = v.confidence * trust.flagged_confidence if own else v.confidence
        out.append(replace(v, cov=cov, confidence=confidence, flags=tuple(dict.fromkeys((*image_flags, *own)))))
    return out
