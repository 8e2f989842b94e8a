"""Checkpoints: safetensors weights with the model card (constructor args, sampling, prior) beside them.

``model.safetensors`` holds the weights and, in its metadata, the JSON card; nothing is unpickled.
``last.pt`` (resume state) holds tensors and plain values only and loads with ``weights_only=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vcorner.card import ModelCard
from vcorner.io.records import InputError
from vcorner.model.unet import UNet

CARD_KEY = "vcorner"


def save_model(path: Path, model: UNet, card: ModelCard) -> None:
    """Write weights and card to ``path`` (a ``.safetensors`` file), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={CARD_KEY: json.dumps(card.to_dict())})
    tmp.replace(path)


def resolve_checkpoint(path: Path) -> Path:
    """A run directory resolves to its ``model.safetensors``; a file is returned as is."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint (expected a run directory or a .safetensors file)")
    if path.suffix != ".safetensors":
        raise InputError(f"{path}: checkpoints are .safetensors files (pickled checkpoints are refused)")
    return path


def read_card(path: Path) -> ModelCard:
    """The model card stored in a checkpoint's metadata."""
    path = resolve_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise InputError(f"{path}: not a readable safetensors file ({err})") from None
    if CARD_KEY not in metadata:
        raise InputError(f"{path}: has no vcorner model card in its metadata")
    return ModelCard.from_dict(json.loads(metadata[CARD_KEY]), str(path))


def load_model(path: Path) -> tuple[UNet, ModelCard]:
    """Rebuild the model from a checkpoint (eval mode, CPU) and return it with its card."""
    path = resolve_checkpoint(path)
    card = read_card(path)
    model = UNet(**card.model_args)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), card


def save_resume_state(path: Path, model: UNet, optimizer: torch.optim.Optimizer, epoch: int,
                      history: list[dict[str, float]]) -> None:
    """Write the resume state (weights-only loadable) atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                "history": json.dumps(history)}, tmp)
    tmp.replace(path)


def load_resume_state(path: Path) -> dict[str, Any]:
    """Read a resume state with ``torch.load(weights_only=True)``."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors name the offending global
        raise InputError(f"{path}: cannot resume from it ({str(err).splitlines()[0]})") from None
    state["history"] = json.loads(state["history"])
    return state
