"""Checks of a list of clicked vertebra centres before any frame is built from it (README.md, Data formats).

A vertebra frame takes its orientation and size from the neighbouring centres (:mod:`vcorner.geometry.frames`),
so one bad centre bends the frames of its neighbours and a list given caudal first turns every frame by 180
degrees. :func:`check_sequence` finds, on the centres alone (no image needed):

- **non-finite** centres;
- **order**: names that are anatomical labels (C1-C7, T1-T12, L1-L6, S1-S5) are put in anatomical order,
  cranial first, whatever order the file lists them in; a list of other names that runs up the image
  (its last centre clearly above its first) is taken as caudal first and reversed. Both with a note;
- **duplicates and near-coincident centres**: two centres closer than :data:`NEAR` times the sequence's
  typical spacing (the median step), anywhere in the list;
- **outliers**: a step shorter than :data:`NEAR` or longer than :data:`FAR` typical spacings (one
  vertebra left out gives about 2), or a turn of more than :data:`MAX_TURN_DEG` between consecutive steps
  (the spine does not double back).

Bad vertebrae are removed one at a time, each time the one whose removal leaves the fewest anomalies, so one
wrong click costs one vertebra, not the image. When fewer than two vertebrae, or fewer than half of them,
would remain, the whole image is refused.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from vcorner.io.records import ImageRecord, InputError, anatomical_rank

log = logging.getLogger(__name__)

NEAR = 0.4
"""Centres closer than this many typical spacings are near-coincident (adjacent vertebrae sit ~1 apart)."""
FAR = 2.6
"""A step longer than this many typical spacings is an outlier (a vertebra left out of the list gives ~2)."""
MAX_TURN_DEG = 75.0
"""Largest turn between consecutive steps along the spine, degrees (lordosis bends a few degrees a level)."""
MIN_SPACING_PX = 2.0
"""Centres closer than this (pixels) coincide whatever the sequence's spacing."""

def level_ranks(names: Sequence[str]) -> list[int | None]:
    """Anatomical rank of each name (:func:`vcorner.io.records.anatomical_rank`), with the sacrum moved up one
    level when no L6 is listed, so that L5 and S1 are neighbours (most spines have five lumbar vertebrae)."""
    ranks = [anatomical_rank(n) for n in names]
    has_l6 = any(n.strip().upper().replace(" ", "") == "L6" for n in names)
    sacral = anatomical_rank("S1") or 0
    return [r - 1 if r is not None and r >= sacral and not has_l6 else r for r in ranks]


def spine_levels(names: Sequence[str]) -> np.ndarray | None:
    """(V,) anatomical ranks of ``names`` when every name is an anatomical label and they increase (a
    vertebra left out of the list then counts in the frames' sizes), else None (consecutive vertebrae)."""
    ranks = level_ranks(names)
    if len(ranks) < 2 or any(r is None for r in ranks) or np.any(np.diff(np.asarray(ranks, dtype=float)) <= 0):
        return None
    return np.asarray(ranks, dtype=np.float64)


@dataclass(frozen=True)
class SequenceCheck:
    """The outcome of :func:`check_sequence`.

    Attributes:
        order: indices (into the input) of the vertebrae to use, cranial first.
        refused: input index -> one-line reason, for vertebrae left out.
        notes: one-line remarks on corrections made (order changed), for a warning.
        image_reason: set when the whole image must be refused (then ``order`` is empty).
    """

    order: tuple[int, ...]
    refused: dict[int, str]
    notes: tuple[str, ...] = ()
    image_reason: str | None = None


def cranial_order(names: Sequence[str], centers: np.ndarray, usable: list[int] | None = None
                  ) -> tuple[list[int], str | None]:
    """Indices ``usable`` (default: all) put cranial first, and a note when that changed the listed order.

    The one ordering of vertebrae: anatomical names by anatomical rank, other names as listed unless the list
    runs up the image (then reversed). The centre checks, the batch and ``vcorner measure`` all use it.
    """
    usable = list(range(len(names))) if usable is None else usable
    ranks = [anatomical_rank(names[i]) for i in usable]
    if all(r is not None for r in ranks) and len(set(ranks)) == len(ranks):
        ordered = [i for _, i in sorted(zip(ranks, usable, strict=True))]
        if ordered == usable:
            return usable, None
        what = "caudal to cranial" if ordered == usable[::-1] else "out of anatomical order"
        return ordered, f"vertebrae listed {what}; taken in anatomical order {', '.join(names[i] for i in ordered)}"
    if len(usable) >= 2:
        run = centers[usable[-1]] - centers[usable[0]]
        if run[1] < 0 and abs(run[1]) > abs(run[0]):
            return usable[::-1], ("vertebrae listed bottom to top of the image; taken as caudal first and reversed "
                                  "(list them cranial first, or use anatomical names C3, T1, L4...)")
    return usable, None


def _levels(names: Sequence[str], kept: list[int], count: int) -> np.ndarray:
    """(count,) position of each vertebra along the spine: its anatomical level when every kept name has one
    (:func:`spine_levels`; a skipped vertebra then counts), else its position in ``kept``."""
    levels = np.zeros(count)
    ranks = spine_levels([names[i] for i in kept])
    levels[kept] = ranks if ranks is not None else np.arange(len(kept))
    return levels


def _anomalies(points: np.ndarray, levels: np.ndarray, spacing: float) -> list[tuple[float, tuple[int, ...], str]]:
    """(severity, positions involved, kind) of every anomaly of a sequence of (K, 2) centres at (K,) levels.

    A step between levels ``a`` and ``b`` is expected to be about ``(b - a) * spacing`` long.
    """
    found: list[tuple[float, tuple[int, ...], str]] = []
    near = max(NEAR * spacing, MIN_SPACING_PX)
    distance = np.linalg.norm(points[:, None] - points[None], axis=-1)
    for i, j in zip(*np.nonzero(np.triu(distance < near, k=1)), strict=True):
        found.append((1.0 + (near - distance[i, j]) / near, (int(i), int(j)), "coincide"))
    steps = np.diff(points, axis=0)
    lengths = np.linalg.norm(steps, axis=1)
    for k, length in enumerate(lengths):
        expected = FAR * spacing * float(levels[k + 1] - levels[k])
        if length > expected:
            found.append((length / expected, (k, k + 1), "far"))
    limit = math.cos(math.radians(MAX_TURN_DEG))
    for k in range(len(steps) - 1):
        denominator = lengths[k] * lengths[k + 1]
        if denominator > 0 and float(steps[k] @ steps[k + 1]) / denominator < limit:
            found.append((1.0 - float(steps[k] @ steps[k + 1]) / denominator, (k, k + 1, k + 2), "turn"))
    return found


def typical_spacing(points: np.ndarray, levels: np.ndarray) -> float:
    """Median over all pairs of centres of their distance per level apart, pixels (0 for one centre).

    Robust to a minority of wrong centres: with one bad centre among five, six of the ten pairs are good.
    """
    if len(points) < 2:
        return 0.0
    i, j = np.triu_indices(len(points), k=1)
    apart = np.maximum(np.abs(levels[j] - levels[i]), 1.0)
    return float(np.median(np.linalg.norm(points[j] - points[i], axis=1) / apart))


def _score(kept: list[int], centers: np.ndarray, levels: np.ndarray) -> tuple[int, float]:
    """Number and total severity of the anomalies of the sequence ``kept``."""
    found = _anomalies(centers[kept], levels[kept], typical_spacing(centers[kept], levels[kept]))
    return len(found), sum(s for s, _, _ in found)


def _worst(kept: list[int], centers: np.ndarray, levels: np.ndarray) -> list[int]:
    """Positions in ``kept`` to remove next: the one whose removal leaves the fewest and mildest anomalies
    (ties: the most isolated centre), or every tied one when they are equally isolated (two coinciding
    centres: which of the two labels is right cannot be told, so both are left out); [] when all is well."""
    found = _anomalies(centers[kept], levels[kept], typical_spacing(centers[kept], levels[kept]))
    if not found:
        return []
    suspects = sorted({p for _, positions, _ in found for p in positions})

    def after(position: int) -> tuple[int, float, float]:
        rest = kept[:position] + kept[position + 1:]
        isolation = float(np.min(np.linalg.norm(centers[rest] - centers[kept[position]], axis=1)))
        return (*_score(rest, centers, levels), -isolation)

    scores = {p: after(p) for p in suspects}
    best = min(scores.values())
    tied = [p for p, score in scores.items() if score[0] == best[0] and math.isclose(score[1], best[1], rel_tol=1e-6,
            abs_tol=1e-9) and math.isclose(score[2], best[2], rel_tol=1e-3, abs_tol=0.5)]
    return tied if len(tied) > 1 else [min(scores, key=scores.get)]


def _turn_deg(points: np.ndarray, k: int) -> float:
    """Turn of the line of ``points`` at point ``k + 1`` (between steps k and k + 1), degrees."""
    a, b = points[k + 1] - points[k], points[k + 2] - points[k + 1]
    cosine = float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12)
    return math.degrees(math.acos(min(1.0, max(-1.0, cosine))))


def _finding(kind: str, positions: tuple[int, ...], points: np.ndarray, levels: np.ndarray, spacing: float,
             names: Sequence[str], position: int) -> tuple[float, str]:
    """(how far past its limit, what was measured against which limit) of one anomaly of :func:`_anomalies`
    that involves ``position`` (``points``, ``levels``, ``names``: the sequence it was found in)."""
    if kind == "coincide":
        near = max(NEAR * spacing, MIN_SPACING_PX)
        other = positions[1] if positions[0] == position else positions[0]
        gap = float(np.linalg.norm(points[other] - points[position]))
        return near / max(gap, 1e-9), (f"coincides with {names[other]}'s: {gap:.1f} px apart, under the limit of "
                                       f"{near:.1f} px ({NEAR:g} typical spacings of {spacing:.1f} px)")
    if kind == "far":
        a, b = positions
        apart = float(levels[b] - levels[a])
        length = float(np.linalg.norm(points[b] - points[a]))
        per_level = length / (spacing * apart)
        return per_level / FAR, (f"is out of line: the step {names[a]}-{names[b]} is {per_level:.1f} typical "
                                 f"spacings per level ({length:.1f} px over {apart:g} level(s), typical spacing "
                                 f"{spacing:.1f} px; limit {FAR:g})")
    turn = _turn_deg(points, positions[0])
    return turn / MAX_TURN_DEG, (f"is out of line: the line of centres turns by {turn:.0f} degrees at "
                                 f"{names[positions[1]]} (limit {MAX_TURN_DEG:.0f}; the spine does not double back)")


def _reason(index: int, kept: list[int], names: Sequence[str], centers: np.ndarray, levels: np.ndarray,
            leaving: list[int]) -> str:
    """Why vertebra ``index`` leaves ``kept``: its worst anomaly in ``kept`` (:func:`_anomalies`, with the
    spacing it was found with), as the measured quantity against its limit, and what was done."""
    position = kept.index(index)
    points, at, spacing = centers[kept], levels[kept], typical_spacing(centers[kept], levels[kept])
    listed = [names[i] for i in kept]
    findings = [_finding(kind, positions, points, at, spacing, listed, position)
                for _, positions, kind in _anomalies(points, at, spacing) if position in positions]
    x, y = centers[index]
    statement = max(findings)[1] if findings else "is out of line with its neighbours"
    others = [names[i] for i in leaving if i != index]
    if not others:
        done = "left out"
    elif "coincides" in statement:
        done = "which of the two is right cannot be told, so both are left out"
    else:
        done = (f"leaving out {', '.join(others)} instead would mend it as well, and which is wrong cannot be told, "
                "so both are left out")
    return f"vertebra {names[index]}: centre ({x:.1f}, {y:.1f}) {statement}; {done}"


def check_sequence(names: Sequence[str], centers: np.ndarray) -> SequenceCheck:
    """Which vertebrae of one image can be framed, in which order, and why the others cannot.

    Args:
        names: V vertebra names as listed.
        centers: (V, 2) centres as listed, pixels.

    Returns:
        The vertebrae to use (cranial first), those refused with reasons, and notes on corrections.
    """
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    refused: dict[int, str] = {}
    usable = []
    for i, (x, y) in enumerate(centers):
        if math.isfinite(x) and math.isfinite(y):
            usable.append(i)
        else:
            refused[i] = f"vertebra {names[i]}: centre is NaN or infinite"
    kept, note = cranial_order(names, centers, usable)
    levels = _levels(names, kept, len(centers))
    while len(kept) >= 2 and (positions := _worst(kept, centers, levels)):
        leaving = [kept[p] for p in positions]
        for index in leaving:
            refused[index] = _reason(index, kept, names, centers, levels, leaving)
        kept = [i for i in kept if i not in leaving]
    notes = (note,) if note else ()
    if len(kept) < 2 or len(kept) * 2 < len(usable):
        detail = "; ".join(refused[i] for i in sorted(refused)) or "only one vertebra listed"
        return SequenceCheck((), refused, notes, f"a vertebra frame needs at least two consistent vertebra centres "
                                                 f"({detail})")
    return SequenceCheck(tuple(kept), refused, notes)


def checked_record(record: ImageRecord) -> tuple[ImageRecord, dict[str, str]]:
    """``record`` with its vertebrae cranial first and bad centres left out (:func:`check_sequence`), and the
    left-out vertebrae (name -> reason); corrections of the order are logged as warnings.

    Raises:
        InputError: too few consistent centres remain to frame any vertebra.
    """
    names = [v.name for v in record.vertebrae]
    check = check_sequence(names, record.centers)
    for note in check.notes:
        log.warning("%s: %s", record.file, note)
    if check.image_reason:
        raise InputError(check.image_reason)
    kept = tuple(record.vertebrae[i] for i in check.order)
    return replace(record, vertebrae=kept), {names[i]: reason for i, reason in check.refused.items()}


def checked_annotation(record: ImageRecord) -> ImageRecord:
    """:func:`checked_record` for an annotated image (training, tuning): left-out vertebrae are logged as
    warnings naming the image, since there is no errors.csv to list them in.

    Raises:
        InputError: too few consistent centres remain.
    """
    checked, left_out = checked_record(record)
    for reason in left_out.values():
        log.warning("%s: %s; left out", record.file, reason)
    return checked
