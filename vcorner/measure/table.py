"""``corners.csv`` in, ``measurements.csv`` out, with each image's pixel spacing found where it is recorded."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from vcorner import CORNER_NAMES
from vcorner.geometry.sequence import cranial_order
from vcorner.io.atomic import write_text_atomic
from vcorner.io.centers import load_centers
from vcorner.io.claims import csv_header
from vcorner.io.corners_table import group_corner_rows
from vcorner.io.dicom import dicom_file_spacing
from vcorner.io.records import InputError
from vcorner.io.spacing import checked_spacing
from vcorner.io.spreadsheet import neutralise
from vcorner.measure.intervals import ImageCorners, Measurement, Spacing, measure_image
from vcorner.postprocess.decode import ellipse_covariance

log = logging.getLogger(__name__)

MEASUREMENT_COLUMNS = ("image", "measure", "level", "value", "unit", "ci95_low", "ci95_high", "flags",
                       "anatomy_ci95_low", "anatomy_ci95_high")
EARLIER_MEASUREMENT_COLUMNS = MEASUREMENT_COLUMNS[:8]
"""The header of measurements files written before the anatomy intervals (still vcorner's own: rewritten freely)."""
SPACING_REFUSED_FLAG = "spacing_refused"
"""Flag of the px lengths of an image whose recorded pixel spacing was implausible (README.md, Measurements)."""
NEEDED = ("image", "vertebra", "corner", "x", "y", "sd_major_px", "sd_minor_px", "angle_deg", "source")


def _image_corners(image: str, by_vertebra: dict[str, dict[str, dict[str, str]]]) -> ImageCorners | None:
    """One image's corners, vertebrae cranial first whatever the file's row order (the order of the centre
    checks, :func:`vcorner.geometry.sequence.cranial_order`, on the corners' centroids); vertebrae without all
    four finite corners are left out."""
    names, xy, cov, network, flags = [], [], [], [], []
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
        flags.append(tuple(dict.fromkeys(f for r in ordered for f in (r.get("flags") or "").split(";") if f)))
    if not names:
        return None
    order, note = cranial_order(names, np.array([v.mean(axis=0) for v in xy]))
    if note:
        log.warning("%s: %s", image, note)
    return ImageCorners(image, tuple(names[i] for i in order), np.array(xy)[order], np.array(cov)[order],
                        np.array(network, dtype=bool)[order], tuple(flags[i] for i in order))


def read_corners(path: Path) -> list[ImageCorners]:
    """Every image of a ``corners.csv`` (images in file order, vertebrae cranial first).

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


def measure_all(images: Iterable[ImageCorners], spacing: dict[str, Spacing], anterior: str = "right",
                ap: bool = False, default_spacing: float | None = None,
                refused: dict[str, str] | None = None, reader_sd_mm: float = 0.0) -> list[Measurement]:
    """Measurements of every image; ``spacing`` maps image -> mm per pixel (``default_spacing`` otherwise).

    An image in ``refused`` (image -> why its recorded spacing was refused) stays in pixels, and its length
    rows carry the flag :data:`SPACING_REFUSED_FLAG`, so that the file itself says why they are not in mm.
    ``reader_sd_mm`` (:func:`reader_spread_of_run`): the anatomy intervals of the images with a spacing.
    """
    refused = refused or {}
    rows: list[Measurement] = []
    for corners in images:
        if corners.image in refused:
            found = measure_image(corners, None, anterior, ap)
            rows += [replace(r, flags=";".join(filter(None, (r.flags, SPACING_REFUSED_FLAG)))) if r.unit == "px"
                     else r for r in found]
        else:
            rows += measure_image(corners, spacing.get(corners.image) or default_spacing, anterior, ap,
                                  reader_sd_mm=reader_sd_mm)
    return rows


def _bound(value: float | None, digits: int) -> str:
    """A CSV cell of an interval bound (empty when there is none)."""
    return "" if value is None else f"{value:.{digits}f}"


def measurements_csv(rows: Sequence[Measurement]) -> str:
    """The ``measurements.csv`` text of ``rows`` (text fields neutralised for spreadsheets)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MEASUREMENT_COLUMNS)
    for r in rows:
        digits = 0 if r.unit == "grade" else 4
        writer.writerow([neutralise(r.image), r.measure, neutralise(r.level), f"{r.value:.{digits}f}", r.unit,
                         f"{r.ci95_low:.{digits}f}", f"{r.ci95_high:.{digits}f}", r.flags,
                         _bound(r.anatomy_low, digits), _bound(r.anatomy_high, digits)])
    return out.getvalue()


def write_measurements(path: Path, rows: Sequence[Measurement]) -> None:
    """Write ``measurements.csv`` atomically."""
    write_text_atomic(Path(path), measurements_csv(rows))


def spacing_from_sources(images: Sequence[str], root: Path | None = None, centers: Path | None = None,
                         ) -> tuple[dict[str, Spacing], dict[str, str]]:
    """Pixel spacing (mm) per image: the centres file's ``pixel_spacing_mm``, else the DICOM header under
    ``root`` (PixelSpacing/ImagerPixelSpacing, read without the pixels, (x, y) per axis), else None (pixels);
    and the images whose DICOM spacing was refused (outside :data:`vcorner.io.spacing.SPACING_RANGE_MM`), with
    the reason.

    Raises:
        InputError: a row of ``centers`` for one of ``images`` was refused (a bad spacing): its message.
    """
    found: dict[str, Spacing] = dict.fromkeys(images)
    refused: dict[str, str] = {}
    if centers is not None:
        table = load_centers(centers)
        for image, problem in table.problems.items():
            if image in found:
                raise InputError(problem)
        for record in table.records:
            if record.file in found and record.pixel_spacing_mm:
                found[record.file] = record.pixel_spacing_mm
    if root is not None:
        for image in images:
            inside = not Path(image).is_absolute() and ".." not in Path(image).parts
            if found[image] is None and inside:
                found[image], problem = dicom_file_spacing(Path(root) / image)
                if problem:
                    refused[image] = problem
    return found, refused


def measure_run(corners_csv: Path, dest: Path, images: Path | None = None, centers: Path | None = None,
                anterior: str = "right", ap: bool = False, spacing: float | None = None,
                reader_sd_mm: float | None = None
                ) -> tuple[list[ImageCorners], list[Measurement], dict[str, Spacing]]:
    """``measurements.csv`` at ``dest`` from a batch's ``corners.csv``, the spacing taken from ``centers``,
    the DICOM headers under ``images``, else ``spacing``; the images read, the rows written, the spacings
    (None for images in pixels, a DICOM spacing that was refused included, with a warning naming it).
    ``reader_sd_mm`` (None: the one the batch recorded beside ``corners_csv``, :func:`reader_spread_of_run`)
    gives the anatomy intervals.

    Raises:
        InputError: not a readable corners.csv; a ``spacing`` (``--spacing``) or a spacing in ``centers``
            that is not a plausible pixel spacing (:data:`vcorner.io.spacing.SPACING_RANGE_MM`).
    """
    if spacing is not None:
        spacing = checked_spacing(spacing, "--spacing")
    found = read_corners(corners_csv)
    mm, refused = spacing_from_sources([c.image for c in found], images, centers)
    for problem in refused.values():
        log.warning("%s; its lengths stay in px, flagged %s in measurements.csv", problem, SPACING_REFUSED_FLAG)
    if reader_sd_mm is None:
        reader_sd_mm = reader_spread_of_run(Path(corners_csv).parent)
    rows = measure_all(found, mm, anterior, ap, default_spacing=spacing, refused=refused, reader_sd_mm=reader_sd_mm)
    write_measurements(dest, rows)
    return found, rows, {c.image: None if c.image in refused else mm.get(c.image) or spacing for c in found}


def reader_spread_of_run(out: Path) -> float:
    """The reader's spread (mm per axis; the card's ``trust.reader_sd_mm``) that the batch writing ``out`` recorded
    in ``out/run.json``; 0 when it recorded none (a card without it, or no run.json)."""
    from vcorner.io.claims import json_field
    from vcorner.io.paths import RUN_MARKER, written_by_vcorner

    value = json_field(Path(out) / RUN_MARKER, READER_NOTE) if written_by_vcorner(Path(out)) else None
    return float(value) if isinstance(value, int | float) and np.isfinite(value) and value > 0 else 0.0


READER_NOTE = "reader_sd_mm"
"""The ``run.json`` key of the card's ``trust.reader_sd_mm`` (``card_notes`` of vcorner/pipeline/run.py)."""


def is_measurements(path: Path) -> bool:
    """True when ``path`` is a measurements.csv vcorner wrote (its first line is :data:`MEASUREMENT_COLUMNS`, or the
    earlier header)."""
    return csv_header(path) in (list(MEASUREMENT_COLUMNS), list(EARLIER_MEASUREMENT_COLUMNS))
