"""What the report shows: every image of a batch with its corners, doubts and, given annotations, errors."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vcorner import CORNER_NAMES
from vcorner.io.corners_table import NUMBERS, check_corner_row
from vcorner.io.records import ImageRecord, InputError
from vcorner.io.spreadsheet import restore
from vcorner.pipeline.manifest import read_manifest
from vcorner.pipeline.overlay import legacy_overlay_name, overlay_name


@dataclass
class ImageEntry:
    """One image of the batch as the report lists it.

    Attributes:
        image: path relative to DIR.
        reason: why it failed ("" when it has corners).
        corners: its corners.csv rows (text fields restored).
        left_out: vertebra -> why it was left out of this image.
        min_confidence: lowest corner confidence (0 for a failed image).
        prior: corners from the prior fallback or outside the image.
        max_error_px: largest distance to the annotated corner, pixels (None without annotations).
        overlay, json: paths relative to OUT of its overlay and JSON when they exist.
        thumbnail: a ``data:`` URI (filled by :mod:`vcorner.report.thumbnails`).
        links: "overlay"/"json" -> URL of that file relative to the page (filled by :func:`link_entries`).
        flags: vertebra -> its flags (corners.csv's ``flags``; README.md, "Flags"), for flagged vertebrae only.
    """

    image: str
    reason: str = ""
    corners: list[dict[str, str]] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    min_confidence: float = 0.0
    prior: int = 0
    max_error_px: float | None = None
    overlay: str | None = None
    json: str | None = None
    thumbnail: str | None = None
    links: dict[str, str] = field(default_factory=dict)
    flags: dict[str, list[str]] = field(default_factory=dict)

    def corner_rows(self) -> list[list]:
        """The corner table, compact: [vertebra, corner index, x, y, confidence, sd major, sd minor, source]."""
        numbers = ("x", "y", "confidence", "sd_major_px", "sd_minor_px")
        return [[r["vertebra"], CORNER_NAMES.index(r["corner"]), *(float(r[k]) for k in numbers), r["source"]]
                for r in self.corners]

    @property
    def vertebrae(self) -> int:
        return len({r["vertebra"] for r in self.corners})

    def doubt(self) -> tuple:
        """Sort key, most doubtful first: failures, then flagged images, then the largest error, the lowest
        confidence, most priors."""
        error = -self.max_error_px if self.max_error_px is not None else 0.0
        return (0 if self.reason else 1, 0 if self.flags else 1, error, self.min_confidence,
                -self.prior - len(self.left_out), self.image)


def _rows(path: Path, check: bool = False) -> list[dict[str, str]]:
    """The rows of a batch's CSV, names restored; with ``check`` each corner row is validated (InputError)."""
    if not path.is_file():
        return []
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
    if reader.fieldnames is None:
        return []
    needed = ("image", "vertebra", "corner", *NUMBERS, "source") if check else ("image", "reason")
    missing = [c for c in needed if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; not a vcorner batch output")
    rows = list(reader)
    for line, row in enumerate(rows, start=2):
        if check:
            check_corner_row(row, line, str(path))
        for key in ("image", "vertebra", "reason"):
            if key in row and row[key] is not None:
                row[key] = restore(row[key])
    return rows


def collect(out_dir: Path, truth: list[ImageRecord] | None = None) -> list[ImageEntry]:
    """Every image of ``OUT/corners.csv`` and ``OUT/errors.csv``, most doubtful first.

    With ``truth`` (annotations), each image's largest corner error is computed too.
    """

    out_dir = Path(out_dir)
    entries: dict[str, ImageEntry] = {}
    for row in _rows(out_dir / "corners.csv", check=True):
        entries.setdefault(row["image"], ImageEntry(row["image"])).corners.append(row)
    for row in _rows(out_dir / "errors.csv"):
        entry = entries.setdefault(row["image"], ImageEntry(row["image"]))
        if row.get("vertebra"):
            entry.left_out[row["vertebra"]] = row["reason"]
        else:
            entry.reason = row["reason"]
    known = {r.file: r for r in truth or []}
    for entry in entries.values():
        if entry.corners:
            entry.min_confidence = min(float(r["confidence"]) for r in entry.corners)
            entry.prior = sum(r["source"] != "network" for r in entry.corners)
            entry.flags = row_flags(entry.corners)
        if entry.image in known:
            entry.max_error_px = _max_error(entry.corners, known[entry.image])
        for name in (overlay_name(entry.image), legacy_overlay_name(entry.image)):  # a run before 2027
            if (out_dir / "vis" / name).is_file() and (name == overlay_name(entry.image) or name not in entries):
                entry.overlay = f"vis/{name}"
                break
        if (out_dir / "json" / f"{entry.image}.json").is_file():
            entry.json = f"json/{entry.image}.json"
    return sorted(entries.values(), key=ImageEntry.doubt)


def row_flags(rows: list[dict[str, str]]) -> dict[str, list[str]]:
    """vertebra -> its flags, from corners.csv rows (``flags`` joined by ";"; absent in files from before flags)."""
    found: dict[str, list[str]] = {}
    for row in rows:
        for flag in filter(None, (row.get("flags") or "").split(";")):
            found.setdefault(row["vertebra"], [])
            if flag not in found[row["vertebra"]]:
                found[row["vertebra"]].append(flag)
    return found


def _max_error(rows: list[dict[str, str]], record: ImageRecord) -> float | None:
    """Largest distance (px) between a predicted corner and its annotated one; None when none match."""
    truth = {(v.name, c): v.corners[k] for v in record.vertebrae if v.corners is not None
             for k, c in enumerate(CORNER_NAMES)}
    errors = [float(np.hypot(float(r["x"]) - truth[key][0], float(r["y"]) - truth[key][1]))
              for r in rows if (key := (r["vertebra"], r["corner"])) in truth]
    return max(errors) if errors else None


def summary(out_dir: Path, entries: list[ImageEntry]) -> dict[str, Any]:
    """The run's figures for the page header: model, backend, counts, time (from ``OUT/run.json``)."""

    manifest = read_manifest(out_dir) or {}
    last = manifest.get("last_run") or {}
    return {"model": (manifest.get("model") or "unknown")[:16], "card": (manifest.get("card") or "")[:16],
            "backend": last.get("backend", "unknown"), "seconds": last.get("seconds"),
            "calibration": manifest.get("calibration", "unknown"), "images": len(entries),
            "failed": sum(1 for e in entries if e.reason),
            "with_prior": sum(1 for e in entries if e.prior), "left_out": sum(len(e.left_out) for e in entries),
            "flagged": sum(1 for e in entries if e.flags),
            "corners": sum(len(e.corners) for e in entries)}


def link_entries(out_dir: Path, entries: list[ImageEntry], page: Path) -> None:
    """Fill each entry's ``links`` to its overlay and JSON: URLs relative to the page ``page``, percent-encoded
    (``#``, ``?``, spaces)."""
    import os
    from urllib.parse import quote

    base = Path(os.path.relpath(Path(out_dir).resolve(), Path(page).resolve().parent))  # OUT seen from the page
    for entry in entries:
        entry.links = {kind: quote((base / rel).as_posix())
                       for kind, rel in (("overlay", entry.overlay), ("json", entry.json)) if rel}
