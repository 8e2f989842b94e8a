"""Scores of detected centres against annotated ones: recall and precision of correctly *named* centres within a
radius, centre error, naming errors (README.md, "Automatic centres")."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from vcorner.geometry.sequence import spine_levels, typical_spacing
from vcorner.io.records import ImageRecord
from vcorner.io.spacing import common_unit, spacing_in

log = logging.getLogger(__name__)

RADIUS_MM = 3.0
"""A detected centre is correct when it carries the annotated vertebra's name and lies within this many mm of its
annotated centre (about a fifth of an adult cervical body's depth, a quarter of its height with its disc)."""
RADIUS_SPACINGS = 0.25
"""Without a pixel spacing, the radius is this many typical vertebra spacings of the image, in pixels."""


@dataclass(frozen=True)
class DetectionScores:
    """Named-centre detection over a set of images.

    Attributes:
        annotated, predicted: centres in the annotations / in the predictions (of the annotated images).
        correct: predicted centres with the right name within the radius of its annotated centre.
        misnamed: predicted centres within the radius of an annotated centre of *another* name.
        recall, precision: ``correct / annotated``, ``correct / predicted``.
        error_median, error_mean: distance of the correct centres to the annotated ones (``unit``).
        images_without: annotated images with no predicted centre at all (failed or no vertebrae found).
    """

    annotated: int
    predicted: int
    correct: int
    misnamed: int
    recall: float
    precision: float
    error_median: float
    error_mean: float
    images_without: int
    radius: float
    unit: str

    def to_dict(self) -> dict:
        return asdict(self)


def _radius_px(record: ImageRecord, unit: str) -> float:
    """The match radius of ``record``'s centres in pixels: :data:`RADIUS_MM` in mm, else in vertebra spacings."""
    if unit == "mm":
        return RADIUS_MM / record.pixel_spacing_mm
    levels = spine_levels([v.name for v in record.vertebrae])
    spacing = typical_spacing(record.centers, levels if levels is not None else np.arange(len(record.vertebrae),
                                                                                            dtype=float))
    return RADIUS_SPACINGS * spacing


def score_detections(predicted: Sequence[ImageRecord], truth: Sequence[ImageRecord]) -> DetectionScores:
    """Compare detected centres with annotated ones, image by image (matched by file name)."""
    found = {r.file: r for r in predicted}
    annotated = predicted_n = correct = misnamed = without = 0
    errors: list[float] = []
    unit, note = common_unit(truth)  # mm only when every image has a spacing, never a mix
    if note:
        log.warning("centre detection: %s", note)
    for record in truth:
        radius = _radius_px(record, unit)
        scale = spacing_in(unit, record) or 1.0
        true = {v.name: v.center for v in record.vertebrae}
        annotated += len(true)
        guess = found.get(record.file)
        if guess is None or not guess.vertebrae:
            without += 1
            continue
        predicted_n += len(guess.vertebrae)
        for v in guess.vertebrae:
            if v.name in true and np.linalg.norm(v.center - true[v.name]) <= radius:
                correct += 1
                errors.append(float(np.linalg.norm(v.center - true[v.name])) * scale)
            elif any(np.linalg.norm(v.center - c) <= radius for n, c in true.items() if n != v.name):
                misnamed += 1
    return DetectionScores(annotated, predicted_n, correct, misnamed, correct / max(annotated, 1),
                           correct / max(predicted_n, 1), float(np.median(errors)) if errors else float("nan"),
                           float(np.mean(errors)) if errors else float("nan"), without,
                           RADIUS_MM if unit == "mm" else RADIUS_SPACINGS, unit)
