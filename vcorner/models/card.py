"""The model card: what travels with a model's weights (checkpoint metadata, ONNX metadata, sidecar JSON).

Torch-free, so inference reads it without training dependencies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vcorner.config import DecodeConfig, GroundTruthConfig, SamplingConfig, TrustConfig, from_dict, to_dict
from vcorner.io.records import InputError
from vcorner.postprocess.prior import CornerPrior

CARD_FORMAT = "vcorner-card/1"


def _trust_dict(trust: TrustConfig) -> dict[str, Any]:
    """``trust`` as JSON, without an unknown reader spread (cards written before it keep their digest)."""
    return {k: v for k, v in to_dict(trust).items() if k != "reader_sd_mm" or v}


@dataclass(frozen=True)
class ModelCard:
    """What travels with the weights: how to rebuild the model and use it exactly as trained."""

    model_args: dict[str, Any]
    sampling: SamplingConfig
    ground_truth: GroundTruthConfig
    decode: DecodeConfig
    prior: CornerPrior
    training: dict[str, Any]
    trust: TrustConfig = field(default_factory=TrustConfig)
    """Evidence-grown ellipses and flag limits (README.md, "Flags"); absent from cards written before them."""

    @property
    def input_side(self) -> int:
        """Side of the square network input (the patch), pixels."""
        return self.sampling.patch_size

    @property
    def input_shape(self) -> tuple[int, int]:
        """(height, width) of the network input: the square patch."""
        return self.input_side, self.input_side

    @property
    def calibrated(self) -> bool:
        """Whether the ellipses were calibrated on annotated images (by ``vcorner train`` or ``vcorner tune``)."""
        return "tune_coverage" in self.training

    def calibration_warning(self) -> str | None:
        """One line for the user when the ellipses were never calibrated (None when they were)."""
        if self.calibrated:
            return None
        return ("this model's uncertainty ellipses were never calibrated (its card has no tune_coverage): the "
                "sd_major_px/sd_minor_px columns may be off by a large factor; run vcorner tune MODEL VAL_DATA")

    def validation_warning(self) -> str | None:
        """One line for the user when training recorded a failed validation (None otherwise)."""
        return verdict_warning(self.training, "model")

    def with_decode(self, decode: DecodeConfig) -> ModelCard:
        """A copy with other decoding settings."""
        return replace(self, decode=decode)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CARD_FORMAT, "model_args": self.model_args, "sampling": to_dict(self.sampling),
            "ground_truth": to_dict(self.ground_truth), "decode": to_dict(self.decode),
            "prior": self.prior.to_dict(), "training": self.training,
        } | ({"trust": _trust_dict(self.trust)} if self.trust != TrustConfig() else {})  # older cards: same digest

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model card") -> ModelCard:
        if data.get("format") != CARD_FORMAT:
            raise InputError(f"{where}: not a vcorner model card (format {data.get('format')!r})")
        return cls(
            model_args=dict(data["model_args"]),
            sampling=from_dict(SamplingConfig, data["sampling"], where),
            ground_truth=from_dict(GroundTruthConfig, data["ground_truth"], where),
            decode=from_dict(DecodeConfig, data["decode"], where),
            prior=CornerPrior.from_dict(data["prior"]),
            training=dict(data.get("training", {})),
            trust=from_dict(TrustConfig, data.get("trust"), where),
        )


def verdict_warning(training: dict[str, Any], kind: str) -> str | None:
    """One line when a card's ``training.verdict`` says it failed validation (None when it passed or when the
    card has no verdict, as cards from before verdicts)."""
    verdict = training.get("verdict")
    if not isinstance(verdict, dict) or verdict.get("passed", True):
        return None
    return (f"this {kind} failed validation when it was trained ({verdict.get('reason', 'no reason recorded')}): "
            "its answers are not to be trusted; train it longer or on more data")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
