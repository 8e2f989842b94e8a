"""Batch outputs: ``corners.csv`` as a journal that survives a kill, ``errors.csv``, per-image JSON.

Each finished image's rows are appended in one write and fsynced; on resume, rows of images that are not
complete (a kill mid-write) are dropped and the file is rewritten atomically, so every expected row ends up
exactly once. Rows of images that the current run does not plan (an earlier run with another
``centers.csv``) are kept as they are: OUT holds the union of its runs, never silently less.

Text fields pass through :func:`vcorner.io.spreadsheet.neutralise`; every number is checked finite first,
so ``corners.csv`` and the JSON files never hold NaN (:func:`check_finite`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vcorner import CORNER_NAMES
from vcorner.io.atomic import write_text_atomic
from vcorner.io.paths import safe_path
from vcorner.io.records import InputError
from vcorner.io.spreadsheet import neutralise, restore
from vcorner.pipeline.overlay import overlay_name
from vcorner.postprocess.decode import VertebraCorners

CORNER_COLUMNS = ("image", "vertebra", "corner", "x", "y", "confidence", "sd_major_px", "sd_minor_px",
                  "angle_deg", "source", "flags")
LEGACY_CORNER_COLUMNS = CORNER_COLUMNS[:-1]
"""The header of a ``corners.csv`` written before flags (README.md, "Flags"): still read and resumed."""
FLAG_SEPARATOR = ";"
ERROR_COLUMNS = ("image", "vertebra", "reason")


def check_finite(corners: Sequence[VertebraCorners]) -> None:
    """InputError naming the first vertebra whose position, confidence or covariance is not finite."""
    for v in corners:
        if not (np.all(np.isfinite(v.xy)) and np.all(np.isfinite(v.confidence)) and np.all(np.isfinite(v.cov))):
            raise InputError(f"vertebra {v.name}: non-finite corners or uncertainty (not written)")


def corner_rows(image: str, corners: Sequence[VertebraCorners]) -> list[list[str]]:
    """The ``corners.csv`` rows of one image (4 per vertebra, in CORNER_NAMES order).

    Raises:
        InputError: a non-finite value (nothing of the image is written then).
    """
    check_finite(corners)
    rows = []
    for v in corners:
        ellipses = v.ellipses()
        for k, corner in enumerate(CORNER_NAMES):
            major, minor, angle = ellipses[k]
            rows.append([neutralise(image), neutralise(v.name), corner, f"{v.xy[k, 0]:.3f}", f"{v.xy[k, 1]:.3f}",
                         f"{v.confidence[k]:.4f}", f"{major:.3f}", f"{minor:.3f}", f"{angle:.2f}", v.source[k],
                         FLAG_SEPARATOR.join(v.flags)])
    return rows


def row_flags(rows: Sequence[Sequence[str]]) -> dict[str, int]:
    """flag -> number of vertebrae carrying it among one image's ``corners.csv`` rows (4 per vertebra; the last
    field holds its flags joined by :data:`FLAG_SEPARATOR`)."""
    counts: dict[str, int] = {}
    for row in rows[::4]:
        for flag in filter(None, row[-1].split(FLAG_SEPARATOR)):
            counts[flag] = counts.get(flag, 0) + 1
    return counts


def image_json(image: str, corners: Sequence[VertebraCorners]) -> dict:
    """Per-image JSON: every vertebra's corners with confidence, covariance and source."""
    check_finite(corners)
    return {"image": image, "vertebrae": [
        {"name": v.name, "corners": {
            corner: {"x": round(float(v.xy[k, 0]), 3), "y": round(float(v.xy[k, 1]), 3),
                     "confidence": round(float(v.confidence[k]), 4),
                     "cov_px2": np.round(v.cov[k], 4).tolist(), "source": v.source[k]}
            for k, corner in enumerate(CORNER_NAMES)}, "flags": list(v.flags)}
        for v in corners]}


def csv_text(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def append_synced(handle, rows: Sequence[Sequence[str]]) -> None:
    """Append ``rows`` to an open CSV journal in a single write, then flush and fsync (a kill leaves at most a
    partial last line, which the journal's reader drops)."""
    handle.write(csv_text(rows))
    handle.flush()
    os.fsync(handle.fileno())


class CornerJournal:
    """Appends finished images to ``corners.csv``; knows which images are already complete.

    Args:
        path: the ``corners.csv`` file.
        expected_rows: image -> number of rows a complete image has (4 x its vertebrae).
        resume: keep complete images already in the file (else start afresh).
        redo: images whose rows are dropped even when complete (they are done again).
        known_rows: rows an earlier run expected per image (``OUT/run.json``); an unplanned image with fewer
            (cut by a kill) is dropped, as a planned one would be redone.

    Attributes:
        done: images kept from the file. redone: images of ``redo`` that had complete rows (and planned images
            whose rows were written before flags: they are done again, so that their flags are found).
        others: images in the file that this run does not plan; their rows are kept (rows from before flags get an
            empty ``flags`` field).
    """

    def __init__(self, path: Path, expected_rows: dict[str, int], resume: bool,
                 redo: set[str] | frozenset[str] = frozenset(), known_rows: dict[str, int] | None = None) -> None:
        self.path = Path(path)
        grouped, legacy = self._rows_by_image() if resume else ({}, set())
        complete = {k: v for k, v in grouped.items() if len(v) == expected_rows.get(k, -1)}
        known = known_rows or {}
        others = {k: v for k, v in grouped.items() if k not in expected_rows and len(v) == known.get(k, len(v))}
        self.partial = {k for k in grouped if k not in expected_rows and k not in others}
        kept = {image: rows for image, rows in complete.items() if image not in redo and image not in legacy}
        self.done, self.redone, self.others = set(kept), set(complete) - set(kept), set(others)
        rows = [r for group in (others, kept) for image_rows in group.values() for r in image_rows]
        write_text_atomic(self.path, csv_text(rows, CORNER_COLUMNS))
        self.handle = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 (closed in close())

    def _rows_by_image(self) -> tuple[dict[str, list[list[str]]], set[str]]:
        """Rows of the existing file grouped by image (its name as written, un-neutralised), and the images whose
        rows come from a file written before flags (:data:`LEGACY_CORNER_COLUMNS`; given an empty ``flags``)."""
        if not self.path.is_file():
            return {}, set()
        text = self.path.read_text(encoding="utf-8", errors="replace")
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]  # a kill mid-line leaves a partial last row
        grouped: dict[str, list[list[str]]] = {}
        rows = list(csv.reader(io.StringIO(text)))
        old = bool(rows) and tuple(rows[0]) == LEGACY_CORNER_COLUMNS
        for row in rows:
            if old and len(row) == len(LEGACY_CORNER_COLUMNS):
                row = [*row, ""]
            if len(row) == len(CORNER_COLUMNS) and row[0] != "image":
                grouped.setdefault(restore(row[0]), []).append(row)
        return grouped, set(grouped) if old else set()

    def add(self, rows: list[list[str]]) -> None:
        """Append one image's rows in a single write, then flush and fsync."""
        append_synced(self.handle, rows)

    def close(self) -> None:
        self.handle.close()


def write_errors(path: Path, errors: dict[str, str], vertebrae: dict[tuple[str, str], str] | None = None) -> None:
    """Write ``errors.csv`` atomically: (image, "", reason) per failed image, (image, vertebra, reason) per
    refused vertebra of an image whose other vertebrae were answered."""
    entries = [(image, "", reason) for image, reason in errors.items()]
    entries += [(image, name, reason) for (image, name), reason in (vertebrae or {}).items() if image not in errors]
    rows = [[neutralise(image), neutralise(name), neutralise(" ".join(reason.split()))]
            for image, name, reason in sorted(entries)]
    write_text_atomic(Path(path), csv_text(rows, ERROR_COLUMNS))


def read_errors(path: Path) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """An existing ``errors.csv``: failed images and left-out vertebrae (empty when missing or unreadable)."""
    failed: dict[str, str] = {}
    vertebrae: dict[tuple[str, str], str] = {}
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                image, name = restore(row.get("image") or ""), restore(row.get("vertebra") or "")
                reason = restore(row.get("reason") or "")
                if name:
                    vertebrae[(image, name)] = reason
                elif image:
                    failed[image] = reason
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}, {}
    return failed, vertebrae


def write_image_json(out_dir: Path, image: str, corners: Sequence[VertebraCorners]) -> None:
    """Write ``out_dir/json/<image>.json`` atomically (subfolders of the image path kept); never NaN."""
    text = json.dumps(image_json(image, corners), indent=1, allow_nan=False)
    write_text_atomic(Path(out_dir) / "json" / f"{image}.json", text)


OWN_FILES = ("corners.csv", "errors.csv", "run.json", "centers.detected.csv")


def output_paths(out_dir: Path, images: Sequence[str], write_json: bool, vis: bool) -> list[Path]:
    """Every file a batch over ``images`` may write in ``out_dir``, resolved."""

    out_dir = Path(out_dir)
    paths = [out_dir / name for name in OWN_FILES]
    paths += [out_dir / "json" / f"{image}.json" for image in images] if write_json else []
    paths += [out_dir / "vis" / overlay_name(image) for image in images] if vis else []
    return [p.resolve() for p in paths]


def check_outputs_apart(out_dir: Path, inputs: Sequence[Path], images: Sequence[str], write_json: bool,
                        vis: bool) -> None:
    """Refuse a run whose outputs would overwrite one of its ``inputs`` (images, the centres file).

    Raises:
        InputError: one line naming the output and the input it would replace.
    """
    taken = {Path(p).resolve() for p in inputs}
    for path in output_paths(out_dir, images, write_json, vis):
        if path in taken:
            raise InputError(f"{path} would overwrite an input of this run; choose an --out outside the images "
                             "folder and away from the centres file")


def keep_previous(out_dir: Path) -> Path | None:
    """Move an earlier run's corners.csv, errors.csv, run.json, detected centres and its ``json/`` and ``vis/``
    folders into ``OUT/previous-<UTC time>/`` (for ``--no-resume``, which starts afresh without losing what was
    there); the folder, or None if nothing moved."""
    from vcorner.io.claims import previous_folder

    out_dir = Path(out_dir)
    if not (out_dir / "corners.csv").is_file() or (out_dir / "corners.csv").stat().st_size == 0:
        return None
    found = [out_dir / name for name in OWN_FILES if (out_dir / name).is_file()]
    found += [out_dir / name for name in EXTRA_FOLDERS if (out_dir / name).is_dir()]
    keep = previous_folder(out_dir)
    for path in found:
        os.replace(path, keep / path.name)
    return keep


def is_batch_output(path: Path) -> bool:
    """True when ``path`` is a file a vcorner batch writes and may rewrite (resume, ``--no-resume``): a
    ``corners.csv``, ``errors.csv``, ``centers.detected.csv`` or ``measurements.csv`` whose first line is vcorner's
    header, an empty one, or a ``run.json`` of vcorner's format. Anything else under those names is the user's."""
    from vcorner.io.claims import csv_header
    from vcorner.io.paths import written_by_vcorner
    from vcorner.measure.table import EARLIER_MEASUREMENT_COLUMNS, MEASUREMENT_COLUMNS
    from vcorner.pipeline.detection import DETECTED_COLUMNS, EARLIER_COLUMNS

    path = Path(path)
    if path.name == "run.json":
        return written_by_vcorner(path.parent)
    header = {"corners.csv": CORNER_COLUMNS, "errors.csv": ERROR_COLUMNS, "centers.detected.csv": DETECTED_COLUMNS,
              "measurements.csv": MEASUREMENT_COLUMNS}.get(path.name)
    known = [[], list(header)] + ([list(LEGACY_CORNER_COLUMNS)] if path.name == "corners.csv" else []) \
        + ([list(EARLIER_COLUMNS)] if path.name == "centers.detected.csv" else []) \
        + ([list(EARLIER_MEASUREMENT_COLUMNS)] if path.name == "measurements.csv" else [])
    return header is not None and csv_header(path) in known


EXTRA_FOLDERS = ("json", "vis")
"""Where ``--json`` and ``--vis`` write each image's extra outputs."""


def remove_stale_extras(out_dir: Path, images: Sequence[str]) -> int:
    """Delete the JSON and overlay an earlier run wrote for ``images`` (which this run redoes: their answer is
    no longer current, and a report must not link it); how many files went. Only files inside ``OUT/json`` and
    ``OUT/vis`` are ever touched, whatever a name holds (an absolute path, ``..``, a name too long)."""
    gone = 0
    for image in images:
        for folder, name in (("json", f"{image}.json"), ("vis", overlay_name(image))):
            try:
                path = safe_path(Path(out_dir) / folder, name)
                if path.is_file():
                    path.unlink()
                    gone += 1
            except (InputError, OSError, ValueError):  # a name that cannot be inside OUT, or one too long
                continue
    return gone
