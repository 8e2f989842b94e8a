"""Checkpoints: safetensors weights with the model card in their metadata; nothing is unpickled.

``model.safetensors`` holds the weights and, under the metadata key
:data:`vcorner.models.modelfile.CHECKPOINT_CARD_KEY`, the JSON card (read without torch by
:func:`vcorner.models.modelfile.read_checkpoint_card`).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from vcorner.models.card import ModelCard
from vcorner.models.modelfile import CHECKPOINT_CARD_KEY, read_checkpoint_card, resolve_checkpoint
from vcorner.network.unet import UNet


def save_model(path: Path, model: UNet, card: ModelCard) -> None:
    """Write weights and card to ``path`` (a ``.safetensors`` file), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={CHECKPOINT_CARD_KEY: json.dumps(card.to_dict())})
    tmp.replace(path)


def load_model(path: Path, card_type: type = ModelCard) -> tuple[UNet, ModelCard]:
    """Rebuild the model from a checkpoint (eval mode, CPU) and return it with its card (``card_type``: the
    corner model's :class:`ModelCard` or a centre detector's :class:`DetectorCard`)."""
    path = resolve_checkpoint(path)
    card = read_checkpoint_card(path, card_type)
    model = UNet(**card.model_args)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), card
