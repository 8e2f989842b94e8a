"""Training the corner model: jittered patches each epoch, Bhattacharyya loss, validation BC, the prior and the
card, calibration at the end; the epochs run in the loop both recipes share (`training/loop.py`)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vcorner.io.atomic import write_text_atomic
from vcorner.io.records import InputError
from vcorner.models.card import ModelCard
from vcorner.network.checkpoint import load_model, save_model
from vcorner.network.loss import background_mass, bhattacharyya, bhattacharyya_loss
from vcorner.network.unet import UNet, count_parameters, create_model
from vcorner.postprocess.prior import fit_prior
from vcorner.training import loop
from vcorner.training.calibrate import calibrate_checkpoint, grid_size
from vcorner.training.checkpoint import init_provenance
from vcorner.training.data import AnnotatedImage, PatchPass, batches, epoch_patches, load_dataset, split_images
from vcorner.training.loop import Reporter, SilentReporter
from vcorner.training.recipe import Recipe
from vcorner.training.run_folder import check_trainable, prepare_run_folder
from vcorner.training.verdict import corner_verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """Where the run wrote its model and how validation BC evolved (one entry per epoch)."""

    model_path: Path
    history: list[dict[str, float]]
    calibration: dict | None = None
    """What the final calibration reached (:func:`vcorner.training.calibrate.calibrate_checkpoint`): the
    validation images used, the ellipse scale, the coverage of the 50% and 95% ellipses; None when skipped."""
    previous: Path | None = None
    """Where ``force`` moved an earlier run's files (``out/previous-<UTC time>/``), or None."""
    final: dict | None = None
    """The saved model card's ``training``: the epoch of the best validation BC, ``val_bc``, ``val_bc_start``
    (the untrained network) and the ``verdict``; None when no epoch was trained."""


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` if given, else CUDA when present, else CPU.

    Raises:
        InputError: ``requested`` is not a torch device, or a CUDA device this machine does not have.
    """
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise InputError(f"--device {requested!r}: not a torch device (e.g. cpu, cuda, cuda:1)") from None
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.type not in ("cpu", "cuda"):
            raise InputError(f"--device {requested}: training runs on cpu or cuda[:N]")
        if device.type == "cuda" and (device.index or 0) >= count:
            raise InputError(f"--device {requested}: no such CUDA device here ({count} found)")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def evaluate_bc(model: UNet, patches: Iterable[tuple[np.ndarray, np.ndarray]], device: torch.device,
                batch_size: int = 128) -> float:
    """Mean Bhattacharyya coefficient of the model's maps against ground truth (chunks of patches and targets,
    (M, 1, N, N) each: a :class:`~vcorner.training.data.PatchPass`)."""
    model.eval()
    scores = [bhattacharyya(torch.from_numpy(yb).to(device), model(torch.from_numpy(xb).to(device))).cpu()
              for xb, yb in batches(patches, batch_size)]
    return float(torch.cat(scores).mean()) if scores else math.nan


def train_step(model: UNet, optimizer: torch.optim.Optimizer, scheduler, batch: tuple[np.ndarray, np.ndarray],
               device: torch.device, background_weight: float = 0.0) -> float:
    """One optimizer step on patches and targets (B, 1, N, N) each: the Bhattacharyya loss (plus
    ``background_weight`` times the maps' mass off the target); the loss."""
    xb, yb = batch
    target, maps = torch.from_numpy(yb).to(device), model(torch.from_numpy(xb).to(device))
    loss = bhattacharyya_loss(target, maps)
    if background_weight:
        loss = loss + background_weight * background_mass(target, maps)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def train(data: Path, recipe: Recipe, out: Path, *, resume: bool = False, force: bool = False,
          device: str | None = None, reporter: Reporter | None = None, command: str = "",
          calibrate: bool = True, init: Path | None = None) -> TrainResult:
    """Train ``recipe`` on the annotated dataset in ``data``, writing ``out/model.safetensors``.

    ``out`` receives ``model.safetensors`` (best validation BC, with its model card), ``last.pt`` (resume
    state), ``metrics.jsonl`` (one line per epoch) and ``recipe.json``. With ``calibrate`` the best model's
    decoding constants and ellipses are then tuned on the validation images (:mod:`vcorner.training.calibrate`).
    ``init``: a corner checkpoint whose weights start the run (fine-tuning, with a fresh optimizer and schedule);
    the card's ``val_bc_start`` stays the untrained network's, so the verdict still asks what training learned.

    Before anything is written, data that cannot train is refused, and an ``out`` holding an earlier run needs
    ``resume`` (same recipe) or ``force`` (the earlier files move to ``out/previous-<time>/``):
    :mod:`vcorner.training.run_folder`.

    Raises:
        InputError: one line naming the dataset, the run folder or the recipe field.
    """
    reporter = reporter or SilentReporter()
    opt, out = recipe.train, Path(out)
    dev = pick_device(device)
    train_images, val_images = _split(Path(data), recipe)
    torch.manual_seed(opt.seed)
    prior = fit_prior([im.record for im in train_images])
    val = epoch_patches(val_images, opt.val_patches_per_vertebra, recipe.sampling, recipe.ground_truth, None)

    model = create_model(recipe.model.recipe, **recipe.model.constructor_overrides()).to(dev)
    untrained_bc = evaluate_bc(model, val, dev)
    if init is not None:
        _start_from(model, Path(init), recipe)  # a checkpoint that does not fit is refused before anything is written
    previous = prepare_run_folder(out, recipe.to_dict(), resume=resume, force=force,
                                  inputs=[Path(data) / "annotations.json", init])
    out.mkdir(parents=True, exist_ok=True)
    per_epoch = math.ceil(sum(len(im.frames) for im in train_images) * opt.patches_per_vertebra / opt.batch_size)
    schedule = loop.plan(opt.epochs, per_epoch, opt.batch_size, opt.seed, opt.max_steps)
    optimizer, scheduler = loop.one_cycle(model, opt.lr, opt.weight_decay, schedule.total_steps, pct_start=0.1)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume:
        history, start_epoch = loop.resume(out, model, optimizer, scheduler)
        log.info("resuming %s at epoch %d", out, start_epoch + 1)

    if not history:
        history.append({"epoch": 0, "val_bc": evaluate_bc(model, val, dev) if init else untrained_bc,
                        "train_loss": math.nan,
                        "steps": 0, "patches_per_s": 0.0, "seconds": 0.0})
    write_text_atomic(out / "recipe.json", json.dumps(recipe.to_dict(), indent=1))
    card_training = {"data": str(data), "recipe": recipe.name, "seed": opt.seed, "command": command,
                     "train_images": len(train_images), "val_images": len(val_images),
                     "parameters": count_parameters(model), "device": str(dev),
                     **({"init": {**init_provenance(Path(init)), "val_bc": history[0]["val_bc"]}}
                        if init is not None else {})}

    def epoch_data(rng: np.random.Generator) -> tuple[PatchPass, int]:
        patches = epoch_patches(train_images, opt.patches_per_vertebra, recipe.sampling, recipe.ground_truth, rng)
        return patches, len(patches)

    def save(epoch: int, metrics: dict[str, float]) -> None:
        card = ModelCard(model.constructor_args(), recipe.sampling, recipe.ground_truth, recipe.decode, prior,
                         {**card_training, "epoch": epoch, "val_bc": metrics["val_bc"],
                          "val_bc_start": untrained_bc})
        save_model(out / "model.safetensors", model, card)

    steps = loop.Recipe(epoch_data, lambda batch: train_step(model, optimizer, scheduler, batch, dev,
                                                            opt.background_weight),
                        lambda: {"val_bc": evaluate_bc(model, val, dev)}, save)
    loop.run_epochs(model, optimizer, steps, schedule, out, history, start_epoch, reporter)
    calibration, final = None, None
    if (out / "model.safetensors").is_file():
        final = _record_verdict(out / "model.safetensors")
        if calibrate:
            calibration = _calibrate(out / "model.safetensors", Path(data), [im.record for im in val_images], dev,
                                     reporter)
    return TrainResult(out / "model.safetensors", history, calibration, previous, final)


def _start_from(model: UNet, init: Path, recipe: Recipe) -> None:
    """Load ``init``'s weights into ``model``.

    Raises:
        InputError: ``init`` is not a corner checkpoint of the recipe's widths and patch size.
    """
    start, card = load_model(init)
    if start.constructor_args() != model.constructor_args() or card.sampling.patch_size != recipe.sampling.patch_size:
        raise InputError(f"{init}: its network or patch size differs from recipe {recipe.name!r}'s; cannot start from "
                         "it")
    model.load_state_dict(start.state_dict())


def _record_verdict(checkpoint: Path) -> dict:
    """Write the verdict of the best checkpoint's validation BC (:func:`vcorner.training.verdict.corner_verdict`)
    into its card; returns the card's ``training``."""
    from dataclasses import replace

    model, card = load_model(checkpoint)
    training = {**card.training, "verdict": corner_verdict(card.training["val_bc"], card.training["val_bc_start"])}
    save_model(checkpoint, model, replace(card, training=training))
    return training


def _split(data: Path, recipe: Recipe) -> tuple[list[AnnotatedImage], list[AnnotatedImage]]:
    """The usable training and validation images of ``data``, once they are known to train (at least one
    optimizer step per epoch, validation images distinct from the training ones)."""
    opt = recipe.train
    _, images = load_dataset(data, recipe.ground_truth)
    train_idx, val_idx = split_images(len(images), opt.val_fraction, opt.seed)
    train_images = [images[i] for i in train_idx]
    vertebrae = sum(len(im.frames) for im in train_images)
    patches = vertebrae * opt.patches_per_vertebra
    check_trainable(data, len(images), patches, f"{len(train_images)} training image(s) with {vertebrae} vertebrae "
                    f"give {patches} patches (patches_per_vertebra {opt.patches_per_vertebra})", opt.epochs,
                    opt.batch_size, f"recipe {recipe.name}")
    return train_images, [images[i] for i in val_idx]


def _calibrate(checkpoint: Path, data: Path, records: list, dev: torch.device, reporter: Reporter) -> dict:
    """Tune and calibrate the best checkpoint on the validation images; what it reached."""

    reporter.start_calibration(grid_size())
    card, result = calibrate_checkpoint(checkpoint, data, records, str(dev), progress=reporter.calibration_step)
    return {"images": card.training["tune_images"], "ellipse_scale": card.decode.ellipse_scale,
            "patches_per_vertebra": card.sampling.patches_per_vertebra, **result.coverage}
