"""``corners.csv`` in, ``measurements.csv`` out, with each image's pixel spacing found where it is recorded."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from vcorner import CORNER_NAMES
from vcorner.io.atomic import write_text_atomic
from vcorner.io.centers import load_centers
from vcorner.io.corners_table import group_corner_rows
from vcorner.io.images import dicom_file_spacing
from vcorner.io.records import InputError
from vcorner.io.spreadsheet import neutralise
from vcorner.measure.intervals import ImageCorners, Measurement, measure_image
from vcorner.postprocess.decode import ellipse_covariance

log = logging.getLogger(__name__)

MEASUREMENT_COLUMNS = ("image", "measure", "level", "value", "unit", "ci95_low", "ci95_high", "flags")
NEEDED = ("image", "vertebra", "corner", "x", "y", "sd_major_px", "sd_minor_px", "angle_deg", "source")


def _image_corners(image: str, by_vertebra: dict[str, dict[str, dict[str, str]]]) -> ImageCorners | None:
    """One image's corners, vertebrae in file order; vertebrae without all four finite corners are left out."""
    names, xy, cov, network = [], [], [], []
    for name, found in by_vertebra.items():
        try:
            ordered = [found[c] for c in CORNER_NAMES]
            values = np.array([[float(r[k]) for k in ("x", "y", "sd_major_px", "sd_minor_px", "angle_deg")]
                               for r in ordered])
        except (KeyError, ValueError):
            log.warning("%s: vertebra %s lacks a usable corner in corners.csv; left out of the measurements",
                        image, name)
            continue
        if not np.all(np.isfinite(values)):
            log.warning("%s: vertebra %s has non-finite corners; left out of the measurements", image, name)
            continue
        names.append(name)
        xy.append(values[:, :2])
        cov.append(ellipse_covariance(values[:, 2], values[:, 3], values[:, 4]))
        network.append([r["source"] == "network" for r in ordered])
    if not names:
        return None
    return ImageCorners(image, tuple(names), np.array(xy), np.array(cov), np.array(network, dtype=bool))


def read_corners(path: Path) -> list[ImageCorners]:
    """Every image of a ``corners.csv`` (images and vertebrae in file order, i.e. cranial first).

    Raises:
        InputError: missing file or columns (one line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such corners file") from None
    grouped = group_corner_rows(text, str(path), NEEDED)
    return [c for image, vertebrae in grouped.items() if (c := _image_corners(image, vertebrae)) is not None]


def measure_all(images: Iterable[ImageCorners], spacing: dict[str, float | None], anterior: str = "right",
                ap: bool = False, default_spacing: float | None = None) -> list[Measurement]:
    """Measurements of every image; ``spacing`` maps image -> mm per pixel (``default_spacing`` otherwise)."""
    rows: list[Measurement] = []
    for corners in images:
        rows += measure_image(corners, spacing.get(corners.image) or default_spacing, anterior, ap)
    return rows


def measurements_csv(rows: Sequence[Measurement]) -> str:
    """The ``measurements.csv`` text of ``rows`` (text fields neutralised for spreadsheets)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MEASUREMENT_COLUMNS)
    for r in rows:
        digits = 0 if r.unit == "grade" else 4
        writer.writerow([neutralise(r.image), r.measure, neutralise(r.level), f"{r.value:.{digits}f}", r.unit,
                         f"{r.ci95_low:.{digits}f}", f"{r.ci95_high:.{digits}f}", r.flags])
    return out.getvalue()


def write_measurements(path: Path, rows: Sequence[Measurement]) -> None:
    """Write ``measurements.csv`` atomically."""
    write_text_atomic(Path(path), measurements_csv(rows))


def spacing_from_sources(images: Sequence[str], root: Path | None = None, centers: Path | None = None,
                         ) -> dict[str, float | None]:
    """Pixel spacing (mm) per image: the centres file's ``pixel_spacing_mm``, else the DICOM header under
    ``root`` (PixelSpacing/ImagerPixelSpacing, read without the pixels), else None (pixels)."""
    found: dict[str, float | None] = dict.fromkeys(images)
    if centers is not None:

        for record in load_centers(centers).records:
            if record.file in found and record.pixel_spacing_mm:
                found[record.file] = record.pixel_spacing_mm
    if root is not None:

        for image in images:
            inside = not Path(image).is_absolute() and ".." not in Path(image).parts
            if found[image] is None and inside:
                found[image] = dicom_file_spacing(Path(root) / image)
    return found


def measure_run(corners_csv: Path, dest: Path, images: Path | None = None, centers: Path | None = None,
                anterior: str = "right", ap: bool = False, spacing: float | None = None
                ) -> tuple[list[ImageCorners], list[Measurement], dict[str, float | None]]:
    """``measurements.csv`` at ``dest`` from a batch's ``corners.csv``, the spacing taken from ``centers``,
    the DICOM headers under ``images``, else ``spacing``; the images read, the rows written, the spacings.

    Raises:
        InputError: not a readable corners.csv.
    """
    found = read_corners(corners_csv)
    mm = spacing_from_sources([c.image for c in found], images, centers)
    rows = measure_all(found, mm, anterior, ap, default_spacing=spacing)
    write_measurements(dest, rows)
    return found, rows, mm
