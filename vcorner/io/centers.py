"""Read and write ``centers.csv``: ``image,vertebra,x,y[,pixel_spacing_mm]`` (docs/design.md section 1)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vcorner.io.atomic import write_text_atomic
from vcorner.io.records import ImageRecord, InputError, Vertebra, checked_view
from vcorner.io.spacing import checked_spacing

REQUIRED = ("image", "vertebra", "x", "y")
OPTIONAL = ("pixel_spacing_mm",)
VIEW_COLUMN = "view"
"""Optional column: the image's view (:func:`vcorner.io.records.checked_view`), as ``vcorner batch`` writes it into
``centers.detected.csv``; the same on every row of an image."""


def _decode(raw: bytes, path: Path) -> str:
    """Decode UTF-8 (with or without BOM), UTF-16 with BOM, or Latin-1 as the last resort."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


MAX_VERTEBRAE = 64
"""Most vertebrae one image may list (a human spine has 33); more refuses the image."""
DELIMITERS = (",", ";", "\t")


def delimiter_of(text: str) -> str:
    """The delimiter among comma, semicolon and tab that splits the header line into the required columns.

    The header is parsed with the standard CSV dialect (RFC 4180 quoting), so a delimiter inside a quoted
    field or in a later row cannot mislead it; comma when none fits (the missing columns are reported then).
    """
    header = next(iter(text.splitlines()), "")
    for delimiter in DELIMITERS:
        names = {h.strip().lower() for h in next(csv.reader([header], delimiter=delimiter), [])}
        if all(c in names for c in REQUIRED):
            return delimiter
    return ","


def normalise_image_name(name: str) -> str:
    """An image path as written in centers.csv, in one canonical POSIX spelling (``./a//b.png`` -> ``a/b.png``).

    Only ``.`` parts and repeated separators go; ``..`` stays for the plan to refuse.
    """
    parts = [p for p in name.strip().replace("\\", "/").split("/") if p not in ("", ".")]
    lead = "/" if name.strip().startswith(("/", "\\")) else ""
    return lead + "/".join(parts)


def _number(value: str, column: str, where: str) -> float:
    try:
        number = float(value.strip().replace(",", ".")) if value is not None else math.nan
    except ValueError:
        raise InputError(f"{where}: column '{column}' is not a number: {value!r}") from None
    return number


@dataclass(frozen=True)
class CentersTable:
    """A parsed ``centers.csv``: usable images, and images refused for a bad row (image -> one-line reason)."""

    records: list[ImageRecord]
    problems: dict[str, str]


def _read_text(path: Path) -> str:
    try:
        return _decode(path.read_bytes(), path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a CSV file") from None


def _row_values(row: dict, where: str) -> tuple[float, float, float | None]:
    """x, y (NaN/inf kept for the batch to report) and the optional spacing of one row."""
    if None in row:
        raise InputError(f"{where}: more fields than the header has")
    x, y = _number(row["x"], "x", where), _number(row["y"], "y", where)
    raw = (row.get("pixel_spacing_mm") or "").strip()
    if not raw:
        return x, y, None
    return x, y, checked_spacing(_number(raw, "pixel_spacing_mm", where), f"{where}: pixel_spacing_mm")


def load_centers(path: Path) -> CentersTable:
    """Read ``centers.csv``; a bad row refuses only its image (reported in ``problems``).

    Images keep their order of first appearance; vertebrae their order in the file (cranial to caudal).

    Raises:
        InputError: the file is missing or its header lacks a required column (one line).
    """
    path = Path(path)
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter_of(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; header must be image,vertebra,x,y")
    reader.fieldnames = header
    rows: dict[str, list[tuple[str, float, float]]] = {}
    seen: dict[str, set[str]] = {}
    spacing: dict[str, float | None] = {}
    views: dict[str, str] = {}
    problems: dict[str, str] = {}
    for line, row in enumerate(reader, start=2):
        where = f"{path.name}: row {line}"
        image = normalise_image_name(row.get("image") or "")
        name = (row.get("vertebra") or "").strip()
        try:
            if not image or not name:
                raise InputError(f"{where}: empty 'image' or 'vertebra'")
            x, y, value = _row_values(row, where)
            if name in seen.setdefault(image, set()):
                raise InputError(f"{where}: vertebra {name!r} listed twice for this image")
            if len(seen[image]) >= MAX_VERTEBRAE:
                raise InputError(f"{where}: more than {MAX_VERTEBRAE} vertebrae listed for this image")
            view = checked_view(row.get(VIEW_COLUMN) or "", f"{where}: {VIEW_COLUMN}")
            if views.setdefault(image, view) != view:
                raise InputError(f"{where}: view {view!r} differs from this image's earlier rows ({views[image]!r})")
        except InputError as err:
            problems.setdefault(image or f"<row {line}>", str(err))
            continue
        seen[image].add(name)
        rows.setdefault(image, []).append((name, x, y))
        spacing[image] = value if value is not None else spacing.get(image)
    records = [
        ImageRecord(image, tuple(Vertebra(n, np.array([x, y])) for n, x, y in entries), spacing[image], views[image])
        for image, entries in rows.items() if image not in problems
    ]
    return CentersTable(records, problems)


def read_centers(path: Path) -> list[ImageRecord]:
    """Read ``centers.csv`` strictly: any bad row raises.

    Raises:
        InputError: one line naming the file, the row and the problem.
    """
    table = load_centers(path)
    if table.problems:
        raise InputError(next(iter(table.problems.values())))
    return table.records


def centers_to_csv(records: Sequence[ImageRecord]) -> str:
    """The ``centers.csv`` text for ``records`` (with ``pixel_spacing_mm`` when any image has it)."""
    with_spacing = any(r.pixel_spacing_mm is not None for r in records)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REQUIRED + (OPTIONAL if with_spacing else ()))
    for record in records:
        for v in record.vertebrae:
            row = [record.file, v.name, f"{v.center[0]:.3f}", f"{v.center[1]:.3f}"]
            if with_spacing:
                row.append("" if record.pixel_spacing_mm is None else f"{record.pixel_spacing_mm:.6g}")
            writer.writerow(row)
    return out.getvalue()


def write_centers(path: Path, records: Sequence[ImageRecord]) -> None:
    """Write the centres of ``records`` as ``centers.csv`` atomically."""
    write_text_atomic(Path(path), centers_to_csv(records))
