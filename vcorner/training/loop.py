"""The training loop both recipes run (the corner model, `training/trainer.py`; the centre detector,
`training/detector_trainer.py`): AdamW on a one-cycle schedule, seeded epochs of batches, validation after each
epoch, ``metrics.jsonl``, the resume state ``last.pt`` and the best checkpoint; a recipe brings only what differs
(its batches, its step, its validation, its model card).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from vcorner.training.checkpoint import load_resume_state, save_resume_state
from vcorner.training.data import batches
from vcorner.training.run_folder import load_weights

Batch = tuple[np.ndarray, ...]
"""One batch: inputs (B, C, H, W) first, then what the recipe's step needs (targets, centres)."""


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
class Plan:
    """How long a run trains: ``epochs`` epochs of ``per_epoch`` optimizer steps, at most ``total_steps`` in all
    (a recipe's ``max_steps``), batches of ``batch_size``, epoch ``e`` seeded by ``(seed, e)``."""

    epochs: int
    per_epoch: int
    total_steps: int
    batch_size: int
    seed: int


def plan(epochs: int, per_epoch: int, batch_size: int, seed: int, max_steps: int | None) -> Plan:
    """The run's :class:`Plan`: ``epochs * per_epoch`` steps, or ``max_steps`` when fewer."""
    total = min(per_epoch * epochs, max_steps or per_epoch * epochs)
    return Plan(epochs, per_epoch, total, batch_size, seed)


def one_cycle(model: torch.nn.Module, lr: float, weight_decay: float, total_steps: int,
              pct_start: float) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW and a one-cycle schedule peaking at ``lr`` after ``pct_start`` of ``total_steps``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total_steps, 1) + 1,
                                                    pct_start=pct_start)
    return optimizer, scheduler


def resume(out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
           scheduler) -> tuple[list[dict[str, float]], int]:
    """Load ``out/last.pt`` (checked by :func:`vcorner.training.run_folder.prepare_run_folder`) into ``model`` and
    ``optimizer`` and replay the schedule over the steps taken (possibly re-planned for more epochs); the history
    and the epochs done."""
    state = load_resume_state(out / "last.pt")
    load_weights(model, optimizer, state, out / "last.pt")
    with warnings.catch_warnings():  # replaying the schedule
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(sum(int(h["steps"]) for h in state["history"])):
            scheduler.step()
    return state["history"], int(state["epoch"])


@dataclass(frozen=True)
class Recipe:
    """What one recipe brings to the loop.

    Attributes:
        epoch_data: The epoch's chunks of batches from its seeded generator, and how many samples they hold.
        step: One optimizer step on a batch; its loss.
        validate: The validation metrics after an epoch (``val_bc`` at least; higher is better).
        save: Save the model with its card, given the epoch and its metrics (called when the epoch is the best).
    """

    epoch_data: Callable[[np.random.Generator], tuple[Iterable[Batch], int]]
    step: Callable[[Batch], float]
    validate: Callable[[], dict[str, float]]
    save: Callable[[int, dict[str, float]], None]


def run_epochs(model: torch.nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe, schedule: Plan,
               out: Path, history: list[dict[str, float]], start: int,
               reporter: Reporter) -> list[dict[str, float]]:
    """Train epochs ``start + 1 ..`` of ``schedule`` (stopping at its total steps; batches of one sample are
    skipped, batch norm needs two), validating after each; appends each epoch's metrics to ``history`` (returned)
    and ``out/metrics.jsonl``, saves ``out/last.pt``, and the model through ``recipe.save`` when its ``val_bc``
    is the best of the trained epochs."""
    steps_done = sum(int(h["steps"]) for h in history)
    for epoch in range(start, schedule.epochs):
        if steps_done >= schedule.total_steps:
            break
        chunks, size = recipe.epoch_data(np.random.default_rng([schedule.seed, epoch]))
        left = schedule.total_steps - steps_done
        reporter.start_epoch(epoch + 1, schedule.epochs, min(size, left * schedule.batch_size))
        began, losses = time.perf_counter(), []
        model.train()
        for batch in batches(chunks, schedule.batch_size):
            if len(losses) >= left:
                break
            if len(batch[0]) < 2:
                continue
            losses.append(recipe.step(batch))
            reporter.advance(len(batch[0]), losses[-1])
        steps_done += len(losses)
        seconds = time.perf_counter() - began
        metrics = {"epoch": epoch + 1, **recipe.validate(),
                   "train_loss": float(np.mean(losses)) if losses else math.nan, "steps": len(losses),
                   "patches_per_s": len(losses) * schedule.batch_size / max(seconds, 1e-9), "seconds": seconds}
        history.append(metrics)
        reporter.end_epoch(metrics)
        _checkpoint(out, model, optimizer, epoch + 1, history, recipe.save)
    return history


def _checkpoint(out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                history: list[dict[str, float]], save: Callable[[int, dict[str, float]], None]) -> None:
    """Append the epoch's metrics, save the resume state, and the model when its validation BC is the best of the
    trained epochs (a history's epoch 0, the untrained network, does not count)."""
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(history[-1]) + "\n")
    save_resume_state(out / "last.pt", model, optimizer, epoch, history)
    if history[-1]["val_bc"] >= max(h["val_bc"] for h in history if h["epoch"] > 0):
        save(epoch, history[-1])
