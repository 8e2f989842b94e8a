"""The Bhattacharyya loss (paper equations 2 and 3; DESIGN.md section 3, step 6)."""

from __future__ import annotations

import torch


def bhattacharyya(y: torch.Tensor, p: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Bhattacharyya coefficient per sample, ``sum sqrt(y * P)``.

    The square root's gradient is guarded at zero: ``sqrt(yP + eps) - sqrt(eps)`` is exact to ~1e-6 on
    a 64x64 map and its gradient ``y / (2 sqrt(yP + eps))`` is finite everywhere (and zero where y = 0).

    Shapes:
        y, p: (B, 1, N, N) maps that each sum to 1 -> (B,).
    """
    prod = (y.float() * p.float()).flatten(1)
    return (torch.sqrt(prod + eps) - eps**0.5).sum(dim=1)


def bhattacharyya_loss(y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``L = -2 BC(y, P)`` averaged over the batch (scalar)."""
    return -2.0 * bhattacharyya(y, p).mean()
