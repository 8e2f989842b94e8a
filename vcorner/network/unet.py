"""The paper's UNet with a spatial normalization output layer (docs/design.md section 2, steps 4 and 5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vcorner.network.normalization import SpatialNormalization


def conv_bn_relu(cin: int, cout: int, padding_mode: str) -> nn.Sequential:
    """3x3 convolution (same size) + batch norm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=True, padding_mode=padding_mode),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def double_conv(cin: int, cout: int, padding_mode: str) -> nn.Sequential:
    """Two conv-BN-ReLU layers."""
    return nn.Sequential(conv_bn_relu(cin, cout, padding_mode), conv_bn_relu(cout, cout, padding_mode))


class UNet(nn.Module):
    """UNet with max-pool down path, transposed-conv up path, concatenated skips, spatial normalization.

    With ``len(widths) == 5`` it has 19 conv layers (10 down, 8 up, one final 1x1; two 1x1 with ``head_width``),
    4 max-pools and 4 transposed convolutions; BN+ReLU follow every conv but the last.

    Args:
        widths: channels per level, shallow to deep (each level halves the resolution).
        in_channels: input channels (1: a grey patch).
        padding_mode: ``"zeros"`` (the paper) or ``"reflect"`` (against the border effect).
        out_channels: maps per input: 1 for the corner network, one per vertebra name for the centre
            detector (:mod:`vcorner.training.detector_trainer`); each is normalized on its own.
        head_width: 0 (the paper): the maps are a 1x1 convolution of the first level's ``widths[0]`` features, so
            at most ``widths[0] + 1`` of them can differ; > 0: a hidden 1x1 conv-BN-ReLU layer of this many
            channels comes first, so that many maps can each hold a blob of its own (a 17-name detector on 8
            features kept 11 of its maps flat: README.md, "Many-level films").

    Shapes:
        input (B, in_channels, N, N) float32 with N divisible by ``2 ** (len(widths) - 1)``;
        output (B, out_channels, N, N) float32, each map non-negative and summing to 1.
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128, 256), in_channels: int = 1,
                 padding_mode: str = "zeros", out_channels: int = 1, head_width: int = 0) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths needs at least two positive levels, got {widths}")
        if padding_mode not in ("zeros", "reflect", "replicate"):
            raise ValueError(f"padding_mode must be zeros, reflect or replicate, got {padding_mode!r}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be positive, got {out_channels}")
        if head_width < 0:
            raise ValueError(f"head_width must be 0 or positive, got {head_width}")
        self.widths, self.in_channels, self.padding_mode = widths, in_channels, padding_mode
        self.out_channels, self.head_width = int(out_channels), int(head_width)
        cins = (in_channels,) + widths[:-1]
        self.down = nn.ModuleList(double_conv(a, b, padding_mode) for a, b in zip(cins, widths, strict=True))
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
            for i in reversed(range(len(widths) - 1))
        )
        self.up = nn.ModuleList(
            double_conv(2 * widths[i], widths[i], padding_mode) for i in reversed(range(len(widths) - 1))
        )
        self.head: nn.Module = nn.Conv2d(widths[0], self.out_channels, 1) if not head_width else nn.Sequential(
            nn.Conv2d(widths[0], head_width, 1), nn.BatchNorm2d(head_width), nn.ReLU(inplace=True),
            nn.Conv2d(head_width, self.out_channels, 1))
        self.normalize = SpatialNormalization()

    def constructor_args(self) -> dict:
        """Arguments that rebuild this model (saved beside the weights; ``out_channels`` only when not 1 and
        ``head_width`` only when not 0, so the cards of earlier models stay as they were)."""
        args = {"widths": list(self.widths), "in_channels": self.in_channels, "padding_mode": self.padding_mode}
        if self.out_channels != 1:
            args["out_channels"] = self.out_channels
        if self.head_width:
            args["head_width"] = self.head_width
        return args

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, N, N) -> (B, out_channels, N, N) final activation before the spatial normalization."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for upsample, block in zip(self.upsample, self.up, strict=True):
            x = block(torch.cat([skips.pop(), upsample(x)], dim=1))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, N, N) patches -> (B, out_channels, N, N) spatial probability maps (FP32)."""
        return self.normalize(self.logits(x))


RECIPES: dict[str, dict] = {
    "paper": {"widths": [56, 112, 224, 448, 896]},
    "lite": {"widths": [16, 32, 64, 128, 256]},
    "tiny": {"widths": [4, 8, 8, 16, 16]},
    "detector-lite": {"widths": [8, 16, 32, 64, 128]},
}
"""Named constructor arguments. ``paper``: 23.8M parameters, within 2% of the paper's 24,237,633."""


def create_model(recipe: str = "lite", **overrides) -> UNet:
    """Build a UNet from a recipe name, with constructor overrides."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown model recipe {recipe!r}; known: {', '.join(RECIPES)}")
    return UNet(**{**RECIPES[recipe], **overrides})


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
