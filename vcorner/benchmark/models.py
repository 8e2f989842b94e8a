"""The model under test: its ONNX and checkpoint forms, a random model for speed-only runs, its INT8 variant."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vcorner.benchmark.settings import CALIBRATION_IMAGES, BenchmarkSettings, Skip
from vcorner.io.records import InputError
from vcorner.models.card import ModelCard, sha256_file
from vcorner.models.modelfile import (
    default_model_path,
    is_checkpoint,
    read_card_and_digest,
    read_checkpoint_card,
    resolve_checkpoint,
)
from vcorner.models.variants import int8_path


@dataclass(frozen=True)
class ModelFiles:
    """The model under test: its ONNX form (None with the reason when there is none) and checkpoint."""

    named: Path
    sha256: str
    card: ModelCard
    onnx: Path | None
    checkpoint: Path | None
    no_onnx_reason: str = ""


def model_files(model: Path | None, scratch: Path) -> ModelFiles:
    """The ONNX and checkpoint forms of ``model`` (a checkpoint is exported to ONNX in ``scratch``).

    Raises:
        InputError: no such model, unreadable card, or a checkpoint without torch installed.
    """
    model = Path(model) if model is not None else default_model_path()
    if not model.exists():
        raise InputError(f"{model}: no such model file (pass --model ONNX or checkpoint)")
    if not is_checkpoint(model):
        card, sha = read_card_and_digest(model)
        return ModelFiles(model, sha, card, model, None)
    if importlib.util.find_spec("torch") is None:
        raise InputError(f"{model}: a checkpoint needs torch: pip install 'vcorner[train]'")
    checkpoint = resolve_checkpoint(model)
    card, sha = read_checkpoint_card(checkpoint), sha256_file(checkpoint)
    try:
        from vcorner.export.onnx_export import export_checkpoint
    except ImportError as err:
        return ModelFiles(model, sha, card, None, checkpoint, f"exporting the checkpoint needs onnx ({err})")
    return ModelFiles(model, sha, card, export_checkpoint(checkpoint, scratch / "model.onnx"), checkpoint)


def random_model(recipe: str, out: Path, seed: int = 0) -> Path:
    """A randomly initialised ``recipe`` UNet exported to ONNX at ``out``, with a generic prior (needs torch).

    For speed measurements only: patches/s does not depend on the weights.
    """
    import torch

    from vcorner.config import DecodeConfig, GroundTruthConfig, SamplingConfig
    from vcorner.export.onnx_export import export_model
    from vcorner.network.unet import create_model
    from vcorner.postprocess.prior import CornerPrior

    torch.manual_seed(seed)
    model = create_model(recipe).eval()
    means = np.array([[-0.4, -0.3], [0.4, -0.3], [-0.4, 0.3], [0.4, 0.3]])
    prior = CornerPrior({"*": means}, {"*": np.tile(0.01 * np.eye(2), (4, 1, 1))}, {"*": 1})
    card = ModelCard(model.constructor_args(), SamplingConfig(), GroundTruthConfig(), DecodeConfig(), prior,
                     {"weights": f"random {recipe} (seed {seed})"})
    return export_model(model, card, Path(out))


def int8_model(files: ModelFiles, scratch: Path, settings: BenchmarkSettings) -> Path:
    """The INT8 model to time: given, found beside the model, or quantized now on calibration phantoms."""
    if settings.int8_model is not None:
        return Path(settings.int8_model)
    if int8_path(files.onnx).is_file():
        return int8_path(files.onnx)
    if importlib.util.find_spec("onnx") is None:
        raise Skip("quantizing needs onnx (pip install onnx) or pass an INT8 model")
    from vcorner.export.int8 import quantize_int8
    from vcorner.phantoms.dataset import synthesize_dataset

    calib = scratch / "calibration"
    synthesize_dataset(calib, CALIBRATION_IMAGES, settings.seed + 1, workers=1)
    return quantize_int8(files.onnx, scratch / "model.int8.onnx", calib)
