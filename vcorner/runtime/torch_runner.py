"""torch backend: the checkpoint run eagerly (the reference every other backend is compared against)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vcorner.runtime.base import Runner


class TorchRunner(Runner):
    """Eager torch on a ``.safetensors`` checkpoint (needs the ``train`` extra).

    Args:
        checkpoint: run folder or ``.safetensors`` file.
        device: torch device string (``cpu``, ``cuda``).
        half: run in FP16 with channels_last (CUDA only); the normalization stays FP32.
    """

    name = "torch"

    def __init__(self, checkpoint: Path, device: str = "cpu", half: bool = False) -> None:
        self.checkpoint, self.device, self.half = Path(checkpoint), device, half
        self.model = None

    def activate(self) -> None:
        import torch

        from vcorner.training.checkpoint import load_model

        model, self.card = load_model(self.checkpoint)
        model = model.to(self.device)
        if self.half:
            model = model.half().to(memory_format=torch.channels_last)
        self.model, self._torch = model, torch

    def infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            if self.half:
                x = x.half().contiguous(memory_format=torch.channels_last)
            return self.model(x).float().cpu().numpy()
