"""A model's precision variants beside it: ``m.fp16.onnx`` (GPUs) and ``m.int8.onnx`` (CPUs), found, never made.

``vcorner export`` writes them (:mod:`vcorner.export.fp16`, :mod:`vcorner.export.int8`); each records in its
card the SHA-256 of the FP32 model it was converted from, so a stale or foreign variant is never run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vcorner.io.records import InputError
from vcorner.models.card import ModelCard
from vcorner.models.modelfile import read_model_card
from vcorner.models.precision import Precision, precision_of

log = logging.getLogger(__name__)


def fp16_path(model: Path) -> Path:
    """Where the FP16 variant of ``m.onnx`` lives: ``m.fp16.onnx``."""
    model = Path(model)
    return model.with_name(f"{model.stem}.fp16.onnx")


def int8_path(model: Path) -> Path:
    """Where the INT8 variant of ``m.onnx`` lives: ``m.int8.onnx``."""
    model = Path(model)
    return model.with_name(f"{model.stem}.int8.onnx")


def card_precision(card: ModelCard) -> Precision:
    """``fp16`` or ``int8`` for the card of a variant written by ``vcorner export``, else ``fp32``.

    Raises:
        InputError: a card that records another precision.
    """
    note = card.training.get("quantization") or {}
    return precision_of(str(note.get("precision", "fp32")), "the model card's quantization note")


def model_precision(model: Path) -> Precision:
    """:func:`card_precision` of an ONNX model's card (read and checked)."""
    return card_precision(read_model_card(model))


def made_from(variant: Path) -> str | None:
    """SHA-256 of the FP32 model a variant was converted from (None when unknown or unreadable)."""
    try:
        note = read_model_card(variant).training.get("quantization") or {}
    except InputError as err:
        log.warning("ignoring %s: %s", variant, err)
        return None
    return note.get("source_sha256")


def find_fp16(model: Path, model_sha256: str, folder: Path) -> Path | None:
    """The FP16 variant of the FP32 ``model``: ``m.fp16.onnx`` beside it or in ``folder`` when converted from
    exactly this model (``model_sha256``); None when there is none yet."""
    model = Path(model)
    sibling = fp16_path(model)
    for candidate in dict.fromkeys((sibling, Path(folder) / sibling.name)):
        if candidate.is_file() and made_from(candidate) == model_sha256:
            return candidate
    if sibling.is_file():
        log.warning("%s was not converted from this %s (stale or foreign); not using it", sibling, model.name)
    return None
