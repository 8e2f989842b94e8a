"""Measurements from predicted corners against those from annotated corners: error, interval coverage,
detection of fractures (Genant grade >= 1) and slips (>= 3 mm)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from vcorner.geometry.sequence import checked_annotation
from vcorner.io.records import ImageRecord, InputError
from vcorner.io.spacing import common_unit, spacing_in
from vcorner.measure.intervals import SLIP_MM, ImageCorners, Measurement, measure_image


def annotated_corners(record: ImageRecord) -> ImageCorners | None:
    """The annotated corners of one image (cranial first), as exact corners; None without two annotated."""
    try:
        record = checked_annotation(record)
    except InputError:
        return None
    vertebrae = [v for v in record.vertebrae if v.corners is not None]
    if not vertebrae:
        return None
    xy = np.array([v.corners for v in vertebrae], dtype=np.float64)
    return ImageCorners(record.file, tuple(v.name for v in vertebrae), xy, np.zeros((*xy.shape, 2)),
                        np.ones(xy.shape[:2], dtype=bool))


def truth_measurements(records: Sequence[ImageRecord], anterior: str = "right", ap: bool = False,
                       unit: str | None = None) -> list[Measurement]:
    """Measurements of the annotated corners (their intervals collapse to the value), lengths in ``unit``
    (default :func:`vcorner.io.spacing.common_unit` of ``records``: mm only when every image has a spacing)."""
    unit = unit or common_unit(records)[0]
    rows: list[Measurement] = []
    for record in records:
        corners = annotated_corners(record)
        if corners is not None:
            rows += measure_image(corners, spacing_in(unit, record), anterior, ap, samples=2)
    return rows


def _key(row: Measurement) -> tuple[str, str, str]:
    return row.image, row.measure, row.level


def compare_measurements(predicted: Sequence[Measurement], truth: Sequence[Measurement]) -> dict[str, dict]:
    """Per measure: mean absolute error, share of true values inside the predicted 95% interval and inside its
    anatomy interval (None where the rows have none), count, unit."""
    known = {_key(t): t for t in truth}
    out: dict[str, dict] = {}
    for p in predicted:
        t = known.get(_key(p))
        if t is None or t.unit != p.unit:
            continue
        entry = out.setdefault(p.measure, {"errors": [], "inside": [], "anatomy": [], "unit": p.unit})
        entry["errors"].append(abs(p.value - t.value))
        entry["inside"].append(p.ci95_low <= t.value <= p.ci95_high)
        if p.anatomy_low is not None and p.anatomy_high is not None:
            entry["anatomy"].append(p.anatomy_low <= t.value <= p.anatomy_high)
    return {m: {"mae": float(np.mean(e["errors"])), "coverage_95": float(np.mean(e["inside"])),
                "coverage_anatomy": float(np.mean(e["anatomy"])) if e["anatomy"] else None,
                "n": len(e["errors"]), "unit": e["unit"]} for m, e in out.items()}


def deformed_vertebrae(truth: Sequence[Measurement]) -> set[tuple[str, str]]:
    """(image, vertebra) of the annotated vertebrae with a Genant grade >= 1, or on either side of a slip of at
    least :data:`SLIP_MM` (mm rows only), from the measurements of the annotated corners."""
    out = {(t.image, t.level) for t in truth if t.measure == "genant_grade" and t.value >= 1}
    for t in truth:
        if t.measure == "listhesis" and t.unit == "mm" and abs(t.value) >= SLIP_MM:
            out |= {(t.image, name) for name in t.level.split("-", 1)}
    return out


def _rates(pairs: Sequence[tuple[bool, bool]]) -> dict:
    """Counts, sensitivity and specificity of (found, true) pairs."""
    tp = sum(a and b for a, b in pairs)
    fn = sum(b and not a for a, b in pairs)
    tn = sum(not a and not b for a, b in pairs)
    fp = sum(a and not b for a, b in pairs)
    return {"positives": tp + fn, "negatives": tn + fp, "true_positive": tp, "false_positive": fp,
            "sensitivity": tp / (tp + fn) if tp + fn else None, "specificity": tn / (tn + fp) if tn + fp else None}


def _scored(row: Measurement, measure: str, known: dict) -> bool:
    """Whether ``row`` is of ``measure``, annotated, and (for listhesis) in mm."""
    return row.measure == measure and _key(row) in known and (measure != "listhesis" or row.unit == "mm")


def _flags(row: Measurement) -> set[str]:
    return set(filter(None, row.flags.split(";")))


FLAG_TESTS: dict[str, tuple[str, Callable[[float], bool], Callable[[set[str]], bool]]] = {
    "genant_N (Genant grade >= 1)": ("genant_grade", lambda v: v >= 1,
                                     lambda f: any(x.startswith("genant_") for x in f)),
    "genant_N or possible_genant_N": ("genant_grade", lambda v: v >= 1,
                                      lambda f: any(x.startswith(("genant_", "possible_genant_")) for x in f)),
    f"slip (>= {SLIP_MM:g} mm)": ("listhesis", lambda v: abs(v) >= SLIP_MM, lambda f: "slip" in f),
    "slip or possible_slip": ("listhesis", lambda v: abs(v) >= SLIP_MM, lambda f: bool({"slip", "possible_slip"} & f)),
}
"""Operating points of the flags (README.md, Measurements): label -> (measure, the annotated value's truth, whether
the predicted row's flags call it positive)."""


def flag_detection(predicted: Sequence[Measurement], truth: Sequence[Measurement]) -> dict[str, dict]:
    """Sensitivity and specificity of each flag operating point (:data:`FLAG_TESTS`) against the annotations'
    Genant grade >= 1 and slip >= :data:`SLIP_MM` mm (mm rows only for slips)."""
    known = {_key(t): t for t in truth}
    out = {}
    for label, (measure, positive, flagged) in FLAG_TESTS.items():
        out[label] = _rates([(flagged(_flags(p)), positive(known[_key(p)].value)) for p in predicted
                             if _scored(p, measure, known)])
    return out


def detection(predicted: Sequence[Measurement], truth: Sequence[Measurement]) -> dict[str, dict]:
    """Sensitivity and specificity of the found value's Genant grade >= 1 and slip >= 3 mm (the point value, without
    its interval), against the annotations."""
    known = {_key(t): t for t in truth}
    tests = {"genant_grade>=1": ("genant_grade", lambda v: v >= 1),
             f"slip>={SLIP_MM:g}mm": ("listhesis", lambda v: abs(v) >= SLIP_MM)}
    out = {}
    for label, (measure, positive) in tests.items():
        out[label] = _rates([(positive(p.value), positive(known[_key(p)].value)) for p in predicted
                             if _scored(p, measure, known)])
    return out
