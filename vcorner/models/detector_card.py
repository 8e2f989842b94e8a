"""The centre detector's card: what travels with its weights (checkpoint metadata, ONNX metadata, sidecar JSON).

A detector maps a whole image, letterboxed into S x S pixels, to one spatial probability map per vertebra name
(:class:`vcorner.network.unet.UNet` with ``out_channels = len(names)``). Torch-free, like
:mod:`vcorner.models.card`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from vcorner.config import DetectionConfig, from_dict, to_dict
from vcorner.io.records import InputError

DETECTOR_FORMAT = "vcorner-detector-card/1"


@dataclass(frozen=True)
class DetectorCard:
    """How to rebuild the detector and read its maps.

    Attributes:
        model_args: UNet constructor arguments (``out_channels`` = number of names).
        names: vertebra name of each output channel, cranial first (e.g. C3...C7).
        detection: input size and decoding settings.
        training: provenance (data, recipe, command, validation results).
    """

    model_args: dict[str, Any]
    names: tuple[str, ...]
    detection: DetectionConfig
    training: dict[str, Any]

    def __post_init__(self) -> None:
        if int(self.model_args.get("out_channels", 1)) != len(self.names):
            raise InputError(f"detector card: {len(self.names)} names for {self.model_args.get('out_channels', 1)} "
                             "output channels")

    @property
    def input_side(self) -> int:
        """Side of the square network input (its height when non-square), pixels."""
        return self.detection.input_size

    @property
    def input_shape(self) -> tuple[int, int]:
        """(height, width) of the network input, pixels."""
        return self.detection.input_shape

    def validation_warning(self) -> str | None:
        """One line for the user when training recorded a failed validation (None otherwise)."""
        from vcorner.models.card import verdict_warning

        return verdict_warning(self.training, "centre detector")

    def with_detection(self, detection: DetectionConfig) -> DetectorCard:
        """A copy with other decoding settings."""
        return replace(self, detection=detection)

    def to_dict(self) -> dict[str, Any]:
        return {"format": DETECTOR_FORMAT, "model_args": self.model_args, "names": list(self.names),
                "detection": to_dict(self.detection), "training": self.training}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "detector card") -> DetectorCard:
        if data.get("format") != DETECTOR_FORMAT:
            raise InputError(f"{where}: not a vcorner centre detector (its card's format is {data.get('format')!r}; "
                             "a corner model goes to --model, a detector to --detector)")
        try:
            return cls(dict(data["model_args"]), tuple(str(n) for n in data["names"]),
                       from_dict(DetectionConfig, data["detection"], where), dict(data.get("training", {})))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{where}: malformed detector card ({err})") from None
