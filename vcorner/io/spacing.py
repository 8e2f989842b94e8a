"""Pixel spacing: the plausible range for a radiograph, one check for every source, and the unit of a set of
images (millimetres only when every image has a spacing).

A spacing comes from a DICOM header (PixelSpacing, else ImagerPixelSpacing), a centres file's or an
annotations file's ``pixel_spacing_mm``, or ``--spacing``. Each is checked here, so that a unit slip (14.9 mm
for 0.149 mm, or metres for millimetres) never turns into 1,000 mm vertebrae.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from vcorner.io.records import ImageRecord, InputError

SPACING_RANGE_MM = (0.02, 2.0)
"""Plausible pixel spacing of a radiograph, mm: detectors and digitised films lie between about 0.05 and 0.2 mm;
0.02-2 mm leaves a factor of 2.5 and 10 on either side, and still refuses a spacing in cm or m, or a factor of
ten slipped (14.9 for 0.149)."""


def spacing_problem(value: object) -> str | None:
    """Why ``value`` is not a usable pixel spacing in mm (one phrase), or None when it is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {value!r}"
    low, high = SPACING_RANGE_MM
    if not math.isfinite(value) or value <= 0:
        return f"must be a positive finite number of mm, got {value!r}"
    if not low <= value <= high:
        return f"{value:g} mm is outside the plausible {low:g}-{high:g} mm of a radiograph (a unit slip?)"
    return None


def checked_spacing(value: object, where: str) -> float:
    """``value`` as a float, or InputError ``where: pixel spacing ...`` naming the problem.

    Raises:
        InputError: not a finite number inside :data:`SPACING_RANGE_MM`.
    """
    problem = spacing_problem(value)
    if problem:
        raise InputError(f"{where}: pixel spacing {problem}")
    return float(value)  # type: ignore[arg-type]


def common_unit(records: Sequence[ImageRecord]) -> tuple[str, str | None]:
    """The one unit for errors over ``records``: ``mm`` when every image has a pixel spacing, else ``px`` for
    all of them (millimetres and pixels are never averaged together), and the one-line reason when px."""
    without = sum(1 for r in records if not r.pixel_spacing_mm)
    if records and not without:
        return "mm", None
    return "px", f"{without} of {len(records)} images have no pixel spacing: errors in px for all"


def spacing_in(unit: str, record: ImageRecord) -> float | None:
    """The spacing to scale ``record``'s pixels by under ``unit`` (None: stay in pixels)."""
    return record.pixel_spacing_mm if unit == "mm" else None
