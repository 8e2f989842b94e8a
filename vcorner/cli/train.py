"""``vcorner train DATA --config train/<recipe>.toml --out RUN``."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress, TextColumn

from vcorner.cli.common import fail, progress_bar, stderr, user_errors


class RichReporter:
    """Shows a progress bar per epoch with patches/s and loss (in a log: a plain line every
    ``$VCORNER_PROGRESS_SECONDS``, with the time left of all epochs), and a line of metrics after each epoch."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.task, self.began, self.done = progress, None, 0.0, 0
        self.patches, self.epochs_after = 0, 0

    def start_epoch(self, epoch: int, epochs: int, patches: int) -> None:
        self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=patches, rate=0.0, loss=float("nan"))
        self.began, self.done, self.patches, self.epochs_after = time.perf_counter(), 0, patches, epochs - epoch

    def advance(self, patches: int, loss: float) -> None:
        self.done += patches
        rate = self.done / max(time.perf_counter() - self.began, 1e-9)
        eta = (self.patches - self.done + self.epochs_after * self.patches) / max(rate, 1e-9)
        self.progress.update(self.task, advance=patches, rate=rate, loss=loss, eta_s=eta)

    def start_calibration(self, candidates: int) -> None:
        self.task = self.progress.add_task("calibrating on the validation images", total=candidates,
                                           rate=float("nan"), loss=float("nan"))

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
        "--init", help="Start from this checkpoint's weights (fine-tuning; fresh optimizer and schedule): a "
                       "model.safetensors of the same recipe, or one rebuilt from a shipped ONNX by "
                       "train/rebuild_checkpoint.py.")] = None,
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
        with progress_bar(TextColumn("{task.fields[rate]:.0f} patches/s"),
                          TextColumn("loss {task.fields[loss]:.4f}")) as progress:
            result = run_training(data, recipe, out, resume=resume, force=force, device=device,
                                  reporter=RichReporter(progress), command=command, calibrate=calibrate, init=init)
    _say_previous(result.previous)
    final = result.final or {}
    if final:  # the figures of the saved card: the epoch of the best validation BC
        stderr.print(f"validation BC {final['val_bc_start']:.4f} (untrained) -> {final['val_bc']:.4f} (best, epoch "
                     f"{final['epoch']}); model: {result.model_path}", highlight=False, soft_wrap=True)
    if result.calibration:
        from vcorner.evaluation.tune import SAMPLING_TOLERANCE_MM

        c = result.calibration
        stderr.print(f"calibrated on {c['images']} validation image(s): ellipse scale {c['ellipse_scale']}, the 95% "
                     f"ellipses hold {c['inside_95']:.1%} of true corners there (50% ellipses: {c['inside_50']:.1%}); "
                     f"sampling: {c['patches_per_vertebra']} patches per vertebra, the fewest within "
                     f"{SAMPLING_TOLERANCE_MM} mm of the recipe's mean P2P there", highlight=False)
    else:
        stderr.print("[yellow]warning:[/] not calibrated (--no-calibrate): run vcorner tune MODEL VAL_DATA before "
                     "trusting the sd/ellipse columns", highlight=False)
    _say_verdict(final, "model")


def _say_verdict(final: dict, kind: str) -> None:
    """The run's last line when its validation failed: a warning with the card's reason."""
    verdict = final.get("verdict")
    if verdict and not verdict["passed"]:
        stderr.print(f"[yellow]warning:[/] validation failed: {escape(verdict['reason'])}; the card records it "
                     f"(training.verdict) and vcorner batch will warn when it uses this {kind}", highlight=False,
                     soft_wrap=True)


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
    final = result.final  # the saved card's figures: its epoch, at the threshold it chose
    chosen = final["min_confidence_chosen_on"]
    if "fallback" in chosen:
        fallback = chosen["fallback"]
        stderr.print(f"[yellow]warning:[/] confidence threshold {fallback['refused']:g} refused ("
                     f"{escape(fallback['reason'])}); using {fallback['used']:g}, {fallback['from']} (recorded in "
                     "the card's min_confidence_chosen_on)", highlight=False, soft_wrap=True)
    stderr.print(f"detector: best validation BC {final['val_bc']:.4f} (epoch {final['epoch']}), centres found "
                 f"{final['val_recall']:.1%} at confidence >= {final['val_recall_at']:g}, median centre error "
                 f"{final['val_error_px']:.1f} px; model: {result.model_path}", highlight=False, soft_wrap=True)
    _say_verdict(final, "detector")
