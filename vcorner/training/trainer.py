"""The training loop: jittered patches each epoch, Bhattacharyya loss, validation BC, checkpoints, resume."""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from vcorner.io.atomic import write_text_atomic
from vcorner.io.records import InputError
from vcorner.models.card import ModelCard
from vcorner.network.checkpoint import load_model, save_model
from vcorner.network.loss import background_mass, bhattacharyya, bhattacharyya_loss
from vcorner.network.unet import UNet, count_parameters, create_model
from vcorner.postprocess.prior import fit_prior
from vcorner.training.calibrate import calibrate_checkpoint, grid_size
from vcorner.training.checkpoint import load_resume_state, save_resume_state
from vcorner.training.data import AnnotatedImage, PatchPass, batches, epoch_patches, load_dataset, split_images
from vcorner.training.recipe import Recipe
from vcorner.training.run_folder import check_trainable, load_weights, prepare_run_folder
from vcorner.training.verdict import corner_verdict

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """Receives progress; the CLI shows it, tests ignore it."""

    def start_epoch(self, epoch: int, epochs: int, patches: int) -> None: ...
    def advance(self, patches: int, loss: float) -> None: ...
    def end_epoch(self, metrics: dict[str, float]) -> None: ...
    def start_calibration(self, candidates: int) -> None: ...
    def calibration_step(self) -> None: ...


class SilentReporter:
    """A reporter that reports nothing."""

    def start_epoch(self, epoch: int, epochs: int, patches: int) -> None:
        pass

    def advance(self, patches: int, loss: float) -> None:
        pass

    def end_epoch(self, metrics: dict[str, float]) -> None:
        pass

    def start_calibration(self, candidates: int) -> None:
        pass

    def calibration_step(self) -> None:
        pass


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


def train_epoch(model: UNet, optimizer: torch.optim.Optimizer, scheduler, patches: PatchPass, batch_size: int,
                device: torch.device, reporter: Reporter, steps_left: int | None,
                background_weight: float = 0.0) -> tuple[float, int]:
    """One pass over ``patches`` (cut as it goes); returns the mean training loss and the optimizer steps taken."""
    model.train()
    losses, steps = [], 0
    for xb, yb in batches(patches, batch_size):
        if steps_left is not None and steps >= steps_left:
            break
        if len(xb) < 2:  # batch norm needs two samples
            continue
        target, maps = torch.from_numpy(yb).to(device), model(torch.from_numpy(xb).to(device))
        loss = bhattacharyya_loss(target, maps)
        if background_weight:
            loss = loss + background_weight * background_mass(target, maps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        steps += 1
        reporter.advance(len(xb), losses[-1])
    return (float(np.mean(losses)) if losses else math.nan), steps


def train(data: Path, recipe: Recipe, out: Path, *, resume: bool = False, force: bool = False,
          device: str | None = None, reporter: Reporter | None = None, command: str = "",
          calibrate: bool = True) -> TrainResult:
    """Train ``recipe`` on the annotated dataset in ``data``, writing ``out/model.safetensors``.

    ``out`` receives ``model.safetensors`` (best validation BC, with its model card), ``last.pt`` (resume
    state), ``metrics.jsonl`` (one line per epoch) and ``recipe.json``. With ``calibrate`` the best model's
    decoding constants and ellipses are then tuned on the validation images (:mod:`vcorner.training.calibrate`).

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
    previous = prepare_run_folder(out, recipe.to_dict(), resume=resume, force=force,
                                  inputs=[Path(data) / "annotations.json"])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(opt.seed)
    prior = fit_prior([im.record for im in train_images])
    val = epoch_patches(val_images, opt.val_patches_per_vertebra, recipe.sampling, recipe.ground_truth, None)

    model = create_model(recipe.model.recipe, **recipe.model.constructor_overrides()).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    per_epoch = math.ceil(sum(len(im.frames) for im in train_images) * opt.patches_per_vertebra / opt.batch_size)
    total_steps = min(per_epoch * opt.epochs, opt.max_steps or per_epoch * opt.epochs)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=opt.lr, total_steps=max(total_steps, 1) + 1,
                                                    pct_start=0.1)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume:
        state = load_resume_state(out / "last.pt")
        load_weights(model, optimizer, state, out / "last.pt")
        history, start_epoch = state["history"], int(state["epoch"])
        with warnings.catch_warnings():  # replaying the schedule (possibly re-planned for new epochs)
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(sum(int(h["steps"]) for h in history)):
                scheduler.step()
        log.info("resuming %s at epoch %d", out, start_epoch + 1)

    if not history:
        history.append({"epoch": 0, "val_bc": evaluate_bc(model, val, dev), "train_loss": math.nan,
                        "steps": 0, "patches_per_s": 0.0, "seconds": 0.0})
    write_text_atomic(out / "recipe.json", json.dumps(recipe.to_dict(), indent=1))
    card_training = {"data": str(data), "recipe": recipe.name, "seed": opt.seed, "command": command,
                     "train_images": len(train_images), "val_images": len(val_images),
                     "parameters": count_parameters(model), "device": str(dev)}
    steps_done = sum(int(h["steps"]) for h in history)
    for epoch in range(start_epoch, opt.epochs):
        if steps_done >= total_steps:
            break
        rng = np.random.default_rng([opt.seed, epoch])
        patches = epoch_patches(train_images, opt.patches_per_vertebra, recipe.sampling, recipe.ground_truth, rng)
        reporter.start_epoch(epoch + 1, opt.epochs, min(len(patches), (total_steps - steps_done) * opt.batch_size))
        began = time.perf_counter()
        loss, steps = train_epoch(model, optimizer, scheduler, patches, opt.batch_size, dev, reporter,
                                  total_steps - steps_done, opt.background_weight)
        seconds = time.perf_counter() - began
        steps_done += steps
        metrics = {"epoch": epoch + 1, "val_bc": evaluate_bc(model, val, dev), "train_loss": loss,
                   "steps": steps, "patches_per_s": steps * opt.batch_size / max(seconds, 1e-9), "seconds": seconds}
        history.append(metrics)
        reporter.end_epoch(metrics)
        _checkpoint(out, model, optimizer, epoch + 1, history, recipe, prior, card_training)
    calibration, final = None, None
    if (out / "model.safetensors").is_file():
        final = _record_verdict(out / "model.safetensors")
        if calibrate:
            calibration = _calibrate(out / "model.safetensors", Path(data), [im.record for im in val_images], dev,
                                     reporter)
    return TrainResult(out / "model.safetensors", history, calibration, previous, final)


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
            **result.coverage}


def _checkpoint(out: Path, model: UNet, optimizer: torch.optim.Optimizer, epoch: int,
                history: list[dict[str, float]], recipe: Recipe, prior, training: dict) -> None:
    """Append metrics, save the resume state, and save the model when its validation BC is the best."""
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(history[-1]) + "\n")
    save_resume_state(out / "last.pt", model, optimizer, epoch, history)
    best = max(h["val_bc"] for h in history[1:])
    if history[-1]["val_bc"] >= best:
        card = ModelCard(model.constructor_args(), recipe.sampling, recipe.ground_truth, recipe.decode, prior,
                         {**training, "epoch": epoch, "val_bc": history[-1]["val_bc"],
                          "val_bc_start": history[0]["val_bc"]})
        save_model(out / "model.safetensors", model, card)
