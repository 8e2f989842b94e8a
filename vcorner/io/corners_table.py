"""Read a ``corners.csv`` back: rows grouped by image and vertebra, names restored (docs/design.md section 1)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from vcorner.io.records import InputError
from vcorner.io.spreadsheet import restore

BASIC = ("image", "vertebra", "corner", "x", "y")
NUMBERS = ("x", "y", "confidence", "sd_major_px", "sd_minor_px", "angle_deg")
"""The numeric columns of a batch's corners.csv (README, "Outputs of vcorner batch")."""


def group_corner_rows(text: str, source: str = "corners.csv", needed: Iterable[str] = BASIC
                      ) -> dict[str, dict[str, dict[str, dict[str, str]]]]:
    """image -> vertebra -> corner name -> row, in file order (callers put the vertebrae in anatomical order).

    Raises:
        InputError: a column of ``needed`` is missing (one line).
    """
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in needed if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"{source}: not a vcorner corners.csv (missing column(s) {', '.join(missing)})")
    grouped: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    for row in reader:
        grouped.setdefault(restore(row["image"]), {}).setdefault(restore(row["vertebra"]), {})[row["corner"]] = row
    return grouped


def check_corner_row(row: dict[str, str | None], line: int, source: str = "corners.csv",
                     numbers: Iterable[str] = NUMBERS) -> None:
    """Refuse a row whose corner name is unknown or whose ``numbers`` are empty or not finite.

    Raises:
        InputError: one line naming the file, the line and the field.
    """
    import math

    from vcorner import CORNER_NAMES

    if row.get("corner") not in CORNER_NAMES:
        raise InputError(f"{source}, line {line}: unknown corner {row.get('corner')!r} (expected one of "
                         f"{', '.join(CORNER_NAMES)})")
    for key in numbers:
        value = row.get(key)
        try:
            number = float(value) if value is not None else math.nan
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise InputError(f"{source}, line {line}: {key} is {value!r}, not a finite number")
