"""Read a ``corners.csv`` back: rows grouped by image and vertebra, names restored (docs/design.md section 1)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from vcorner.io.records import InputError
from vcorner.io.spreadsheet import restore

BASIC = ("image", "vertebra", "corner", "x", "y")


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
