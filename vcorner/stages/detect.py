"""Centres without clicks: the detector stage that names and places the vertebrae of an image before its patches
are cut (README.md, "Automatic centres").

``detect_centres`` runs inside :func:`vcorner.stages.prepare.prepare` on the pyramid it already built, so a
batch reads every file once. The detected sequence then passes the same checks as clicked centres
(:func:`vcorner.geometry.sequence.checked_record`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vcorner.geometry.letterbox import detector_input, letterbox_affine
from vcorner.geometry.sequence import checked_record
from vcorner.io.records import ImageRecord, InputError, Vertebra
from vcorner.models.detector_card import DetectorCard
from vcorner.postprocess.peaks import Detection, decode_view, split_confident

Infer = Callable[[np.ndarray], np.ndarray]
"""A runner's ``infer``: (B, 1, S, S) float32 views -> (B, K, S, S) float32 maps."""


@dataclass(frozen=True)
class DetectedCentres:
    """What the detector found in one image.

    Attributes:
        listed: the confident detections as found (every name at or above the card's confidence, cranial first):
            what ``centers.detected.csv`` records, with their confidences.
        record: ``listed`` after the centre-sequence checks: the vertebrae that get corners.
        left_out: vertebra name -> why the sequence checks left it out (``errors.csv``).
        dropped: detections below the card's confidence (counted, not used).
        view: the candidate view the detector answered on (:mod:`vcorner.geometry.views`): ``as_is``, or the
            transforms that bring the film to the pose the models learned (``mirrored``, ``turned_180``,
            ``inverted``, joined by ``+``); patches are cut through the same transform.
        naming_margin: how much better the chosen names fit the detector's maps than the same blobs named one
            level up or down, per named vertebra (0-1; NaN when not measured).
        flags: image-level flags every output row of this image carries (``levels_uncertain``,
            ``view_uncertain``; README.md, "Flags").
    """

    listed: ImageRecord
    confidence: dict[str, float]
    record: ImageRecord
    left_out: dict[str, str] = field(default_factory=dict)
    dropped: tuple[Detection, ...] = ()
    view: str = "as_is"
    naming_margin: float = float("nan")
    flags: tuple[str, ...] = ()


def run_detector(pyramid: list[np.ndarray], shape: tuple[int, int], card: DetectorCard,
                 infer: Infer) -> list[Detection]:
    """Every channel's detection in one image (confidence included, none dropped).

    Args:
        pyramid: the image's pyramid (:func:`vcorner.geometry.patches.build_pyramid`).
        shape: (H, W) of the image, pixels.
    """
    size = card.detection.input_shape
    affine = letterbox_affine(shape, size)
    maps = infer(detector_input(pyramid, affine, size))[0]
    return decode_view(maps, card.names, affine, card.detection)


def detect_centres(pyramid: list[np.ndarray], shape: tuple[int, int], file: str, spacing_mm: float | None,
                   card: DetectorCard, infer: Infer) -> DetectedCentres:
    """The checked, named centres of one image.

    Raises:
        InputError: "no vertebrae found" when fewer than two detections reach the card's confidence; the
            sequence checks' reason when the detected sequence cannot frame any vertebra.
    """
    kept, dropped = split_confident(run_detector(pyramid, shape, card, infer), card.detection.min_confidence)
    outside = {d.name: why for d in kept if (why := outside_reason(d.xy, shape))}
    kept = [d for d in kept if d.name not in outside]
    if len(kept) < 2:
        best = max((d.confidence for d in kept + dropped), default=0.0)
        beside = f"; {len(outside)} found outside the image's pixels" if outside else ""
        raise InputError(f"no vertebrae found (the detector's best confidence {best:.2f}; at least two names need "
                         f"{card.detection.min_confidence:g}{beside})")
    # centres at 0.001 px, as centers.detected.csv writes them: a resumed run, or vcorner batch --centers on that
    # file, frames the vertebrae from exactly the same numbers
    listed = ImageRecord(file, tuple(Vertebra(d.name, np.round(np.asarray(d.xy, dtype=np.float64), 3)) for d in kept),
                         spacing_mm)
    try:
        record, left_out = checked_record(listed)
    except InputError as err:
        raise InputError(f"detected centres fail the sequence checks: {err}") from None
    return DetectedCentres(listed, {d.name: d.confidence for d in kept}, record, {**outside, **left_out},
                           tuple(dropped))


def outside_reason(xy: np.ndarray, shape: tuple[int, int]) -> str:
    """Why a detected centre ``xy`` (px) cannot be used: it lies outside the image's own pixels (in the margin
    the detector's letterboxed view adds), or "" when it lies inside ``shape`` (H, W)."""
    height, width = shape
    x, y = float(xy[0]), float(xy[1])
    if -0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5:
        return ""
    return (f"detected centre ({x:.1f}, {y:.1f}) lies outside the image's {width} x {height} pixels (in the margin "
            "of the detector's letterboxed view); left out")
