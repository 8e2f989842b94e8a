"""Read and write ``centers.csv``: ``image,vertebra,x,y[,pixel_spacing_mm]`` (DESIGN.md section 2)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vcorner.io.atomic import write_text_atomic
from vcorner.io.records import ImageRecord, InputError, Vertebra

REQUIRED = ("image", "vertebra", "x", "y")
OPTIONAL = ("pixel_spacing_mm",)


def _decode(raw: bytes, path: Path) -> str:
    """Decode UTF-8 (with or without BOM), UTF-16 with BOM, or Latin-1 as the last resort."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    """Sniff the delimiter among comma, semicolon and tab; default to comma."""
    try:
        return csv.Sniffer().sniff(text.splitlines()[0] if text else "", delimiters=",;\t")
    except csv.Error:
        return csv.excel


def _number(value: str, column: str, where: str) -> float:
    try:
        number = float(value.strip().replace(",", ".")) if value is not None else math.nan
    except ValueError:
        raise InputError(f"{where}: column '{column}' is not a number: {value!r}") from None
    return number


def read_centers(path: Path) -> list[ImageRecord]:
    """Read ``centers.csv`` into image records (centres only), images in order of first appearance.

    Non-finite coordinates are kept (NaN) so that the batch can report that image in ``errors.csv``;
    structural problems (columns, numbers, duplicates) raise.

    Raises:
        InputError: one line naming the file, the row and the problem.
    """
    path = Path(path)
    try:
        text = _decode(path.read_bytes(), path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a CSV file") from None
    reader = csv.DictReader(io.StringIO(text), dialect=_dialect(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; header must be image,vertebra,x,y")
    reader.fieldnames = header
    rows: dict[str, list[tuple[str, float, float]]] = {}
    spacing: dict[str, float | None] = {}
    for line, row in enumerate(reader, start=2):
        where = f"{path}: row {line}"
        if None in row:
            raise InputError(f"{where}: more fields than the header has")
        image, name = (row.get("image") or "").strip(), (row.get("vertebra") or "").strip()
        if not image or not name:
            raise InputError(f"{where}: empty 'image' or 'vertebra'")
        x, y = _number(row["x"], "x", where), _number(row["y"], "y", where)
        entries = rows.setdefault(image, [])
        if any(n == name for n, _, _ in entries):
            raise InputError(f"{where}: vertebra {name!r} listed twice for image {image!r}")
        entries.append((name, x, y))
        raw = (row.get("pixel_spacing_mm") or "").strip()
        if raw:
            value = _number(raw, "pixel_spacing_mm", where)
            if not math.isfinite(value) or value <= 0:
                raise InputError(f"{where}: pixel_spacing_mm must be positive, got {raw!r}")
            spacing[image] = value
        else:
            spacing.setdefault(image, None)
    return [
        ImageRecord(image, tuple(Vertebra(n, np.array([x, y])) for n, x, y in entries), spacing[image])
        for image, entries in rows.items()
    ]


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
