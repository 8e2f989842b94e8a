"""Patch-level Bhattacharyya coefficients (the paper's Fig. 5a): model maps against ground-truth maps."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vcorner.geometry.frames import record_frames
from vcorner.geometry.groundtruth import patch_targets, vertebra_contours
from vcorner.geometry.patches import build_pyramid, extract_patches, patch_affines, sample_poses
from vcorner.io.images import read_image
from vcorner.io.paths import safe_path
from vcorner.io.records import ImageRecord, InputError
from vcorner.models.card import ModelCard
from vcorner.runtime.base import Runner

log = logging.getLogger(__name__)


def bhattacharyya(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(K,) ``sum sqrt(y P)`` of (K, N, N) maps that each sum to 1."""
    return np.sqrt(np.clip(y, 0, None) * np.clip(p, 0, None)).sum(axis=(1, 2))


def image_patch_bc(root: Path, record: ImageRecord, runner: Runner, card: ModelCard) -> np.ndarray:
    """BC of every patch the model cuts from one annotated image (patches without corner mass skipped)."""
    pixels = read_image(safe_path(Path(root), record.file)).pixels
    frames = record_frames(record)
    contours = vertebra_contours(record, frames, card.ground_truth)
    pyramid, n = build_pyramid(pixels), card.sampling.patch_size
    scores = []
    for index in range(len(frames)):
        affines = patch_affines(frames, index, sample_poses(card.sampling), card.sampling)
        targets, valid = patch_targets(contours, index, affines, n, card.ground_truth)
        if valid.any():
            maps = runner.infer(extract_patches(pyramid, affines[valid], n)[:, None])[:, 0]
            scores.append(bhattacharyya(targets[valid], maps))
    return np.concatenate(scores) if scores else np.zeros(0)


def dataset_patch_bc(root: Path, records: Sequence[ImageRecord], runner: Runner, card: ModelCard) -> np.ndarray:
    """BC of every patch of every usable annotated image; unusable images are skipped with a warning."""
    scores = []
    for record in records:
        try:
            if any(v.corners is None for v in record.vertebrae):
                raise InputError("a vertebra has no corners")
            scores.append(image_patch_bc(root, record, runner, card))
        except InputError as err:
            log.warning("skipping %s: %s", record.file, err)
    return np.concatenate(scores) if scores else np.zeros(0)


def summarize_bc(scores: np.ndarray) -> dict[str, float]:
    """Mean, median, 5th percentile and minimum of patch BCs, and how many."""
    if not len(scores):
        return {"patches": 0, "mean": float("nan"), "median": float("nan"), "p5": float("nan"), "min": float("nan")}
    return {"patches": int(len(scores)), "mean": float(scores.mean()), "median": float(np.median(scores)),
            "p5": float(np.percentile(scores, 5)), "min": float(scores.min())}


def bc_histogram(scores: np.ndarray, path: Path) -> None:
    """Histogram of patch BCs (like the paper's Fig. 5a)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.hist(scores, bins=50, color="tab:blue")
    ax.set(xlabel="Bhattacharyya coefficient", ylabel="patches",
           title=f"{len(scores)} patches, mean {scores.mean():.4f}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
