"""Resume state of a training run: ``last.pt`` holds tensors and plain values only and loads with
``weights_only=True`` (the weights themselves are saved by :func:`vcorner.network.checkpoint.save_model`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vcorner.io.records import InputError
from vcorner.models.card import ModelCard
from vcorner.models.modelfile import read_checkpoint_card
from vcorner.network.unet import UNet


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
    if not isinstance(state, dict) or not {"model", "optimizer", "epoch", "history"} <= set(state):
        raise InputError(f"{path}: not a vcorner resume state (model, optimizer, epoch, history); cannot resume")
    state["history"] = json.loads(state["history"])
    return state


def init_provenance(checkpoint: Path, card_type: type = ModelCard) -> dict:
    """What trained a starting checkpoint (``vcorner train --init``): its path and its card's command, data, epoch,
    validation results and own starting point, as the new run's card records them under ``training.init``."""
    card = read_checkpoint_card(checkpoint, card_type)
    return {"checkpoint": str(checkpoint),
            **{k: card.training.get(k) for k in ("command", "data", "epoch", "val_bc", "val_recall", "init")
               if card.training.get(k) is not None}}
