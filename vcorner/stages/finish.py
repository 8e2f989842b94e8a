"""The last per-image stage: maps of a job's patches -> each vertebra's four corners (docs/design.md section 2).

Back-projection and prior weighting (:func:`vcorner.postprocess.decode.accumulate_image`), then the quadrant
search (:func:`vcorner.postprocess.decode.decode_accumulated`), the trust of each vertebra (flags and ellipses grown
by the evidence, :func:`vcorner.postprocess.plausibility.judge_corners`); corners outside the image are flagged.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from vcorner.io.records import ImageRecord, Vertebra
from vcorner.models.card import ModelCard
from vcorner.postprocess.decode import AccumulatedMap, VertebraCorners, accumulate_image, decode_accumulated
from vcorner.postprocess.plausibility import IMPLAUSIBLE_SHAPE, PATCHES_DISAGREE, judge_corners, narrowing_flags
from vcorner.stages.prepare import ImageJob

log = logging.getLogger(__name__)


def flag_outside(corners: list[VertebraCorners], shape: tuple[int, int]) -> list[VertebraCorners]:
    """``corners`` with the source of every corner outside the ``(H, W)`` image set to ``"outside"``.

    Such a corner was never seen: its position is the prior's and its confidence 0.
    """
    height, width = shape
    flagged = []
    for v in corners:
        x, y = v.xy[:, 0], v.xy[:, 1]
        inside = (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)
        if inside.all():
            flagged.append(v)
            continue
        source = tuple(s if ok else "outside" for s, ok in zip(v.source, inside, strict=True))
        flagged.append(replace(v, source=source, confidence=np.where(inside, v.confidence, 0.0)))
    return flagged


def narrowed(job: ImageJob, corners: list[VertebraCorners]) -> None:
    """Add ``levels_uncertain`` to ``job``'s image flags (and its detected centres', so that
    ``centers.detected.csv`` and run.json say it too) when its found bodies narrow down the spine
    (:func:`vcorner.postprocess.plausibility.narrowing_flags`: the names may run the wrong way)."""
    if not corners:
        return
    flags = narrowing_flags(job.image_flags, np.stack([v.xy for v in corners]), [v.name for v in corners])
    if flags != job.image_flags:
        job.image_flags = flags
        if job.detected is not None:  # as prepare adds view_contradicted
            job.detected = replace(job.detected, flags=flags)


CONFIRM_CONFIDENCE = 0.5
"""A name guessed past the detected run (:func:`vcorner.stages.detect.run_extension`) is kept when the mean
confidence of its four corners (the share of its patches that agree on each; 0 for a corner outside the image)
reaches this: on the validation films its right guesses read 0.51-0.92, and a guess on soft tissue 0.0-0.4."""

CONFIRM_SHIFT = 0.3
"""... and when the middle of its four corners lies within this many vertebra sizes of the guess (a guess between
two bodies frames half of each; on the validation films 79% of the right guesses lay within 0.3 steps)."""


def unconfirmed(corners: VertebraCorners, centre: np.ndarray, size: float) -> str:
    """Why the corner model does not confirm a guessed vertebra (its ``corners``, guessed ``centre`` and frame
    ``size``, px): its own flags, too little agreement, or corners that lie elsewhere; "" when it confirms it."""
    own = [f for f in corners.flags if f in (IMPLAUSIBLE_SHAPE, PATCHES_DISAGREE)]
    if own:
        return f"its corners are flagged {', '.join(own)}"
    agree = float(np.mean(corners.confidence))
    if agree < CONFIRM_CONFIDENCE:
        return f"its patches agree on {agree:.2f} of each corner, under {CONFIRM_CONFIDENCE:g}"
    shift = float(np.linalg.norm(corners.xy.mean(axis=0) - centre)) / size
    if shift > CONFIRM_SHIFT:
        return f"its corners' middle lies {shift:.2f} vertebra sizes from the guess, over {CONFIRM_SHIFT:g}"
    return ""


def without(job: ImageJob, names: set[str]) -> None:
    """Remove the vertebrae ``names`` from ``job`` in place: their frames, patches and maps (the others' frames are
    unchanged: a guess lies where one-sided differences already put its neighbour's frame)."""
    keep = np.array([n not in names for n in job.names])
    patch_keep = keep[job.owner]
    job.frames = job.frames.subset(keep)
    job.names = [n for n in job.names if n not in names]
    job.owner = (np.cumsum(keep) - 1)[job.owner[patch_keep]]
    job.affines, job.patches, job.maps = job.affines[patch_keep], job.patches[patch_keep], job.maps[patch_keep]
    job.filled = len(job.patches)


def _moved(record: ImageRecord, moves: dict[str, np.ndarray], drop: set[str]) -> ImageRecord:
    """``record`` without the vertebrae ``drop`` and with the centres of ``moves`` (px, at 0.001 px)."""
    vertebrae = tuple(Vertebra(v.name, np.round(moves[v.name], 3)) if v.name in moves else v
                      for v in record.vertebrae if v.name not in drop)
    return replace(record, vertebrae=vertebrae)


def confirmed_guesses(job: ImageJob, card: ModelCard) -> None:
    """Keep the names guessed past the detected run or between its names (``job.detected.guessed``) that the corner
    model confirms (:func:`unconfirmed`), each moved to the middle of its corners; drop the others from the job, their
    reasons kept in the detected centres' ``unconfirmed`` (counted in ``run.json``; not errors: the film is answered
    as without the guess). A batch finds this way the C5 at the lower edge of a film cut below it, the C7 beside a
    turned film's edge, or a body between two names whose map was too weak, that both detectors miss (README.md,
    "Automatic centres")."""
    detected = job.detected
    if detected is None or not detected.guessed:
        return
    accumulated = accumulate_image(job.maps[:, 0], job.affines, job.owner, job.frames, job.shape, card.decode)
    corners = decode_accumulated(accumulated, job.frames, job.names, card.prior, card.decode)
    corners = flag_outside(judge_corners(corners, job.maps[:, 0], job.affines, job.owner, accumulated, job.frames,
                                         card.prior, card.decode, card.trust, job.image_flags), job.shape)
    reasons, moves = {}, {}
    for index, vertebra in enumerate(corners):
        if vertebra.name not in detected.guessed:
            continue
        why = unconfirmed(vertebra, job.frames.centers[index], float(job.frames.sizes[index]))
        if why:
            where = "between two detected names" if vertebra.name in detected.filled else \
                "one step past the detected run"
            reasons[vertebra.name] = (f"vertebra {vertebra.name}: guessed {where} and not confirmed by the corner "
                                      f"model ({why})")
            log.info("%s: %s", job.name, reasons[vertebra.name])
        else:
            moves[vertebra.name] = vertebra.xy.mean(axis=0)
    if reasons:
        without(job, set(reasons))
    job.detected = replace(detected, listed=_moved(detected.listed, moves, set(reasons)),
                           record=_moved(detected.record, moves, set(reasons)),
                           confidence={k: c for k, c in detected.confidence.items() if k not in reasons},
                           guessed=frozenset(), extended=tuple(moves), unconfirmed=reasons)


def finish(job: ImageJob, card: ModelCard) -> tuple[list[VertebraCorners], list[AccumulatedMap]]:
    """Corners of every vertebra of a job whose maps are filled, with their flags (the detector's image flags on
    every vertebra, ``job.image_flags``), and each vertebra's accumulated map. Bodies that narrow down the spine
    add ``levels_uncertain`` to the job's image flags, and to its detected centres' (:func:`narrowed`). Names guessed
    past the detected run are first kept or left out (:func:`confirmed_guesses`)."""
    confirmed_guesses(job, card)
    accumulated = accumulate_image(job.maps[:, 0], job.affines, job.owner, job.frames, job.shape, card.decode)
    corners = decode_accumulated(accumulated, job.frames, job.names, card.prior, card.decode)
    narrowed(job, corners)
    corners = judge_corners(corners, job.maps[:, 0], job.affines, job.owner, accumulated, job.frames, card.prior,
                            card.decode, card.trust, job.image_flags)
    return flag_outside(corners, job.shape), accumulated
