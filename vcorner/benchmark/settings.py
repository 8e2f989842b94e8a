"""What a benchmark run measures, and the exception for a combination that cannot run here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BACKENDS: tuple[str, ...] = ("ort", "torch", "trt", "ov")
PRECISIONS: tuple[str, ...] = ("fp32", "int8", "fp16", "bf16")
PHANTOM_SEED = 20250501
"""Seed of the benchmark's phantom set (calibration for on-the-fly INT8 uses the next seed)."""
CALIBRATION_IMAGES = 4


class Skip(Exception):
    """A combination that cannot run here; the message is the reason."""


@dataclass(frozen=True)
class BenchmarkSettings:
    """What to measure.

    Attributes:
        model: ONNX file, ``.safetensors`` checkpoint or run folder (None: the shipped model).
        backends, precisions, batch_sizes: the grid; unavailable combinations are skipped.
        seconds: timing per variant and batch size, spread over ``rounds`` turns (at least one batch a turn).
        rounds: turns in which every variant is timed once per batch size, so that changing load from
            other work on the machine falls on all variants alike.
        images: phantom images for the accuracy columns.
        threads: ONNX Runtime intra-op threads (default: all cores).
        int8_model: a ready INT8 model (default: ``m.int8.onnx`` beside the model, else quantized here).
        seed: phantom set seed.
    """

    model: Path | None = None
    backends: tuple[str, ...] = BACKENDS
    precisions: tuple[str, ...] = PRECISIONS
    batch_sizes: tuple[int, ...] = (16, 64, 256)
    seconds: float = 3.0
    rounds: int = 3
    images: int = 4
    threads: int | None = None
    int8_model: Path | None = None
    seed: int = PHANTOM_SEED
