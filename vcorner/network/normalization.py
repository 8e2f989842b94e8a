"""The spatial normalization layer (the paper's section 3.1; docs/design.md section 2, step 5)."""

from __future__ import annotations

import torch
from torch import nn


class SpatialNormalization(nn.Module):
    """``P = (a - min a) / (sum(a - min a) + eps)`` per sample, computed in FP32.

    Exports as Cast/ReduceMin/Sub/ReduceSum/Add/Div: standard ONNX ops, no custom op.

    Shapes:
        (B, C, N, N) any float dtype -> (B, C, N, N) float32, non-negative, each of the B x C maps summing to 1.
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        a = a.float()
        shifted = a - torch.amin(a, dim=(2, 3), keepdim=True)
        return shifted / (torch.sum(shifted, dim=(2, 3), keepdim=True) + self.eps)
