"""The last per-image stage: maps of a job's patches -> each vertebra's four corners (docs/design.md section 2).

Back-projection and prior weighting (:func:`vcorner.postprocess.decode.accumulate_image`), then the quadrant
search (:func:`vcorner.postprocess.decode.decode_accumulated`), the trust of each vertebra (flags and ellipses grown
by the evidence, :func:`vcorner.postprocess.plausibility.judge_corners`); corners outside the image are flagged.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vcorner.models.card import ModelCard
from vcorner.postprocess.decode import AccumulatedMap, VertebraCorners, accumulate_image, decode_accumulated
from vcorner.postprocess.plausibility import judge_corners, narrowing_flags
from vcorner.stages.prepare import ImageJob


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


def finish(job: ImageJob, card: ModelCard) -> tuple[list[VertebraCorners], list[AccumulatedMap]]:
    """Corners of every vertebra of a job whose maps are filled, with their flags (the detector's image flags on
    every vertebra, ``job.image_flags``), and each vertebra's accumulated map. Bodies that narrow down the spine
    add ``levels_uncertain`` to the job's image flags, and to its detected centres' (:func:`narrowed`)."""
    accumulated = accumulate_image(job.maps[:, 0], job.affines, job.owner, job.frames, job.shape, card.decode)
    corners = decode_accumulated(accumulated, job.frames, job.names, card.prior, card.decode)
    narrowed(job, corners)
    corners = judge_corners(corners, job.maps[:, 0], job.affines, job.owner, accumulated, job.frames, card.prior,
                            card.decode, card.trust, job.image_flags)
    return flag_outside(corners, job.shape), accumulated
