"""The Bhattacharyya loss (paper equations 2 and 3; docs/design.md section 2, step 6)."""

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


def background_mass(y: torch.Tensor, p: torch.Tensor, floor: float = 1e-6) -> torch.Tensor:
    """Predicted probability where the ground truth is (near) zero, averaged over the batch (scalar).

    The paper's conclusion asks for a loss that also penalizes residual background; adding
    ``weight * background_mass`` to the Bhattacharyya loss does that.
    """
    return (p.float() * (y.float() <= floor)).flatten(1).sum(dim=1).mean()
