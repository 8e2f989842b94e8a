"""Centre detector recipes: ``train/detector-lite.toml`` fills these frozen dataclasses (``task = "detector"``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcorner.config import DetectionConfig, to_dict
from vcorner.io.records import InputError
from vcorner.training.recipe import (
    ModelSpec,
    Recipe,
    check_model_spec,
    read_toml,
    recipe_from_dict,
    sections_from_dict,
)

DETECTOR_TASK = "detector"


@dataclass(frozen=True)
class AugmentSpec:
    """Random views of each training image per epoch.

    ``zoom`` > 1 magnifies and cuts vertebrae off the view (they become absent names); ``negatives`` is the
    share of extra views with no spine at all (noise, gradients, blank, soft tissue only), whose every map is
    trained flat.
    """

    zoom: tuple[float, float] = (0.8, 1.3)
    rotation_deg: float = 12.0
    shift: float = 0.12
    negatives: float = 0.15
    bars: bool = True
    """Bone-like bars (a hand or limb film) among the negative views."""
    wrong_views: float = 0.0
    """Share of extra views of training films in a wrong pose (mirrored, turned half a turn, inverted:
    :data:`vcorner.geometry.views.VIEWS`), every map trained flat, so that the detector finds a spine only in the
    pose the models learned and its confidences pick a film's view (README.md, "Orientation and polarity")."""
    upside_down: float = 0.0
    """Share of the wrong views that are the film flipped top to bottom (``mirrored+turned_180``: posterior still on
    the left), the wrong pose hardest to tell from the learned one; the others are drawn evenly."""
    appearance: float = 0.0
    """Probability that a view gets appearance changes (:func:`vcorner.training.appearance.vary_appearance`)."""
    crop: float = 0.0
    """Probability that a view shows only a part of its film (two or more centres), cut anywhere along it."""
    level_crop: float = 0.0
    """Share of the cut views whose edges fall in the gaps between vertebrae, at levels drawn evenly
    (:func:`vcorner.training.detector_data.level_box`): a film that starts at C5 or ends at C5 is as common as any
    other, where a cut anywhere along the film shows them seldom."""
    slanted_cut: float = 0.0
    """Probability that a view ends along a slanted edge near its first or last vertebra, as a film turned in its
    frame and brought upright does (:func:`vcorner.training.appearance.slanted_cut`): the namer of a film turned 35-45
    degrees otherwise misses the end vertebra that its fill wedge touches."""


@dataclass(frozen=True)
class DetectorOptim:
    """Optimization: AdamW with a one-cycle schedule over ``epochs`` passes of augmented views; the loss is the
    Bhattacharyya loss plus ``naming_weight`` times the naming cross-entropy
    (:func:`vcorner.training.detector_trainer.naming_loss`)."""

    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    seed: int = 0
    max_steps: int | None = None
    naming_weight: float = 0.5
    absent_weight: float = 1.0
    """Weight of a missing name's flat map in the Bhattacharyya loss, against 1 for a name in the view and for the
    maps of views without a spine (:func:`vcorner.training.detector_trainer.map_weights`): below 1, a name the
    network cannot place yet pays less for a blob on the views it is cut from (README.md, "Many-level films")."""


@dataclass(frozen=True)
class DetectorRecipe:
    """Everything a detector training run needs besides the data."""

    name: str = "detector-lite"
    model: ModelSpec = field(default_factory=lambda: ModelSpec(recipe="detector-lite"))
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    train: DetectorOptim = field(default_factory=DetectorOptim)

    def to_dict(self) -> dict[str, Any]:
        return {"task": DETECTOR_TASK, "name": self.name,
                **{k: to_dict(getattr(self, k)) for k in ("model", "detection", "augment", "train")}}


def detector_recipe_from_dict(data: dict[str, Any], where: str = "recipe") -> DetectorRecipe:
    """Build a :class:`DetectorRecipe` from nested tables; unknown tables or keys raise InputError."""
    sections = {"model": ModelSpec, "detection": DetectionConfig, "augment": AugmentSpec, "train": DetectorOptim}
    parts = sections_from_dict(data, sections, f"{where} (a detector recipe)",
                               frozenset({"name", "task", "reproduce"}))
    if "model" not in data:
        parts["model"] = ModelSpec(recipe="detector-lite")
    check_model_spec(parts["model"], where)
    return DetectorRecipe(name=str(data.get("name", "detector")), **parts)


def load_any_recipe(path: Path) -> Recipe | DetectorRecipe:
    """A TOML recipe: a corner recipe, or a detector recipe when its top level says ``task = "detector"``.

    Raises:
        InputError: missing file, bad TOML, unknown task, table or key.
    """
    data = read_toml(path)
    task = data.get("task", "corners")
    if task == DETECTOR_TASK:
        return detector_recipe_from_dict(data, str(path))
    if task != "corners":
        raise InputError(f"{path}: unknown task {task!r} (corners or detector)")
    return recipe_from_dict({k: v for k, v in data.items() if k != "task"}, str(path))
