"""Training and validation patches with their ground-truth maps, cut from annotated images."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vcorner.config import GroundTruthConfig, SamplingConfig
from vcorner.geometry.frames import Frames, record_frames
from vcorner.geometry.groundtruth import patch_targets, vertebra_contours
from vcorner.geometry.patches import build_pyramid, extract_patches, patch_affines, sample_poses
from vcorner.geometry.sequence import checked_annotation
from vcorner.io.annotations import read_annotations
from vcorner.io.images import read_image
from vcorner.io.records import ImageRecord, InputError

log = logging.getLogger(__name__)


@dataclass
class AnnotatedImage:
    """One decoded training image with everything needed to cut patches from it."""

    record: ImageRecord
    pyramid: list[np.ndarray]
    frames: Frames
    contours: list[tuple[np.ndarray, np.ndarray]]


def load_dataset(root: Path, gt: GroundTruthConfig) -> tuple[list[ImageRecord], list[AnnotatedImage]]:
    """Read ``root/annotations.json`` and decode every usable image.

    Every record first passes the centre checks of :func:`vcorner.geometry.sequence.checked_annotation`
    (cranial first, bad centres left out). Images that cannot be used for training (missing file, fewer than
    two vertebrae, a vertebra without corners) are skipped with a warning naming the image; an empty result
    raises.

    Returns:
        All annotation records (for the prior) and the decoded usable images.
    """
    root = Path(root)
    records, images = [], []
    for listed in read_annotations(root / "annotations.json"):
        try:
            record = checked_annotation(listed)  # cranial first, bad centres left out (for the prior too)
        except InputError as err:
            log.warning("skipping %s: %s", listed.file, err)
            continue
        records.append(record)
        try:
            if len(record.vertebrae) < 2 or any(v.corners is None for v in record.vertebrae):
                raise InputError("needs two or more vertebrae, all with corners")
            pixels = read_image(root / record.file).pixels
            frames = record_frames(record)
            images.append(AnnotatedImage(record, build_pyramid(pixels), frames,
                                         vertebra_contours(record, frames, gt)))
        except InputError as err:
            log.warning("skipping %s: %s", record.file, err)
    if not images:
        raise InputError(f"{root}: no usable annotated image for training")
    return records, images


def split_images(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation split of image indices (at least one of each when n >= 2)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(max(int(round(n * val_fraction)), 1 if n >= 2 else 0), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def cut_patches(
    image: AnnotatedImage, index: int, poses: np.ndarray, sampling: SamplingConfig, gt: GroundTruthConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Patches (K, N, N) and targets (K, N, N) of vertebra ``index`` for ``poses``; invalid ones dropped."""
    affines = patch_affines(image.frames, index, poses, sampling)
    targets, valid = patch_targets(image.contours, index, affines, sampling.patch_size, gt)
    patches = extract_patches(image.pyramid, affines[valid], sampling.patch_size)
    return patches, targets[valid]


def epoch_patches(
    images: Sequence[AnnotatedImage], per_vertebra: int, sampling: SamplingConfig, gt: GroundTruthConfig,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray]:
    """All patches of one pass: ``per_vertebra`` poses per vertebra (jittered when ``rng`` is given).

    Without ``rng`` (validation) the poses are an evenly spaced, fixed subset of the inference grid.

    Returns:
        patches (M, N, N) float32 and targets (M, N, N) float32.
    """
    grid = sample_poses(sampling)
    fixed = np.linspace(0, len(grid) - 1, min(per_vertebra, len(grid))).round().astype(int)
    xs, ys = [], []
    for image in images:
        for v in range(len(image.frames)):
            if rng is None:
                poses = grid[fixed]
            else:
                poses = sample_poses(sampling, rng)[rng.integers(0, len(grid), per_vertebra)]
            x, y = cut_patches(image, v, poses, sampling, gt)
            xs.append(x)
            ys.append(y)
    n = sampling.patch_size
    return (np.concatenate(xs) if xs else np.zeros((0, n, n), np.float32),
            np.concatenate(ys) if ys else np.zeros((0, n, n), np.float32))


def batches(x: np.ndarray, y: np.ndarray, size: int, rng: np.random.Generator | None) -> Iterator[
        tuple[np.ndarray, np.ndarray]]:
    """Mini-batches of (B, 1, N, N) arrays, shuffled when ``rng`` is given."""
    order = rng.permutation(len(x)) if rng is not None else np.arange(len(x))
    for start in range(0, len(x), size):
        take = order[start:start + size]
        yield x[take, None], y[take, None]
