"""End-of-training verdicts: did the run learn enough to be used? Floors named here, recorded in the card.

A run that learned nothing used to be shipped silently: a detector trained on 481 real films ended at validation
BC 0.27 with 1.9% of its validation centres found, chose a confidence threshold of 0.0 and so kept every name.
Now each run ends with ``training.verdict = {"passed": ..., "reason": ..., "floor": ...}`` in its card, the CLI
prints a one-line warning when it failed, and ``vcorner batch``/``detect`` warn once when they use such a model
(:func:`vcorner.models.card.verdict_warning`). Torch-free.
"""

from __future__ import annotations

import math

CORNER_MIN_BC_GAIN = 0.1
"""A corner model passes when its best validation BC exceeds the untrained network's (epoch 0, ``val_bc_start``)
by at least this much. The untrained lite network scores 0.28 and the shipped one 0.93 (a gain of 0.66); tiny test
networks gain more than 0.15 in three epochs. Under 0.1 the maps stayed about as flat as before training, and the
corners come from the prior, not the image."""

DETECTOR_MIN_RECALL = 0.5
"""A detector passes when it finds at least half of the validation centres (right name, within a quarter of a
vertebra spacing, at or above its chosen confidence threshold). Below that most films keep fewer than half of their
names, and the centre checks leave out or refuse the rest; the shipped detector finds 98.6%."""

MIN_THRESHOLD_CENTRES = 5
"""Fewest correctly found validation centres a confidence threshold may be chosen from: the threshold is their
1st percentile, which from fewer than five is the weakest of a handful, not a percentile."""

MIN_THRESHOLD = 0.01
"""Lowest confidence threshold training may choose. A flat map puts about 0.002 of its mass within 3 pixels of
any point of a 128 x 128 view (pi 3^2 / 128^2); a threshold near that keeps every name, found or not (the run on
481 films chose 0.0)."""


def corner_verdict(val_bc: float, val_bc_start: float) -> dict:
    """The verdict of a corner model from its best validation BC and its untrained network's."""
    gain = val_bc - val_bc_start
    passed = math.isfinite(gain) and gain >= CORNER_MIN_BC_GAIN
    reason = (f"validation BC {val_bc:.4f} against {val_bc_start:.4f} untrained: a gain of {gain:.4f}, "
              f"{'at least' if passed else 'under'} the floor of {CORNER_MIN_BC_GAIN:g}")
    return {"passed": bool(passed), "reason": reason, "floor": {"min_bc_gain": CORNER_MIN_BC_GAIN}}


def detector_verdict(val_recall: float, threshold: float) -> dict:
    """The verdict of a detector from the share of validation centres it finds at its chosen threshold."""
    passed = math.isfinite(val_recall) and val_recall >= DETECTOR_MIN_RECALL
    reason = (f"{val_recall:.1%} of the validation centres found at confidence >= {threshold:g}, "
              f"{'at least' if passed else 'under'} the floor of {DETECTOR_MIN_RECALL:.0%}")
    return {"passed": bool(passed), "reason": reason, "floor": {"min_val_recall": DETECTOR_MIN_RECALL}}


def threshold_refusal(threshold: float, centres: int) -> str | None:
    """Why a chosen confidence threshold is refused (None when it stands): fewer than
    :data:`MIN_THRESHOLD_CENTRES` correct centres to choose from, or a value under :data:`MIN_THRESHOLD`."""
    if centres < MIN_THRESHOLD_CENTRES:
        return (f"only {centres} validation centre(s) found correctly, fewer than the {MIN_THRESHOLD_CENTRES} a "
                "threshold is chosen from")
    if not threshold >= MIN_THRESHOLD:
        return f"the chosen threshold {threshold:g} is under the floor of {MIN_THRESHOLD:g} (it would keep every name)"
    return None
