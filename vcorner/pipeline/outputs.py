"""Batch outputs: ``corners.csv`` as a journal that survives a kill, ``errors.csv``, per-image JSON.

Each finished image's rows are appended in one write and fsynced; on resume, rows of images that are not
complete (a kill mid-write) are dropped and the file is rewritten atomically, so every expected row ends up
exactly once.
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
from vcorner.postprocess.decode import VertebraCorners

CORNER_COLUMNS = ("image", "vertebra", "corner", "x", "y", "confidence", "sd_major_px", "sd_minor_px",
                  "angle_deg", "source")
ERROR_COLUMNS = ("image", "reason")


def corner_rows(image: str, corners: Sequence[VertebraCorners]) -> list[list[str]]:
    """The ``corners.csv`` rows of one image (4 per vertebra, in CORNER_NAMES order)."""
    rows = []
    for v in corners:
        ellipses = v.ellipses()
        for k, corner in enumerate(CORNER_NAMES):
            major, minor, angle = ellipses[k]
            rows.append([image, v.name, corner, f"{v.xy[k, 0]:.3f}", f"{v.xy[k, 1]:.3f}",
                         f"{v.confidence[k]:.4f}", f"{major:.3f}", f"{minor:.3f}", f"{angle:.2f}", v.source[k]])
    return rows


def image_json(image: str, corners: Sequence[VertebraCorners]) -> dict:
    """Per-image JSON: every vertebra's corners with confidence, covariance and source."""
    return {"image": image, "vertebrae": [
        {"name": v.name, "corners": {
            corner: {"x": round(float(v.xy[k, 0]), 3), "y": round(float(v.xy[k, 1]), 3),
                     "confidence": round(float(v.confidence[k]), 4),
                     "cov_px2": np.round(v.cov[k], 4).tolist(), "source": v.source[k]}
            for k, corner in enumerate(CORNER_NAMES)}}
        for v in corners]}


def _csv_text(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


class CornerJournal:
    """Appends finished images to ``corners.csv``; knows which images are already complete.

    Args:
        path: the ``corners.csv`` file.
        expected_rows: image -> number of rows a complete image has (4 x its vertebrae).
        resume: keep complete images already in the file (else start afresh).
        redo: images whose rows are dropped even when complete (they are done again).

    Attributes:
        done: images kept from the file. redone: images of ``redo`` that had complete rows.
    """

    def __init__(self, path: Path, expected_rows: dict[str, int], resume: bool,
                 redo: set[str] | frozenset[str] = frozenset()) -> None:
        self.path = Path(path)
        complete = self._complete_rows(expected_rows) if resume else {}
        kept = {image: rows for image, rows in complete.items() if image not in redo}
        self.done, self.redone = set(kept), set(complete) - set(kept)
        write_text_atomic(self.path, _csv_text([r for rows in kept.values() for r in rows], CORNER_COLUMNS))
        self.handle = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 (closed in close())

    def _complete_rows(self, expected_rows: dict[str, int]) -> dict[str, list[list[str]]]:
        if not self.path.is_file():
            return {}
        text = self.path.read_text(encoding="utf-8", errors="replace")
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]  # a kill mid-line leaves a partial last row
        grouped: dict[str, list[list[str]]] = {}
        for row in csv.reader(io.StringIO(text)):
            if len(row) == len(CORNER_COLUMNS) and row[0] != "image":
                grouped.setdefault(row[0], []).append(row)
        return {k: v for k, v in grouped.items() if len(v) == expected_rows.get(k, -1)}

    def add(self, rows: list[list[str]]) -> None:
        """Append one image's rows in a single write, then flush and fsync."""
        self.handle.write(_csv_text(rows))
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def write_errors(path: Path, errors: dict[str, str]) -> None:
    """Write ``errors.csv`` (image, one-line reason) atomically."""
    rows = [[image, " ".join(reason.split())] for image, reason in sorted(errors.items())]
    write_text_atomic(Path(path), _csv_text(rows, ERROR_COLUMNS))


def write_image_json(out_dir: Path, image: str, corners: Sequence[VertebraCorners]) -> None:
    """Write ``out_dir/json/<image>.json`` atomically (subfolders of the image path kept)."""
    write_text_atomic(Path(out_dir) / "json" / f"{image}.json", json.dumps(image_json(image, corners), indent=1))
