"""Training and validation patches with their ground-truth maps, cut from annotated films read lazily.

Memory: no film's pixels are held between passes. :func:`load_dataset` decodes each film once to check it and
keeps only its record, its vertebra frames and ground-truth contours (some 8 kB a vertebra). A pass
(:class:`PatchPass`) decodes the films again, :data:`CHUNK_FILMS` at a time, holding one decoded film (its
float32 pyramid, 4/3 of its pixels x 4 bytes) while its patches are cut, and one chunk of patches and targets
(``CHUNK_FILMS`` x vertebrae x patches per vertebra x 2 x N x N x 4 bytes: 86 MB for 16 films of 7 vertebrae at
24 patches of 64 x 64). So the peak is the model + one film + two chunks of patches (the chunk and the
rest carried into the next one), whatever the number of films; only the poses of a pass
(vertebrae x patches x 4 floats) and the records grow with it. Validation is a pass too (fixed poses), so its
patches are bounded the same way. The price: every film is decoded again each epoch (and each validation), a
few percent of an epoch on a CPU (a 3000 x 2500 16-bit PNG decodes in about 0.1 s; its 170 patches train in
seconds).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
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


CHUNK_FILMS = 16
"""Films decoded and cut per chunk of a pass: their patches are shuffled together, then batched."""


@dataclass
class AnnotatedImage:
    """One usable training film: everything needed to cut patches from it but its pixels, which
    :meth:`pyramid` decodes anew (the caller holds them only while it cuts)."""

    record: ImageRecord
    path: Path
    frames: Frames
    contours: list[tuple[np.ndarray, np.ndarray]]

    def pyramid(self) -> list[np.ndarray]:
        """The film's float32 Gaussian pyramid (:func:`vcorner.geometry.patches.build_pyramid`), decoded now.

        Raises:
            InputError: the file can no longer be read.
        """
        return build_pyramid(read_image(self.path).pixels)


def load_dataset(root: Path, gt: GroundTruthConfig) -> tuple[list[ImageRecord], list[AnnotatedImage]]:
    """Read ``root/annotations.json`` and check that every usable image decodes (its pixels are not kept).

    Every record first passes the centre checks of :func:`vcorner.geometry.sequence.checked_annotation`
    (cranial first, bad centres left out). Images that cannot be used for training (missing file, fewer than
    two vertebrae, a vertebra without corners) are skipped with a warning naming the image; an empty result
    raises.

    Returns:
        All annotation records (for the prior) and the usable images.
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
            read_image(root / record.file)  # decodes, or says why not; dropped at once
            frames = record_frames(record)
            images.append(AnnotatedImage(record, root / record.file, frames, vertebra_contours(record, frames, gt)))
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


def cut_patches(image: AnnotatedImage, pyramid: list[np.ndarray], index: int, poses: np.ndarray,
                sampling: SamplingConfig, gt: GroundTruthConfig) -> tuple[np.ndarray, np.ndarray]:
    """Patches (K, N, N) and targets (K, N, N) of vertebra ``index`` for ``poses`` from ``image``'s decoded
    ``pyramid``; invalid ones dropped."""
    affines = patch_affines(image.frames, index, poses, sampling)
    targets, valid = patch_targets(image.contours, index, affines, sampling.patch_size, gt)
    patches = extract_patches(pyramid, affines[valid], sampling.patch_size)
    return patches, targets[valid]


@dataclass
class PatchPass:
    """One pass of patches over films, cut :data:`CHUNK_FILMS` films at a time (see the module's memory bound).

    Iterating yields chunks ``(x, y)``: patches and targets, (M, 1, N, N) float32 each, of ``chunk_films`` films.
    With ``rng`` (training) every vertebra gets ``per_vertebra`` jittered poses, drawn for the whole pass first in
    film order (the draws the pass made when it cut every patch at once); the films are then visited in an order
    drawn from ``rng`` and each chunk is shuffled. Without ``rng`` (validation) the poses are an evenly spaced,
    fixed subset of the inference grid and the films come in their order, unshuffled: the same patches on every
    iteration.
    """

    images: Sequence[AnnotatedImage]
    per_vertebra: int
    sampling: SamplingConfig
    gt: GroundTruthConfig
    rng: np.random.Generator | None
    chunk_films: int = CHUNK_FILMS

    def __len__(self) -> int:
        """Patches planned (those whose target falls outside the patch are dropped when cut)."""
        return sum(len(im.frames) for im in self.images) * self.poses_per_vertebra

    @property
    def poses_per_vertebra(self) -> int:
        return self.per_vertebra if self.rng is not None else min(self.per_vertebra, len(sample_poses(self.sampling)))

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        grid = sample_poses(self.sampling)
        fixed = grid[np.linspace(0, len(grid) - 1, self.poses_per_vertebra).round().astype(int)]
        drawn = None if self.rng is None else [  # (V, P, 4) per film
            np.stack([sample_poses(self.sampling, self.rng)[self.rng.integers(0, len(grid), self.per_vertebra)]
                      for _ in range(len(image.frames))]) for image in self.images]
        order = np.arange(len(self.images)) if self.rng is None else self.rng.permutation(len(self.images))
        n = self.sampling.patch_size
        for start in range(0, len(order), self.chunk_films):
            xs, ys = [np.zeros((0, n, n), np.float32)], [np.zeros((0, n, n), np.float32)]
            for i in order[start:start + self.chunk_films]:
                image = self.images[i]
                pyramid = image.pyramid()
                for v in range(len(image.frames)):
                    x, y = cut_patches(image, pyramid, v, fixed if drawn is None else drawn[i][v], self.sampling,
                                       self.gt)
                    xs.append(x)
                    ys.append(y)
                del pyramid
            x, y = np.concatenate(xs)[:, None], np.concatenate(ys)[:, None]
            del xs, ys
            if self.rng is not None:
                shuffle = self.rng.permutation(len(x))
                x, y = x[shuffle], y[shuffle]
            yield x, y


def epoch_patches(
    images: Sequence[AnnotatedImage], per_vertebra: int, sampling: SamplingConfig, gt: GroundTruthConfig,
    rng: np.random.Generator | None, chunk_films: int = CHUNK_FILMS,
) -> PatchPass:
    """One pass: ``per_vertebra`` poses per vertebra (jittered when ``rng`` is given), cut chunk by chunk as it
    is iterated (:class:`PatchPass`)."""
    return PatchPass(images, per_vertebra, sampling, gt, rng, chunk_films)


def batches(chunks: Iterable[tuple[np.ndarray, ...]], size: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Mini-batches of ``size`` (the last one may be smaller) from a stream of chunks, each a tuple of arrays
    sharing their first axis; the rest of a chunk is carried into the next one, in order."""
    rest: tuple[np.ndarray, ...] | None = None
    for chunk in chunks:
        if rest is not None:
            chunk = tuple(np.concatenate([r, c]) for r, c in zip(rest, chunk, strict=True))
        whole = len(chunk[0]) // size * size
        for start in range(0, whole, size):
            yield tuple(a[start:start + size] for a in chunk)
        rest = tuple(a[whole:] for a in chunk)
    if rest is not None and len(rest[0]):
        yield rest
