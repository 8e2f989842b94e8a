"""The three meanings of "precision", each its own type.

- :class:`Precision`: the numbers a graph computes in: what an export profile asks for
  (``export/profiles.toml``), what a variant's card records (:func:`vcorner.models.variants.card_precision`) and
  what a resolved model runs (``ResolvedModel.precision``).
- :class:`CpuPrecision`: what ``--precision`` asks of the CPU backends (ONNX Runtime, OpenVINO): ``auto`` lets
  recorded evidence choose between the model and its INT8 variant (:mod:`vcorner.models.evidence`) and whether
  OpenVINO runs it (:mod:`vcorner.models.ov_evidence`); ``bf16`` runs on OpenVINO only.

Both are :class:`TextEnum`: they compare equal to, format as and serialize to their plain value
(``Precision.fp16 == "fp16"``), so files that record a precision read the same as before they were typed.
"""

from __future__ import annotations

from enum import Enum

from vcorner.io.records import InputError


class TextEnum(str, Enum):
    """A ``str`` enum that prints and formats as its value (``enum.StrEnum`` of Python 3.11, here for 3.10)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Precision(TextEnum):
    """The numbers a graph computes in."""

    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"
    bf16 = "bf16"
    """OpenVINO's ``INFERENCE_PRECISION_HINT=bf16`` on the FP32 graph (a CPU with BF16); no file records it."""


class CpuPrecision(TextEnum):
    """``--precision`` on the CPU: ``auto`` runs the INT8 variant (and OpenVINO) where evidence says it wins;
    ``bf16`` is OpenVINO's (ONNX Runtime refuses it by name)."""

    auto = "auto"
    fp32 = "fp32"
    int8 = "int8"
    bf16 = "bf16"


FILE_PRECISIONS = (Precision.fp32, Precision.fp16, Precision.int8)
"""What a card or an export profile may record: BF16 is a runtime's setting on the FP32 graph, never a file's."""


def cpu_precision(value: str) -> CpuPrecision:
    """``value`` as a :class:`CpuPrecision`.

    Raises:
        InputError: anything but ``auto``, ``fp32``, ``int8`` or ``bf16``.
    """
    try:
        return CpuPrecision(value)
    except ValueError:
        raise InputError(f"--precision must be one of {', '.join(CpuPrecision)}, got {value!r}") from None


def precision_of(value: str, where: str) -> Precision:
    """``value`` read from ``where`` (a card, a profile) as a :class:`Precision`.

    Raises:
        InputError: a precision no file records (bf16 is OpenVINO's setting, not a graph's).
    """
    if value not in FILE_PRECISIONS:
        raise InputError(f"{where}: precision {value!r} is none of {', '.join(FILE_PRECISIONS)}")
    return Precision(value)
