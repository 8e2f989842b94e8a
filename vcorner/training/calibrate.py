"""The last step of ``vcorner train``: decoding constants and ellipse calibration on the run's validation images.

A freshly trained network's ellipses come from the spread of its accumulated maps, which says nothing of
their scale in pixels: uncalibrated, the 95% ellipses of a model trained on real films held 17.6% of the
true corners. So training ends as ``vcorner tune`` would: the decoding constants are grid-searched by mean
P2P and ``ellipse_scale`` is set so that the 95% ellipses hold 95% of the true corners, on the validation
images the trainer held out (never the training images, never a test set). The card then records what it
was calibrated on and the coverage reached (``tune_coverage``), and ``vcorner export`` carries it into the
ONNX model. ``vcorner tune MODEL DATA`` recalibrates on other data.

First it chooses the cheapest patch sampling whose mean P2P on those images stays within
:data:`vcorner.evaluation.tune.SAMPLING_TOLERANCE_MM` of the recipe's (as ``vcorner tune --sampling`` chose 2
patches per vertebra for the shipped model): inference is most of a film's cost on the CPU, so a user's own
model gets the speed too. The card records every variant's scores (``sampling_scores``) and the sampling and
decoding it had before (``before_tuning``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from vcorner.backends.torch.runner import TorchRunner
from vcorner.evaluation.tune import (
    DEFAULT_GRID,
    SAMPLING_TOLERANCE_MM,
    TuneResult,
    cheapest_sampling,
    infer_records,
    tune_decode,
    untuned,
)
from vcorner.io.records import ImageRecord
from vcorner.models.card import ModelCard
from vcorner.models.modelfile import read_checkpoint_card
from vcorner.network.checkpoint import load_model, save_model


def grid_size() -> int:
    """Number of decoding candidates :func:`calibrate_checkpoint` tries."""
    size = 1
    for values in DEFAULT_GRID.values():
        size *= len(values)
    return size


def calibrate_checkpoint(checkpoint: Path, data: Path, records: Sequence[ImageRecord], device: str = "cpu",
                         progress: Callable[[], None] | None = None,
                         sampling_tolerance: float | None = SAMPLING_TOLERANCE_MM) -> tuple[ModelCard, TuneResult]:
    """Choose the cheapest sampling within ``sampling_tolerance`` (mm; None keeps the recipe's), tune the decoding
    constants and calibrate the ellipses of ``checkpoint`` on ``records`` (images under ``data``), and rewrite
    the checkpoint with the calibrated card.

    Returns:
        The new card and the tuning result (candidates, coverage of the 50% and 95% ellipses).

    Raises:
        InputError: no usable validation image.
    """
    card = read_checkpoint_card(checkpoint)
    previous = untuned(card)
    chosen: dict = {}
    with TorchRunner(checkpoint, device) as runner:
        if sampling_tolerance is not None:
            sampling, scores = cheapest_sampling(Path(data), records, runner, card, sampling_tolerance)
            card = replace(card, sampling=sampling)
            chosen = {"sampling_scores": scores, "sampling_tolerance": sampling_tolerance, "before_tuning": previous}
        jobs = infer_records(Path(data), records, runner, card)
    result = tune_decode(jobs, card, progress=progress)
    tuned = replace(card.with_decode(result.decode), training={
        **card.training, "decode_tuned_on": f"{data} (the training run's validation split)",
        "tune_images": len(jobs), "tune_unit": result.unit, "tune_coverage": result.coverage,
        "calibrated_by": "vcorner train", **chosen})
    model, _ = load_model(checkpoint)
    save_model(checkpoint, model, tuned)
    return tuned, result
