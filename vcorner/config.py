"""Settings that travel with a model: how patches are cut, how ground truth is drawn, how maps decode.

Frozen dataclasses; TOML recipes and model cards only fill them (``from_dict`` rejects unknown keys).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; lists become tuples; unknown keys raise ValueError."""
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain JSON-ready dict of a dataclass (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


@dataclass(frozen=True)
class SamplingConfig:
    """Patch sampling around each vertebra centre (docs/design.md section 2, step 2).

    Offsets are in units of the vertebra size (mean distance to neighbouring centres); a patch covers a
    square of ``extent * scale`` sizes, rotated by the frame angle plus one of ``rotations_deg``.
    Inference cuts ``grid_steps**2 * len(scales) * len(rotations_deg)`` patches per vertebra.
    """

    patch_size: int = 64
    extent: float = 1.6
    grid_radius: float = 0.12
    grid_steps: int = 3
    scales: tuple[float, ...] = (0.9, 1.1)
    rotations_deg: tuple[float, ...] = (-8.0, 8.0)
    jitter_offset: float = 0.06
    jitter_scale: float = 0.08
    jitter_rotation_deg: float = 6.0

    def __post_init__(self) -> None:
        if self.patch_size < 16 or self.patch_size % 16:
            raise ValueError(f"patch_size must be a multiple of 16 (4 poolings), got {self.patch_size}")
        if self.grid_steps < 1 or not self.scales or not self.rotations_deg or self.extent <= 0:
            raise ValueError("sampling needs grid_steps >= 1, a positive extent, scales and rotations")

    @property
    def patches_per_vertebra(self) -> int:
        return self.grid_steps**2 * len(self.scales) * len(self.rotations_deg)


@dataclass(frozen=True)
class GroundTruthConfig:
    """Ground-truth maps (docs/design.md section 2, step 3).

    Corner Gaussians have standard deviations ``sigma_width`` and ``sigma_height`` times the vertebra size
    along the frame's x and y axes; the boundary is drawn with a line of ``line_sd_px`` patch pixels.
    ``corners`` is ``"own"`` (only the corners of the vertebra a patch was cut for) or ``"all"`` (the
    paper: every corner inside the patch).
    """

    sigma_width: float = 0.07
    sigma_height: float = 0.055
    line_sd_px: float = 1.0
    corners: str = "own"

    def __post_init__(self) -> None:
        if self.corners not in ("own", "all"):
            raise ValueError(f"ground_truth.corners must be 'own' or 'all', got {self.corners!r}")


@dataclass(frozen=True)
class DecodeConfig:
    """Post-processing of patch maps into corners (docs/design.md section 2, steps 7 and 8).

    Attributes:
        background_quantile: per-patch residual background level (quantile of the map's values).
        prior_inflation: prior covariance multiplier when weighting the accumulated map.
        prior_sharp_inflation: the multiplier where the accumulated map is sure of a corner (peak 1): between,
            it moves log-linearly from ``prior_inflation`` (peak 0) with the quadrant's unweighted peak, so the
            prior weighs where the network is unsure, not where its map is sharp (issue #29); 0: off, the same
            ``prior_inflation`` at every peak (cards written before it).
        search_radius: half-width of a vertebra's accumulator region, in vertebra sizes.
        min_peak: a quadrant whose accumulated maximum is below this falls back to the prior.
        refine_radius_px: window half-width for sub-pixel refinement and covariance, in pixels.
        ellipse_scale: multiplier on the moment-based standard deviations (calibration).
        subpixel: refine the maximum to sub-pixel precision.
        corner_offset: the mean displacement from a found network corner to the true one, 8 numbers (x, y of each
            corner in ``CORNER_NAMES`` order) in frame units (vertebra sizes, :mod:`vcorner.geometry.frames`), added
            to every network corner; fitted on validation images by :func:`vcorner.evaluation.tune.tune_decode`
            (the ground truth's maps, corner-weighted boundary lines, peak inside the corner); (): none.
    """

    background_quantile: float = 0.75
    prior_inflation: float = 4.0
    prior_sharp_inflation: float = 0.0
    search_radius: float = 1.0
    min_peak: float = 0.02
    refine_radius_px: float = 4.0
    ellipse_scale: float = 1.0
    subpixel: bool = True
    corner_offset: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.corner_offset) not in (0, 8):
            raise ValueError(f"decode.corner_offset must hold 8 numbers (x, y of 4 corners), got "
                             f"{len(self.corner_offset)}")


@dataclass(frozen=True)
class TrustConfig:
    """How far to trust each vertebra's corners (README.md, "Flags"; issue #27): the ellipses grown by the evidence
    and the per-vertebra flags. Chosen on in-style validation phantoms (``benchmarks/trust_calibration.py``) and
    stored in the model card's ``trust``; the defaults switch it all off (cards without it decode as before).

    Attributes:
        size_sd: a network corner's base sd along each axis, as a share of its vertebra's size (the frame size of
            :mod:`vcorner.geometry.frames`, pixels); > 0 replaces the window-moment covariance of
            :func:`vcorner.postprocess.decode.decode_vertebra` by
            :func:`vcorner.postprocess.plausibility.evidence_covariance`.
        flat_sd: sd added per unit of the accumulated map's flatness at the corner (1 - its peak value), in
            vertebra sizes.
        scatter_scale: multiplier on the scatter (px) of the single patches' corners about the found corner.
        height_limit: a vertebra whose height deviates from the median of the image's other vertebrae by more than
            this (|log ratio|, each height over its prior's; :func:`vcorner.postprocess.plausibility.height_deviation`)
            is flagged ``implausible_shape`` (0: never).
        spread_limit: a vertebra one of whose single patches puts a network corner further than this from the found
            one, in vertebra sizes, is flagged ``patches_disagree`` (0: never).
        flagged_confidence: factor on the confidence of every corner of a flagged vertebra.
        side_check: whether the films of the model's world show which side is anterior (lateral films: the bone
            behind the bodies reads brighter than the tissue in front of them, on nearly every validation film), so
            that a film contradicting its view is flagged ``view_contradicted``
            (its :func:`vcorner.geometry.sides.film_side` is negative); set by the trust fit
            (:func:`vcorner.evaluation.trust.sides_agree`), False for frontal films and cards without it.
        reader_sd_mm: the calibration annotator's own click spread about the true corners, mm per axis (the
            ellipses hold 95% of the clicks, so they carry it): known only where the calibration films have their
            true corners (``truth.json`` of ``vcorner synth``; :func:`vcorner.evaluation.trust.reader_spread`), it
            gives the measurements their anatomy intervals
            (:func:`vcorner.measure.intervals.anatomy_covariance`); 0: unknown, none.
    """

    size_sd: float = 0.0
    flat_sd: float = 0.0
    scatter_scale: float = 0.0
    height_limit: float = 0.0
    spread_limit: float = 0.0
    flagged_confidence: float = 0.5
    side_check: bool = False
    reader_sd_mm: float = 0.0

    def __post_init__(self) -> None:
        numbers = (self.size_sd, self.flat_sd, self.scatter_scale, self.height_limit, self.spread_limit,
                   self.reader_sd_mm)
        if not all(math.isfinite(x) and x >= 0 for x in numbers):
            raise ValueError("trust settings must be finite and not negative")
        if not 0.0 <= self.flagged_confidence <= 1.0:
            raise ValueError(f"trust.flagged_confidence must be in [0, 1], got {self.flagged_confidence}")

    @property
    def grows_ellipses(self) -> bool:
        """Whether network corners get :func:`vcorner.postprocess.plausibility.evidence_covariance`."""
        return self.size_sd > 0.0


@dataclass(frozen=True)
class DetectionConfig:
    """The centre detector's input and decoding (README.md, "Automatic centres"; travels in its card).

    Attributes:
        input_size: side S of the square network input, or its height when ``input_width`` is set; the whole
            image is letterboxed into it (any image size: it is resized, never refused for size).
        input_width: width of a non-square input (a tall film's view: 96 x 256), 0 for a square S x S one.
        sigma: sd of each centre's target Gaussian, in vertebra spacings (median distance between the
            image's neighbouring centres), at least ``min_sigma_px`` input pixels.
        min_sigma_px: smallest target sd, input pixels.
        peak_radius_px: window radius around a map's maximum, input pixels: its probability mass is the
            detection's confidence, its weighted centroid the sub-pixel centre.
        min_confidence: detections below this confidence are dropped (and counted).
        spacing_px: the closest typical distance between neighbouring centres the detector was trained on, input
            pixels (5th percentile over the training films' letterboxed views), recorded by training; the peak
            decoding's suppression radius and degenerate-map rule follow it
            (:func:`vcorner.postprocess.peaks.decoding_limits`). 0: not recorded (detectors trained before it was:
            fixed constants).
        views: the candidate views (:mod:`vcorner.geometry.views`) the detector was trained to tell apart; it
            looks at each and answers on the one where it finds the spine (``as_is`` only: the film as it is).
        context: names the detector finds only to anchor the naming (C2 above C3, T1 below C7); they are
            never output.
        view_margin: below this lead of the best view's mean confidence over the second best, the image is
            flagged ``view_uncertain``.
        naming_margin: below this naming margin (:func:`vcorner.postprocess.peaks.naming_margin`), the image is
            flagged ``levels_uncertain``.
        view_finder: file name, beside this detector, of a detector trained on several candidate views whose view
            search picks the film's view; this detector then names on that view only ("": none).
        spine_angle_deg: the median lean of the line from the first to the last name in the films this detector
            learned (degrees from straight down towards +x), measured on in-style validation films.
        align_deg: with a view finder, a view whose spine (the finder's names) leans more than this from
            ``spine_angle_deg`` is turned back to it before this detector names (0: never turned).
        view_turns_deg: the view search scores each candidate view on the film turned by each of these angles
            (degrees) and ranks the views by the mean, a steadier vote than one look; the answer itself is read on
            the unturned film (empty: one look, as detectors before it searched).
        second_namer: file name, beside this detector, of a namer that names the films whose levels this one
            flags uncertain, on the same view; the flag stays ("": none; README.md, "Orientation, polarity and
            naming").
    """

    input_size: int = 128
    sigma: float = 0.15
    min_sigma_px: float = 1.0
    peak_radius_px: float = 3.0
    min_confidence: float = 0.3
    input_width: int = 0
    spacing_px: float = 0.0
    views: tuple[str, ...] = ("as_is",)
    context: tuple[str, ...] = ()
    view_margin: float = 0.0
    naming_margin: float = 0.0
    view_finder: str = ""
    spine_angle_deg: float = 0.0
    align_deg: float = 0.0
    view_turns_deg: tuple[float, ...] = ()
    second_namer: str = ""

    def __post_init__(self) -> None:
        if any(not -90.0 < t < 90.0 for t in self.view_turns_deg):
            raise ValueError(f"detection.view_turns_deg must lie between -90 and 90 degrees, got {self.view_turns_deg}")
        for side in (self.input_size, self.input_width or self.input_size):
            if side < 32 or side % 16:
                raise ValueError(f"detection.input_size and input_width must be multiples of 16 (4 poolings), at "
                                 f"least 32, got {side}")
        if self.spacing_px < 0:
            raise ValueError(f"detection.spacing_px must be 0 (not recorded) or positive, got {self.spacing_px}")
        if not (0.0 <= self.min_confidence < 1.0) or self.peak_radius_px <= 0 or self.sigma <= 0:
            raise ValueError("detection needs 0 <= min_confidence < 1, a positive peak_radius_px and sigma")

    @property
    def input_shape(self) -> tuple[int, int]:
        """(height, width) of the network input, pixels."""
        return self.input_size, self.input_width or self.input_size
