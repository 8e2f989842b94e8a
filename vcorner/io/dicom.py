"""DICOM headers: read with ``stop_before_pixels`` (size checked before any pixel), the pixel spacing
(PixelSpacing, else ImagerPixelSpacing; per axis, and checked against the plausible range of
:mod:`vcorner.io.spacing`) and whether a modality LUT must be applied.
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import BinaryIO

from vcorner.io.formats import DEFAULT_MAX_PIXELS, check_size, file_kind
from vcorner.io.records import InputError
from vcorner.io.spacing import spacing_problem

logger = logging.getLogger(__name__)


def _spacing_pair(value: object) -> tuple[float, float] | None:
    """A DICOM (row, column) spacing pair in mm, or None when absent or not two finite positive numbers."""
    try:
        numbers = [float(v) for v in value] if value is not None else []  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if len(numbers) != 2 or not all(math.isfinite(v) and v > 0 for v in numbers):
        return None
    return numbers[0], numbers[1]


def dicom_spacing_xy(ds: object, path: Path) -> tuple[tuple[float, float] | None, str | None]:
    """Pixel spacing in mm per axis, (x, y) = (column spacing, row spacing), from PixelSpacing, else
    ImagerPixelSpacing; or None and the reason (one line naming the file) when the header has a spacing
    outside :data:`vcorner.io.spacing.SPACING_RANGE_MM` (a unit slip). (None, None) without a spacing."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = getattr(ds, keyword, None)
        pair = _spacing_pair(value)
        if pair is not None:
            problems = [p for p in map(spacing_problem, pair) if p]
            if problems:
                return None, f"{path}: {keyword} {list(pair)} refused: {problems[0]}"
            return (pair[1], pair[0]), None
        if value is not None:
            logger.warning("%s: ignoring invalid %s %r", path, keyword, value)
    return None, None


def dicom_spacing(ds: object, path: Path) -> float | None:
    """The one pixel spacing in mm of a DICOM header (:func:`dicom_spacing_xy`), or None with a warning when
    it is implausible or anisotropic: the corners are then in pixels, and ``vcorner measure`` applies the
    two spacings per axis itself (a mean would make heights up to half again too large)."""
    xy, problem = dicom_spacing_xy(ds, path)
    if problem:
        logger.warning("%s; lengths stay in pixels", problem)
        return None
    if xy is None:
        return None
    if abs(xy[0] - xy[1]) > 1e-6 * max(xy):
        logger.warning("%s: anisotropic pixel spacing %.6g mm (x) by %.6g mm (y): not one spacing, so the corners "
                       "carry none; vcorner measure applies each axis its own", path, xy[0], xy[1])
        return None
    return xy[0]


def dicom_header(path: Path, max_pixels: int, encoded: bytes | None = None) -> object:
    """The DICOM header (no pixels) of the file ``path``, or of its ``encoded`` bytes when given, after
    checking its size against ``max_pixels``."""
    import pydicom

    source: Path | BinaryIO = path if encoded is None else io.BytesIO(encoded)
    defer = "1 MB" if encoded is None else None  # bytes in memory: nothing to gain by deferring
    try:
        ds = pydicom.dcmread(source, stop_before_pixels=True, defer_size=defer, force=True)
    except Exception as err:  # pydicom raises many types on corrupt files
        raise InputError(f"{path}: not a readable DICOM file ({type(err).__name__}: {err})") from None
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if rows is None or cols is None:
        raise InputError(f"{path}: DICOM file without an image (no Rows/Columns)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    check_size(path, int(cols), int(rows) * max(frames, 1), max_pixels)
    return ds


def dicom_file_spacing(path: Path) -> tuple[tuple[float, float] | None, str | None]:
    """:func:`dicom_spacing_xy` of a DICOM file's header, read without its pixels; (None, None) for any other
    file, a DICOM without spacing, or a file that cannot be read."""
    path = Path(path)
    try:
        if not path.is_file() or file_kind(path) != "dicom":
            return None, None
        return dicom_spacing_xy(dicom_header(path, DEFAULT_MAX_PIXELS), path)
    except (InputError, OSError):
        return None, None


def has_modality_lut(ds: object) -> bool:
    """Whether the modality LUT changes the stored values (a LUT sequence, or a slope or intercept other than
    1 and 0); without one the stored integers are used as they are, as the LUT would return them."""
    if "ModalityLUTSequence" in ds:  # type: ignore[operator]
        return True
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")  # type: ignore[attr-defined]
    try:
        return float(1 if slope is None else slope) != 1.0 or float(0 if intercept is None else intercept) != 0.0
    except (TypeError, ValueError):
        return True
