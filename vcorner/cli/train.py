"""``vcorner train DATA --config train/<recipe>.toml --out RUN``."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, TextColumn

from vcorner.cli.common import fail, progress_bar, stderr, user_errors


class RichReporter:
    """Shows a progress bar per epoch with patches/s and loss, and a line of metrics after it."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.task, self.began, self.done = progress, None, 0.0, 0

    def start_epoch(self, epoch: int, epochs: int, patches: int) -> None:
        self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=patches, rate=0.0, loss=float("nan"))
        self.began, self.done = time.perf_counter(), 0

    def advance(self, patches: int, loss: float) -> None:
        self.done += patches
        rate = self.done / max(time.perf_counter() - self.began, 1e-9)
        self.progress.update(self.task, advance=patches, rate=rate, loss=loss)

    def start_calibration(self, candidates: int) -> None:
        self.task = self.progress.add_task("calibrating on the validation images", total=candidates, rate=0.0,
                                           loss=float("nan"))

    def calibration_step(self) -> None:
        self.progress.update(self.task, advance=1)

    def end_epoch(self, metrics: dict[str, float]) -> None:
        found = f", found {metrics['val_recall']:.1%}" if "val_recall" in metrics else ""
        stderr.print(f"epoch {metrics['epoch']}: val BC {metrics['val_bc']:.4f}{found}, "
                     f"loss {metrics['train_loss']:.4f}, {metrics['patches_per_s']:.0f} patches/s, "
                     f"{metrics['seconds']:.0f} s", highlight=False)


def train(
    data: Annotated[Path, typer.Argument(help="Dataset folder with annotations.json and its images.")],
    config: Annotated[Path, typer.Option("--config", "-c", help="Recipe TOML, e.g. train/lite.toml.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder for checkpoints and metrics.")],
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in OUT from OUT/last.pt (same recipe; "
                                                          "only epochs and max_steps may change).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Start over in an OUT that holds an earlier run: its files "
                                                        "move into OUT/previous-<UTC time>/.")] = False,
    device: Annotated[str | None, typer.Option(help="torch device (default: cuda if present, else cpu).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the recipe's epochs.")] = None,
    init: Annotated[Path | None, typer.Option(
        "--init", help="Centre detector only: start from this checkpoint's weights (fine-tuning; fresh optimizer "
                       "and schedule).")] = None,
    calibrate: Annotated[bool, typer.Option(
        "--calibrate/--no-calibrate", help="Finally tune the decoding constants and calibrate the 95% ellipses on "
                                           "the validation images (as vcorner tune does).")] = True,
) -> None:
    """Train the corner network, or the centre detector when the recipe says task = "detector", on an annotated
    dataset; saves OUT/model.safetensors with its card.

    The corner network ends by choosing the decoding constants and calibrating the uncertainty ellipses on the
    run's own validation images, so that the exported model's 95% ellipses hold about 95% of true corners.
    """
    with user_errors():
        try:
            from vcorner.training.detector_recipe import DetectorRecipe, load_any_recipe
            from vcorner.training.trainer import pick_device
            from vcorner.training.trainer import train as run_training
        except ImportError as err:
            fail(f"training needs torch: pip install 'vcorner[train]' ({err})")
        pick_device(device)  # a bad --device is refused before anything is read or written
        from vcorner.phantoms.holdout import refuse_holdout

        refuse_holdout(data, "training")
        recipe = load_any_recipe(config)
        if epochs is not None:
            from dataclasses import replace

            recipe = replace(recipe, train=replace(recipe.train, epochs=epochs))
        command = "vcorner " + shlex.join(sys.argv[1:])
        if isinstance(recipe, DetectorRecipe):
            _train_detector(data, recipe, out, resume, force, device, command, init)
            return
        if init is not None:
            fail("--init is for centre detector recipes (task = \"detector\"); resume a corner run with --resume")
        with progress_bar(TextColumn("{task.fields[rate]:.0f} patches/s"),
                          TextColumn("loss {task.fields[loss]:.4f}")) as progress:
            result = run_training(data, recipe, out, resume=resume, force=force, device=device,
                                  reporter=RichReporter(progress), command=command, calibrate=calibrate)
    _say_previous(result.previous)
    first, last = result.history[0]["val_bc"], max(h["val_bc"] for h in result.history)
    stderr.print(f"validation BC {first:.4f} -> {last:.4f} (best); model: {result.model_path}", highlight=False)
    if result.calibration:
        c = result.calibration
        stderr.print(f"calibrated on {c['images']} validation image(s): ellipse scale {c['ellipse_scale']}, the 95% "
                     f"ellipses hold {c['inside_95']:.1%} of true corners there (50% ellipses: {c['inside_50']:.1%})",
                     highlight=False)
    else:
        stderr.print("[yellow]warning:[/] not calibrated (--no-calibrate): run vcorner tune MODEL VAL_DATA before "
                     "trusting the sd/ellipse columns", highlight=False)


def _say_previous(previous: Path | None) -> None:
    """Say where --force moved an earlier run's files."""
    if previous is not None:
        stderr.print(f"the earlier run's files are kept in {previous}", highlight=False)


def _train_detector(data: Path, recipe, out: Path, resume: bool, force: bool, device: str | None, command: str,
                    init: Path | None) -> None:
    """Train the centre detector with a progress bar; print where its best checkpoint went."""
    from vcorner.training.detector_trainer import train_detector

    with progress_bar(TextColumn("{task.fields[rate]:.0f} views/s"),
                      TextColumn("loss {task.fields[loss]:.4f}")) as progress:
        result = train_detector(data, recipe, out, resume=resume, force=force, device=device,
                                reporter=RichReporter(progress), command=command, init=init)
    _say_previous(result.previous)
    best = max(result.history, key=lambda h: h["val_bc"])
    stderr.print(f"detector: best validation BC {best['val_bc']:.4f} (epoch {best['epoch']}), centres found "
                 f"{best['val_recall']:.1%}, median centre error {best['val_error_px']:.1f} px; model: "
                 f"{result.model_path}", highlight=False, soft_wrap=True)
