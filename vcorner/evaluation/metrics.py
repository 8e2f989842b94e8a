"""Corner accuracy the paper's way (section 4, Table 1): P2P and P2C in millimetres, fit failure.

Predictions (``corners.csv``) are matched to annotations by image, vertebra and corner name; whatever does not
match is reported by name and counted, never silently dropped.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vcorner import CORNER_NAMES
from vcorner.geometry.sequence import cranial_order
from vcorner.geometry.spline import contour, point_to_curve
from vcorner.io.records import ImageRecord, InputError
from vcorner.io.spacing import common_unit, spacing_in
from vcorner.io.spreadsheet import restore
from vcorner.postprocess.decode import ellipse_covariance

FIT_FAILURE_MM = 3.0
"""A corner further than this from its annotation (P2P, mm) is a fit failure (the paper's rule)."""
COVERAGE_BANDS = {0.95: (0.90, 0.98), 0.50: (0.40, 0.60)}
"""Share of true corners inside the p% ellipses that reads as "about right", per level p: the same tolerance on
the ellipses' size at both levels (ellipses up to about 14% too small or too large give 90-98% at 95% and
40-60% at 50%, for Gaussian errors)."""
MIN_CORNERS_TO_JUDGE = 20
"""Fewer network corners than this: a coverage is printed but not judged (one corner moves it by 5% or more)."""


@dataclass
class CornerErrors:
    """Per-corner errors of matched predictions (one entry per annotated corner found in the predictions).

    Attributes:
        image, vertebra, corner: identifiers per entry.
        p2p, p2c: errors in ``unit``.
        p2p_px: point-to-point errors in pixels.
        unit: ``mm`` when every annotated image has a pixel spacing, else ``px`` for all
            (:func:`vcorner.io.spacing.common_unit`); ``unit_note`` then says why, in one line.
        confidence, sd_major_px, sd_minor_px, angle_deg, dx, dy: predicted uncertainty and signed offsets.
        source: ``network`` or ``prior``.
        flags: the corner's ``flags`` field (README.md, "Flags"; "" when none or from a file before flags).
        missing: annotated corners without a prediction (``image/vertebra/corner``).
        unexpected: predicted corners without an annotation.
    """

    image: list[str] = field(default_factory=list)
    vertebra: list[str] = field(default_factory=list)
    corner: list[str] = field(default_factory=list)
    p2p: list[float] = field(default_factory=list)
    p2c: list[float] = field(default_factory=list)
    p2p_px: list[float] = field(default_factory=list)
    unit: str = "px"
    unit_note: str | None = None
    confidence: list[float] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    d2: list[float] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def _finite_xy(row: dict[str, str], where: str) -> None:
    """InputError unless the row's x and y are finite numbers."""
    try:
        ok = all(np.isfinite(float(row[c])) for c in ("x", "y"))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{where}: x and y must be finite numbers, got {row.get('x')!r}, {row.get('y')!r}")


def read_predictions(path: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    """``corners.csv`` rows keyed by (image, vertebra, corner); names un-neutralised
    (:mod:`vcorner.io.spreadsheet`).

    Raises:
        InputError: missing file or columns, an unknown corner name, or a non-finite position (one line).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such predictions file")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        needed = {"image", "vertebra", "corner", "x", "y"}
        if not needed <= set(reader.fieldnames or []):
            raise InputError(f"{path}: needs columns {', '.join(sorted(needed))}")
        rows = {}
        for line, row in enumerate(reader, start=2):
            if row["corner"] not in CORNER_NAMES:
                raise InputError(f"{path}: row {line}: unknown corner {row['corner']!r}")
            _finite_xy(row, f"{path}: row {line}")
            rows[(restore(row["image"]), restore(row["vertebra"]), row["corner"])] = row
    return rows


def ellipse_cov(sd_major: float, sd_minor: float, angle_deg: float) -> np.ndarray:
    """(2, 2) covariance of a 1-sigma ellipse (angle of the major axis from +x towards +y)."""
    return ellipse_covariance(sd_major, sd_minor, angle_deg)


def mahalanobis2(row: dict, offset: np.ndarray) -> float:
    """Squared Mahalanobis distance of ``offset`` (truth - prediction, px) under the row's ellipse; NaN without."""
    try:
        cov = ellipse_cov(float(row["sd_major_px"]), float(row["sd_minor_px"]), float(row["angle_deg"]))
        return float(offset @ np.linalg.solve(cov, offset))
    except (KeyError, TypeError, ValueError, np.linalg.LinAlgError):
        return float("nan")


def calibration(errors: CornerErrors, levels: Sequence[float] = (0.5, 0.95)) -> dict[str, float]:
    """Share of true corners inside the predicted ellipse of each probability level (network corners with an
    ellipse; their number is ``ellipse_corners``)."""
    d2 = np.asarray([d for d, s in zip(errors.d2, errors.source, strict=True) if s == "network"])
    d2 = d2[np.isfinite(d2)]
    shares = {f"inside_{round(100 * p)}": float(np.mean(d2 <= -2.0 * np.log(1.0 - p))) if len(d2) else float("nan")
              for p in levels}
    return {**shares, "ellipse_corners": len(d2)}


def coverage_verdict(level: float, inside: float, corners: int) -> str:
    """What ``inside`` (share of true corners inside the ``level`` ellipses, e.g. 0.95) says of the ellipses:
    too tight, about right or too wide against :data:`COVERAGE_BANDS`; "n/a" when nothing was measured."""
    if inside != inside or not corners:
        return "n/a (no network corner with an ellipse)"
    low, high = COVERAGE_BANDS[level]
    band = f"{100 * low:.0f}-{100 * high:.0f}%"
    if corners < MIN_CORNERS_TO_JUDGE:
        return f"not judged (only {corners} corners; about right is {band})"
    if inside < low:
        return f"too tight (overconfident; about right is {band})"
    if inside > high:
        return f"too wide (underconfident; about right is {band})"
    return f"about right ({band})"


def calibration_lines(calib: dict[str, float]) -> list[str]:
    """One sentence per level of :func:`calibration`'s figures, the verdict following the measured share."""
    lines = []
    for level in (0.95, 0.50):
        key = f"inside_{round(100 * level)}"
        if key not in calib:
            continue
        share = calib[key]
        measured = "n/a" if share != share else f"{share:.1%}"
        lines.append(f"the {level:.0%} ellipses hold {measured} of true corners: "
                     f"{coverage_verdict(level, share, int(calib.get('ellipse_corners', 0)))}")
    return lines


def match(predictions: dict[tuple[str, str, str], dict[str, str]], truth: Sequence[ImageRecord]) -> CornerErrors:
    """Errors of every annotated corner against its prediction, all in one unit: mm when every annotated image
    has a pixel spacing, else px for all (millimetres and pixels are never averaged together)."""
    unit, note = common_unit(truth)
    errors = CornerErrors(unit=unit, unit_note=note)
    seen = set()
    for record in truth:
        scale = spacing_in(unit, record) or 1.0
        for v in record.vertebrae:
            if v.corners is None:
                continue
            outline = contour(v.corners, v.boundary, spacing=0.25)
            for k, name in enumerate(CORNER_NAMES):
                key = (record.file, v.name, name)
                row = predictions.get(key)
                if row is None:
                    errors.missing.append("/".join(key))
                    continue
                seen.add(key)
                xy = np.array([float(row["x"]), float(row["y"])])
                errors.image.append(record.file)
                errors.vertebra.append(v.name)
                errors.corner.append(name)
                errors.p2p_px.append(float(np.linalg.norm(xy - v.corners[k])))
                errors.p2p.append(errors.p2p_px[-1] * scale)
                errors.p2c.append(float(point_to_curve(xy[None], outline)[0]) * scale)
                errors.confidence.append(float(row.get("confidence") or "nan"))
                errors.source.append(row.get("source", ""))
                errors.d2.append(mahalanobis2(row, v.corners[k] - xy))
                errors.flags.append(row.get("flags") or "")
    errors.unexpected = sorted("/".join(k) for k in predictions if k not in seen)
    return errors


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, mean and standard deviation (NaN when empty)."""
    a = np.asarray(values, dtype=np.float64)
    if not len(a):
        return {"median": float("nan"), "mean": float("nan"), "std": float("nan")}
    return {"median": float(np.median(a)), "mean": float(a.mean()), "std": float(a.std())}


def fit_failure_rule(unit: str, threshold_px: float | None = None) -> str:
    """The fit-failure rule that applies to errors in ``unit``: the paper's > 3 mm; in px only a threshold the
    user gave (a fixed 3 was once applied to pixels as if they were millimetres); else "n/a"."""
    if unit == "mm":
        return f"> {FIT_FAILURE_MM:g} mm"
    if threshold_px is not None:
        return f"> {threshold_px:g} px (--fit-failure-px)"
    return "n/a (no pixel spacing)"


def table1_row(errors: CornerErrors, fit_failure_px: float | None = None) -> dict[str, float]:
    """The paper's Table 1 row: P2P median/mean/std, fit failure %, P2C median/mean/std.

    Fit failure is the share of corners with a P2P above 3 mm; errors in px (no pixel spacing) are judged
    against ``fit_failure_px`` when given, else the share is NaN (``fit_failure_rule`` says which applied).
    """
    p2p, p2c = summarize(errors.p2p), summarize(errors.p2c)
    limit = FIT_FAILURE_MM if errors.unit == "mm" else fit_failure_px
    if errors.p2p and limit is not None:
        failure = 100.0 * float(np.mean(np.asarray(errors.p2p) > limit))
    else:
        failure = float("nan")
    return {"p2p_median": p2p["median"], "p2p_mean": p2p["mean"], "p2p_std": p2p["std"],
            "fit_failure_pct": failure, "fit_failure_rule": fit_failure_rule(errors.unit, fit_failure_px),
            "p2c_median": p2c["median"], "p2c_mean": p2c["mean"],
            "p2c_std": p2c["std"], "corners": len(errors.p2p), "missing": len(errors.missing),
            "unexpected": len(errors.unexpected), "prior_fallbacks": errors.source.count("prior"),
            "unit": errors.unit}


def group_order(keys: Sequence[str]) -> list[str]:
    """The distinct ``keys`` in reading order: corner names in ``CORNER_NAMES`` order, vertebra names cranial
    first (:func:`vcorner.geometry.sequence.cranial_order`: anatomical names by level, T2 before T10; other
    names in order of first appearance)."""
    distinct = list(dict.fromkeys(keys))
    if all(k in CORNER_NAMES for k in distinct):
        return sorted(distinct, key=CORNER_NAMES.index)
    order, _ = cranial_order(distinct, np.zeros((len(distinct), 2)))
    return [distinct[i] for i in order]


def grouped_rows(errors: CornerErrors, by: str, fit_failure_px: float | None = None) -> dict[str, dict[str, float]]:
    """Table 1 rows per corner name (``by="corner"``) or per vertebra (``by="vertebra"``), in reading order
    (:func:`group_order`), each with its 50% and 95% ellipse coverage."""
    keys = getattr(errors, by)
    out = {}
    for key in group_order(keys):
        sub = subset(errors, [i for i, k in enumerate(keys) if k == key])
        out[key] = {**table1_row(sub, fit_failure_px), **calibration(sub)}
    return out


def subset(errors: CornerErrors, pick: list[int]) -> CornerErrors:
    """The entries ``pick`` of ``errors`` (what Table 1 and the calibration need of them)."""
    return CornerErrors(p2p=[errors.p2p[i] for i in pick], p2c=[errors.p2c[i] for i in pick], unit=errors.unit,
                        source=[errors.source[i] for i in pick], d2=[errors.d2[i] for i in pick],
                        flags=[errors.flags[i] for i in pick] if errors.flags else [])


def unflagged(errors: CornerErrors) -> CornerErrors | None:
    """The corners without a flag (README.md, "Flags"), or None when no corner is flagged (then all of them)."""
    pick = [i for i, f in enumerate(errors.flags) if not f]
    return subset(errors, pick) if len(pick) < len(errors.flags) else None
