"""Training recipes: TOML files that fill frozen dataclasses (``train/<recipe>.toml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from vcorner.config import DecodeConfig, GroundTruthConfig, SamplingConfig, from_dict, to_dict
from vcorner.io.records import InputError


@dataclass(frozen=True)
class ModelSpec:
    """Which UNet: a recipe name from ``vcorner.network.unet.RECIPES`` plus constructor overrides."""

    recipe: str = "lite"
    widths: tuple[int, ...] | None = None
    padding_mode: str = "zeros"
    head_width: int = 0
    """Hidden channels of the map head (``vcorner.network.unet.UNet``); 0: the paper's single 1x1 convolution."""

    def constructor_overrides(self) -> dict[str, Any]:
        overrides: dict[str, Any] = {"padding_mode": self.padding_mode}
        if self.widths is not None:
            overrides["widths"] = list(self.widths)
        if self.head_width:
            overrides["head_width"] = self.head_width
        return overrides


@dataclass(frozen=True)
class OptimSpec:
    """Optimization: epochs of freshly jittered patches, AdamW with a one-cycle schedule, validation split.

    ``background_weight`` > 0 adds that multiple of the predicted mass outside the ground truth to the loss.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patches_per_vertebra: int = 12
    val_fraction: float = 0.15
    val_patches_per_vertebra: int = 6
    seed: int = 0
    max_steps: int | None = None
    background_weight: float = 0.0


@dataclass(frozen=True)
class Recipe:
    """Everything a training run needs besides the data."""

    name: str = "lite"
    model: ModelSpec = field(default_factory=ModelSpec)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    ground_truth: GroundTruthConfig = field(default_factory=GroundTruthConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    train: OptimSpec = field(default_factory=OptimSpec)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{k: to_dict(getattr(self, k))
                                      for k in ("model", "sampling", "ground_truth", "decode", "train")}}


def sections_from_dict(data: dict[str, Any], sections: dict[str, type], where: str,
                       keys: frozenset[str] = frozenset({"name", "reproduce"})) -> dict[str, Any]:
    """Each table of ``data`` as its dataclass of ``sections`` (missing tables: defaults).

    Raises:
        InputError: a table not in ``sections`` (other than the top-level ``keys``), or an unknown key.
    """
    unknown = sorted(set(data) - set(sections) - keys)
    if unknown:
        raise InputError(f"{where}: unknown table(s) {', '.join(unknown)}")
    try:
        return {k: from_dict(cls, data.get(k), f"{where} [{k}]") for k, cls in sections.items()}
    except (TypeError, ValueError) as err:
        raise InputError(str(err)) from None


def recipe_from_dict(data: dict[str, Any], where: str = "recipe") -> Recipe:
    """Build a :class:`Recipe` from nested tables; unknown tables or keys raise InputError."""
    sections = {"model": ModelSpec, "sampling": SamplingConfig, "ground_truth": GroundTruthConfig,
                "decode": DecodeConfig, "train": OptimSpec}
    parts = sections_from_dict(data, sections, where)
    if "model" in parts:
        check_model_spec(parts["model"], where)
    return Recipe(name=str(data.get("name", "custom")), **parts)


def check_model_spec(spec: ModelSpec, where: str) -> None:
    """Refuse a model recipe name or padding mode the UNet does not know (one line naming both).

    Raises:
        InputError: ``where: [model] recipe 'x' is not one of ...``.
    """
    from vcorner.network.unet import RECIPES

    if spec.recipe not in RECIPES:
        raise InputError(f"{where}: [model] recipe {spec.recipe!r} is not one of {', '.join(RECIPES)}")
    if spec.padding_mode not in ("zeros", "reflect", "replicate", "circular"):
        raise InputError(f"{where}: [model] padding_mode {spec.padding_mode!r} is not one of zeros, reflect, "
                         "replicate, circular")
    if not isinstance(spec.head_width, int) or spec.head_width < 0:
        raise InputError(f"{where}: [model] head_width must be 0 or a positive whole number, got {spec.head_width!r}")


def read_toml(path: Path) -> dict[str, Any]:
    """The tables of a TOML recipe file.

    Raises:
        InputError: missing file or invalid TOML (one line).
    """
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such recipe file") from None
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"{path}: not valid TOML ({err})") from None


def load_recipe(path: Path) -> Recipe:
    """Read a TOML recipe file."""
    return recipe_from_dict(read_toml(path), str(path))
