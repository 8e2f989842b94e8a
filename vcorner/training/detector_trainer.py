"""Training the centre detector: a UNet with one spatial-normalization map per vertebra name, Bhattacharyya
loss against Gaussians at the annotated centres (flat maps for missing names), on augmented whole-image views.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vcorner.config import DetectionConfig
from vcorner.geometry.letterbox import letterbox_affine, pixel_step
from vcorner.io.atomic import write_text_atomic
from vcorner.io.records import InputError
from vcorner.models.detector_card import DetectorCard
from vcorner.network.checkpoint import load_model, save_model
from vcorner.network.loss import bhattacharyya
from vcorner.network.unet import UNet, count_parameters, create_model
from vcorner.postprocess.peaks import decode_view
from vcorner.training import loop
from vcorner.training.checkpoint import init_provenance
from vcorner.training.data import split_images
from vcorner.training.detector_data import (
    CHUNK_FILMS,
    DetectorImage,
    channel_names,
    epoch_views,
    load_detector_images,
    negative_view,
    view_zoom,
)
from vcorner.training.detector_recipe import DetectorRecipe
from vcorner.training.loop import Reporter, SilentReporter
from vcorner.training.run_folder import check_trainable, prepare_run_folder
from vcorner.training.trainer import pick_device
from vcorner.training.verdict import MIN_THRESHOLD, detector_verdict, threshold_refusal

GRAD_CLIP = 1.0
"""Largest gradient norm of a step (an unclipped run at lr 3e-3 collapsed from val BC 0.49 to 0.07 in one epoch)."""
HIT_RADIUS = 0.25
"""A validation centre counts as found when within this many vertebra spacings of the annotated one."""


@dataclass(frozen=True)
class DetectorTrainResult:
    """Where the run wrote its detector and how validation evolved (one entry per epoch)."""

    model_path: Path
    history: list[dict[str, float]]
    previous: Path | None = None
    """Where ``force`` moved an earlier run's files (``out/previous-<UTC time>/``), or None."""
    final: dict | None = None
    """The saved detector card's ``training``: its epoch, the validation figures at the chosen threshold
    (``val_recall``, ``val_recall_at``), how the threshold was chosen and the ``verdict``."""


@torch.no_grad()
def predict_maps(model: UNet, x: np.ndarray, device: torch.device, batch: int = 32) -> np.ndarray:
    """(M, K, S, S) maps of views ``x`` (M, 1, S, S), in eval mode."""
    model.eval()
    return np.concatenate([model(torch.from_numpy(x[i:i + batch]).to(device)).cpu().numpy()
                           for i in range(0, len(x), batch)])


def map_bc(model: UNet, x: np.ndarray, y: np.ndarray, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(M, K) Bhattacharyya coefficients of the model's maps against targets ``y`` (M, K, S, S), and the maps."""
    maps = predict_maps(model, x, device)
    k = maps.shape[1]
    scores = bhattacharyya(torch.from_numpy(y).flatten(0, 1)[:, None], torch.from_numpy(maps).flatten(0, 1)[:, None])
    return scores.view(-1, k).numpy(), maps


def validation_metrics(model: UNet, images: list[DetectorImage], names: tuple[str, ...], recipe: DetectorRecipe,
                       device: torch.device) -> dict[str, float]:
    """Validation BC of the annotated names, recall (centres found within :data:`HIT_RADIUS` spacings at or above
    the card's confidence) and median centre error (image pixels) on the plain letterboxed images."""
    hits, errors, total, kept = 0, [], 0, []
    views = epoch_views(images, names, recipe.detection, recipe.augment, None)  # chunks, in the images' order
    for (x, y, _), first in zip(views, range(0, len(images), CHUNK_FILMS), strict=True):
        bc, maps = map_bc(model, x, y, device)
        kept.append(bc[y.max(axis=(2, 3)) > 1.5 / (y.shape[2] * y.shape[3])])
        for image, image_maps in zip(images[first:first + len(x)], maps, strict=True):
            affine = letterbox_affine(image.shape, recipe.detection.input_shape)
            found = {d.name: d for d in decode_view(image_maps, names, affine, recipe.detection)[0]}
            for v in image.record.vertebrae:
                total += 1
                d = found.get(v.name)
                if d is None:
                    continue
                error = float(np.linalg.norm(d.xy - v.center))
                errors.append(error)
                hits += error <= HIT_RADIUS * image.spacing_px and d.confidence >= recipe.detection.min_confidence
    bc = np.concatenate(kept) if kept else np.zeros(0)
    return {"val_bc": float(bc.mean()) if len(bc) else math.nan,
            "val_recall": hits / max(total, 1), "val_error_px": float(np.median(errors)) if errors else math.nan}


def naming_loss(maps: torch.Tensor, centres: np.ndarray) -> torch.Tensor:
    """Cross-entropy of the names at the vertebra centres: at the centre of the vertebra named k, map k must hold
    more probability than the other names' maps (``-log(P_k / sum_j P_j)`` there, averaged).

    The Bhattacharyya loss alone has a symmetric plateau: every map learns "a vertebra centre" and puts 1/K of
    its mass on each of the K vertebrae (BC ~ sqrt(1/K), 0.45 for C3-C7), since mass on a wrong vertebra gets no
    gradient of its own. This term tells the maps apart from the first step.

    Args:
        maps: (B, K, S, S) normalized maps.
        centres: (B, K, 2) grid centres (x, y), NaN where the name is missing from the view.
    """
    b, k = np.nonzero(np.isfinite(centres[..., 0]))
    if len(b) == 0:
        return maps.sum() * 0.0
    u = np.clip(np.round(centres[b, k, 0]), 0, maps.shape[-1] - 1).astype(np.int64)
    v = np.clip(np.round(centres[b, k, 1]), 0, maps.shape[-2] - 1).astype(np.int64)
    at = maps[torch.from_numpy(b), :, torch.from_numpy(v), torch.from_numpy(u)]  # (N, K)
    logits = torch.log(at + 1e-12)
    return torch.nn.functional.cross_entropy(logits, torch.from_numpy(k).to(maps.device))


def map_weights(centres: np.ndarray, absent_weight: float) -> np.ndarray:
    """(B * K,) float32 loss weight of every map of a batch: 1 where its name is in the view (a finite centre in
    ``centres`` (B, K, 2)), ``absent_weight`` where it is missing from a view that shows others (a flat target),
    and 1 on every map of a view without a spine (no name at all: a negative or wrong view, whose flat maps are
    what keeps the detector from answering on noise)."""
    present = np.isfinite(centres[..., 0])
    spine = present.any(axis=1, keepdims=True)
    return np.where(present | ~spine, 1.0, absent_weight).astype(np.float32).reshape(-1)


def detector_loss(maps: torch.Tensor, target: torch.Tensor, centres: np.ndarray, naming_weight: float,
                  absent_weight: float = 1.0) -> torch.Tensor:
    """The detector's loss on a batch: ``-2`` times the weighted mean BC of the maps (B, K, S, S) against their
    targets (:func:`map_weights`, from the grid centres (B, K, 2), NaN where a name is missing) plus
    ``naming_weight`` times :func:`naming_loss`."""
    bc = bhattacharyya(target.flatten(0, 1)[:, None], maps.flatten(0, 1)[:, None]).reshape(-1)
    weights = torch.from_numpy(map_weights(centres, absent_weight)).to(maps.device)
    loss = -2.0 * (bc * weights).sum() / weights.sum().clamp_min(1e-6)
    if naming_weight:
        loss = loss + naming_weight * naming_loss(maps, centres)
    return loss


def train_step(model: UNet, optimizer, scheduler, batch: tuple[np.ndarray, np.ndarray, np.ndarray],
               device: torch.device, naming_weight: float, absent_weight: float = 1.0) -> float:
    """One optimizer step on a batch of views (B, 1, S, S), target maps (B, K, S, S) and grid centres (B, K, 2)
    with :func:`detector_loss`."""
    xb, yb, cb = batch
    maps = model(torch.from_numpy(xb).to(device))
    loss = detector_loss(maps, torch.from_numpy(yb).to(device), cb, naming_weight, absent_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def train_detector(data: Path, recipe: DetectorRecipe, out: Path, *, resume: bool = False, force: bool = False,
                   device: str | None = None, reporter: Reporter | None = None, command: str = "",
                   init: Path | None = None) -> DetectorTrainResult:
    """Train the centre detector of ``recipe`` on ``data/annotations.json``; writes ``out/model.safetensors``
    (best validation BC, with its :class:`DetectorCard`), ``last.pt``, ``metrics.jsonl`` and ``recipe.json``.

    ``init``: a detector checkpoint whose weights start the run (fine-tuning, with a fresh optimizer and
    schedule); its names must be among the data's (new ones, such as context names, start
    fresh: :func:`widened_state`). Before anything is written, data that cannot train is refused, and
    an ``out`` holding an earlier run needs ``resume`` (same recipe) or ``force``
    (:mod:`vcorner.training.run_folder`)."""
    reporter = reporter or SilentReporter()
    opt, out = recipe.train, Path(out)
    dev = pick_device(device)
    names, train_images, val_images, views = _split(Path(data), recipe)
    torch.manual_seed(opt.seed)
    model = create_model(recipe.model.recipe, **recipe.model.constructor_overrides(), out_channels=len(names)).to(dev)
    if init is not None:
        start, start_card = load_model(Path(init), DetectorCard)
        if not set(start_card.names) <= set(names) or _shape(start) != _shape(model):
            raise InputError(f"{init}: its names {', '.join(start_card.names)} or widths differ from this run's "
                             f"({', '.join(names)}); cannot start from it")
        model.load_state_dict(widened_state(start.state_dict(), model.state_dict(), start_card.names, names))
    previous = prepare_run_folder(out, recipe.to_dict(), resume=resume, force=force,
                                  inputs=[Path(data) / "annotations.json", init])
    out.mkdir(parents=True, exist_ok=True)
    schedule = loop.plan(opt.epochs, math.ceil(views / opt.batch_size), opt.batch_size, opt.seed, opt.max_steps)
    optimizer, scheduler = loop.one_cycle(model, opt.lr, opt.weight_decay, schedule.total_steps, pct_start=0.15)
    history, start = loop.resume(out, model, optimizer, scheduler) if resume else ([], 0)
    write_text_atomic(out / "recipe.json", json.dumps(recipe.to_dict(), indent=1))
    recipe = with_view_geometry(recipe, train_images)
    training = {"task": "detector", "data": str(data), "recipe": recipe.name, "seed": opt.seed, "command": command,
                **({"init": init_provenance(Path(init), DetectorCard)} if init is not None else {}),
                "train_images": len(train_images), "val_images": len(val_images),
                "parameters": count_parameters(model), "device": str(dev)}

    def save(epoch: int, metrics: dict[str, float]) -> None:
        save_model(out / "model.safetensors", model, DetectorCard(
            model.constructor_args(), names, recipe.detection,
            {**training, "epoch": epoch, **{k: metrics[k] for k in ("val_bc", "val_recall", "val_error_px")}}))

    steps = loop.Recipe(
        lambda rng: (epoch_views(train_images, names, recipe.detection, recipe.augment, rng), views),
        lambda batch: train_step(model, optimizer, scheduler, batch, dev, opt.naming_weight, opt.absent_weight),
        lambda: validation_metrics(model, val_images, names, recipe, dev), save)
    history = loop.run_epochs(model, optimizer, steps, schedule, out, history, start, reporter)
    if not (out / "model.safetensors").is_file():
        raise InputError(f"{out}: no epoch was trained (epochs {opt.epochs}, max_steps {opt.max_steps})")
    final = _set_threshold(out / "model.safetensors", val_images, recipe, dev)
    return DetectorTrainResult(out / "model.safetensors", history, previous, final)


def _shape(model: UNet) -> dict:
    """``model``'s constructor arguments but its number of output maps."""
    return {k: v for k, v in model.constructor_args().items() if k != "out_channels"}


def widened_state(start: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor], start_names: tuple[str, ...],
                  names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The weights of a detector trained on ``start_names`` for ``names``, which keep them in their order and add
    others (context names: C2 above C3, T1 below C7). Every layer stays as trained but the output head's last
    convolution, the only one with a row per name: each old name's row moves to its place, and the new names' rows
    stay as ``fresh`` initialized them."""
    rows = [names.index(n) for n in start_names]
    if rows != sorted(rows):
        raise InputError(f"names {', '.join(start_names)} are not in the order of {', '.join(names)}")
    out = {}
    for key, value in start.items():
        out[key] = value
        if value.shape != fresh[key].shape:
            out[key] = fresh[key].clone()
            out[key][torch.as_tensor(rows)] = value
    return out


def view_spacing(images: list[DetectorImage], size: tuple[int, int]) -> float:
    """The closest typical neighbour spacing of ``images``' letterboxed views of ``size`` (h, w), input pixels: the
    5th percentile over the images (:attr:`vcorner.config.DetectionConfig.spacing_px`)."""
    steps = [pixel_step(letterbox_affine(im.shape, size)) for im in images]
    return float(np.percentile([im.spacing_px / step for im, step in zip(images, steps, strict=True)], 5))


def with_view_geometry(recipe: DetectorRecipe, images: list[DetectorImage]) -> DetectorRecipe:
    """``recipe`` whose detection settings record the training views' geometry (``spacing_px``, which the peak
    decoding follows), unless the recipe sets it."""
    from dataclasses import replace

    if recipe.detection.spacing_px > 0:
        return recipe
    spacing = round(view_spacing(images, recipe.detection.input_shape), 2)
    return replace(recipe, detection=replace(recipe.detection, spacing_px=spacing))


def _split(data: Path, recipe: DetectorRecipe) -> tuple[tuple[str, ...], list[DetectorImage], list[DetectorImage],
                                                          int]:
    """The names, training and validation images of ``data`` and the training views of an epoch, once they are
    known to train (at least one optimizer step per epoch, validation images distinct from the training ones)."""
    opt = recipe.train
    images = load_detector_images(data, recipe.detection.input_shape, view_zoom(recipe.augment))
    train_idx, val_idx = split_images(len(images), opt.val_fraction, opt.seed)
    train_images = [images[i] for i in train_idx]
    negatives = int(round(recipe.augment.negatives * len(train_images)))
    views = len(train_images) + negatives + int(round(recipe.augment.wrong_views * len(train_images)))
    check_trainable(data, len(images), views, f"{len(train_images)} training image(s) give {views} view(s) "
                    f"({negatives} without a spine)", opt.epochs, opt.batch_size, f"recipe {recipe.name}")
    names = channel_names([im.record for im in images])
    return names, train_images, [images[i] for i in val_idx], views


def confidences(model: UNet, images: list[DetectorImage], names: tuple[str, ...], recipe: DetectorRecipe,
                device: torch.device, negatives: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Confidences of the correctly found annotated centres of ``images`` (plain letterbox) of the names the
    detector outputs (its context names, weaker at the film's ends, left out: they only anchor the naming), and the
    largest confidence of each of ``negatives`` views without a spine (seeded)."""
    size = recipe.detection.input_shape
    present = []
    views = epoch_views(images, names, recipe.detection, recipe.augment, None)  # chunks, in the images' order
    for (x, _, _), first in zip(views, range(0, len(images), CHUNK_FILMS), strict=True):
        for image, image_maps in zip(images[first:first + len(x)], predict_maps(model, x, device), strict=True):
            affine = letterbox_affine(image.shape, size)
            for d in decode_view(image_maps, names, affine, recipe.detection)[0]:
                if d.name in recipe.detection.context:
                    continue
                truth = next((v.center for v in image.record.vertebrae if v.name == d.name), None)
                if truth is not None and np.linalg.norm(d.xy - truth) <= HIT_RADIUS * image.spacing_px:
                    present.append(d.confidence)
    rng = np.random.default_rng(12345)
    blank = np.stack([negative_view(size, rng, images) for _ in range(negatives)])
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    absent = [max(d.confidence for d in decode_view(m, names, identity, recipe.detection)[0])
              for m in predict_maps(model, blank, device)]
    return np.asarray(present), np.asarray(absent)


def choose_threshold(present: np.ndarray, absent: np.ndarray) -> float:
    """The confidence threshold between a spine's centres and views without one: the geometric mean of the 1st
    percentile of the correct centres' confidences and the largest confidence seen without a spine."""
    low = float(np.percentile(present, 1)) if len(present) else 0.3
    high = float(np.max(absent)) if len(absent) else 0.0
    return float(np.sqrt(max(low, 1e-4) * max(high, 1e-4))) if high < low else low


def _set_threshold(checkpoint: Path, images: list[DetectorImage], recipe: DetectorRecipe,
                   device: torch.device) -> dict:
    """Choose the confidence threshold on the validation images, measure the detector's final validation figures
    with it, and write both and the verdict into the checkpoint's card; returns the card's ``training``.

    A threshold chosen from fewer than :data:`~vcorner.training.verdict.MIN_THRESHOLD_CENTRES` correct centres, or
    under :data:`~vcorner.training.verdict.MIN_THRESHOLD`, is refused: the recipe's ``min_confidence`` is used
    instead (at least :data:`~vcorner.training.verdict.MIN_THRESHOLD`) and the card says why
    (``min_confidence_chosen_on.fallback``)."""
    from dataclasses import replace

    model, card = load_model(checkpoint, DetectorCard)
    present, absent = confidences(model.to(device), images, card.names, recipe, device)
    threshold = chosen = round(choose_threshold(present, absent), 4)
    refused = threshold_refusal(chosen, len(present))
    chosen_on = {"val_centres": len(present),
                 "centres_1st_percentile": float(np.percentile(present, 1)) if len(present) else None,
                 "negative_views": len(absent), "negatives_max": float(np.max(absent)) if len(absent) else None}
    if refused is not None:
        threshold = max(recipe.detection.min_confidence, MIN_THRESHOLD)
        chosen_on["fallback"] = {"refused": chosen, "reason": refused, "used": threshold,
                                 "from": f"the recipe's detection.min_confidence, at least {MIN_THRESHOLD:g}"}
    detection = replace(card.detection, min_confidence=threshold)
    final = validation_metrics(model, images, card.names, replace(recipe, detection=detection), device)
    detection, margins_chosen_on = choose_margins(lambda views: predict_maps(model, views, device), images,
                                                  card.with_detection(detection))
    training = {**card.training, "val_recall": final["val_recall"], "val_error_px": final["val_error_px"],
                "val_recall_at": threshold, "min_confidence_chosen_on": chosen_on,
                "margins_chosen_on": margins_chosen_on,
                "verdict": detector_verdict(final["val_recall"], threshold)}
    save_model(checkpoint, model.cpu(), replace(card.with_detection(detection), training=training))
    return training


MARGIN_PERCENTILE = 1.0
"""The view and naming margins are set at this percentile of the validation films' own (in the training style):
about 1 film in 100 of the world the detector learned gets a flag (README.md, "Flags")."""


def choose_margins(infer: Callable[[np.ndarray], np.ndarray], images: list[DetectorImage], card: DetectorCard,
                   finder: tuple[DetectorCard, Callable[[np.ndarray], np.ndarray]] | None = None
                   ) -> tuple[DetectionConfig, dict]:
    """The card's ``view_margin`` (with more than one view) and ``naming_margin``, each the
    :data:`MARGIN_PERCENTILE` percentile, and its ``spine_angle_deg`` (the median lean of its names,
    :func:`vcorner.stages.detect.spine_lean_deg`) of the validation films where the view search (the ``finder``'s, when
    given) chose ``as_is`` (they are rendered as the models learned them); and how they were chosen (films, views
    chosen wrongly, medians).

    The margins come from the same view search and naming as a batch's
    (:func:`vcorner.stages.detect.chosen_answer`); ``infer`` maps (B, 1, H, W) views to (B, K, H, W) maps."""
    from dataclasses import replace

    from vcorner.stages.detect import lean_ends, searched_view, spine_lean_deg, view_answers

    leads, margins, leans, wrong = [], [], [], 0
    searcher = finder or (card, infer)
    for image in images:
        pyramid = image.view_pyramid()
        best, lead = searched_view(pyramid, image.shape, *searcher)
        if best.view.name != "as_is":
            wrong += 1
            continue
        leads.append(lead)
        named = best if finder is None else view_answers(pyramid, image.shape, card, infer, (best.view,))[0]
        margins.append(named.margin)
        lean = spine_lean_deg(named, card, image.shape, lean_ends(card))
        leans += [] if lean is None else [lean]
    finite = np.asarray([m for m in margins if np.isfinite(m)])
    detection = card.detection
    if finder is None and len(card.detection.views) > 1 and leads:
        detection = replace(detection, view_margin=round(float(np.percentile(leads, MARGIN_PERCENTILE)), 4))
    if len(finite):
        detection = replace(detection, naming_margin=round(float(np.percentile(finite, MARGIN_PERCENTILE)), 4))
    if leans:
        detection = replace(detection, spine_angle_deg=round(float(np.median(leans)), 2))
    return detection, {"val_films": len(images), "wrong_view_chosen": wrong, "percentile": MARGIN_PERCENTILE,
                       "view_lead_median": float(np.median(leads)) if leads else None,
                       "naming_margin_median": float(np.median(finite)) if len(finite) else None}
