"""The first per-image stage: decode an image and cut every patch of every vertebra (docs/design.md section 2).

``prepare`` -> a runner fills the job's maps (:meth:`vcorner.runtime.base.Runner.infer_all`, or the batch's
cross-image batches) -> :func:`vcorner.stages.finish.finish`. Batch, Ray, tuning, benchmarks and INT8
calibration all cut patches here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from vcorner.geometry.frames import Frames, frames_from_centers
from vcorner.geometry.patches import build_pyramid, extract_patches, patch_affines, sample_poses
from vcorner.geometry.sequence import spine_levels
from vcorner.geometry.sides import film_side
from vcorner.geometry.views import View, mirror_frames, parse_view
from vcorner.io.images import read_image, read_image_bytes
from vcorner.io.records import ImageRecord, InputError
from vcorner.models.card import ModelCard
from vcorner.stages.detect import DetectedCentres
from vcorner.stages.plan import PlannedImage

VIEW_CONTRADICTED = "view_contradicted"
"""The image flag of a film whose anatomy contradicts the view its corners are found in (README.md, "Flags")."""

Detect = Callable[[list[np.ndarray], tuple[int, int], str, "float | None"], DetectedCentres]
"""Finds an image's centres from its pyramid, shape, name and pixel spacing (the batch binds
:func:`vcorner.stages.detect.detect_centres` to a detector's card and runner)."""


@dataclass
class ImageJob:
    """One image between stages.

    Attributes:
        name: image path relative to DIR.
        shape: (H, W) of the image, pixels.
        frames: vertebra frames from the clicked centres.
        names: vertebra names, cranial first.
        affines: (P, 2, 3) patch-to-image affines of all its patches.
        owner: (P,) index of the vertebra each patch was cut for.
        patches: (P, 1, N, N) float32 network inputs.
        maps: (P, 1, N, N) float32 network outputs, filled by the inference stage.
        pixels: the decoded image, kept only when overlays are requested.
    """

    name: str
    shape: tuple[int, int]
    frames: Frames
    names: list[str]
    affines: np.ndarray
    owner: np.ndarray
    patches: np.ndarray
    maps: np.ndarray = field(default=None)  # type: ignore[assignment]
    pixels: np.ndarray | None = None
    filled: int = 0
    spacing_mm: float | None = None
    """Pixel spacing from the centres file, else the DICOM header; None when unknown."""
    detected: DetectedCentres | None = None
    """The detector's centres, when the image had none listed (None: clicked centres)."""
    image_flags: tuple[str, ...] = ()
    """The image's flags: the detector's, found now (``detected.flags``) or kept in an earlier run's journal
    (``record.flags``), and ``view_contradicted``."""
    side: float = float("nan")
    """The film's side contrast through its view (:func:`vcorner.geometry.sides.film_side`) over its vertebrae that
    are not guesses (``detected.guessed``, which the corner model may still drop): negative when its anatomy puts the
    anterior side on the other side."""


def check_centers(centers: np.ndarray, shape: tuple[int, int], names: list[str]) -> None:
    """InputError naming the vertebra if a centre is not finite.

    A centre outside the image is allowed: it still gives its neighbours their frames, and its own corners
    that fall outside the image are flagged ``outside`` (:func:`flag_outside`).
    """
    for name, (x, y) in zip(names, centers, strict=True):
        if not (np.isfinite(x) and np.isfinite(y)):
            raise InputError(f"vertebra {name}: centre is NaN or infinite")


def prepare(item: PlannedImage, card: ModelCard, keep_pixels: bool = False,
            max_pixels: int | None = None, detect: Detect | None = None, encoded: bytes | None = None) -> ImageJob:
    """Decode one image (its file, or the file's ``encoded`` bytes when given), find its centres with ``detect``
    when none are listed, and cut every patch of every vertebra (the poses of the model's card) through the
    record's view: mirrored frames on a mirrored film, patches of changed sign on an inverted one
    (:mod:`vcorner.geometry.views`).

    Raises:
        InputError: unreadable image, bad centres, no centres listed and no detector, no vertebrae found (one
            line naming the problem).
    """
    limit = {} if max_pixels is None else {"max_pixels": max_pixels}
    image = read_image(item.path, **limit) if encoded is None else read_image_bytes(encoded, item.path, **limit)
    pyramid = build_pyramid(image.pixels)
    record, detected = item.record, None
    spacing = record.pixel_spacing_mm or image.pixel_spacing_mm
    if not record.vertebrae:
        if detect is None:
            raise InputError("no centres listed for this image")
        detected = detect(pyramid, image.pixels.shape, record.file, spacing)
        record = detected.record
    names = [v.name for v in record.vertebrae]
    centers = record.centers
    check_centers(centers, image.pixels.shape, names)
    frames, view = view_frames(record)
    sampling = card.sampling
    poses = sample_poses(sampling)
    affines = np.concatenate([patch_affines(frames, i, poses, sampling) for i in range(len(frames))])
    owner = np.repeat(np.arange(len(frames)), len(poses))
    patches = extract_patches(pyramid, affines, sampling.patch_size)[:, None]
    patches = -patches if view.inverted else patches
    flags = detected.flags if detected is not None else record.flags
    guessed = detected.guessed if detected is not None else frozenset()
    side = film_side(pyramid, frames.subset(np.array([n not in guessed for n in names])), view.inverted)
    checked = side_flags(flags, side, card.trust.side_check)
    if checked != flags:
        flags = checked
        detected = replace(detected, flags=flags) if detected is not None else None
    return ImageJob(record.file, image.pixels.shape, frames, names, affines, owner, patches,
                    np.empty_like(patches), image.pixels if keep_pixels else None, spacing_mm=spacing,
                    detected=detected, image_flags=flags, side=side)


def side_flags(flags: tuple[str, ...], side: float, side_check: bool) -> tuple[str, ...]:
    """``flags`` with :data:`VIEW_CONTRADICTED` added where the check applies (a card's ``trust.side_check``) and the
    film's side contrast ``side`` (:func:`vcorner.geometry.sides.film_side`) is negative."""
    if side_check and side < 0.0 and VIEW_CONTRADICTED not in flags:
        return (*flags, VIEW_CONTRADICTED)
    return flags


def record_side(pyramid: list[np.ndarray], record: ImageRecord) -> float:
    """The side contrast of a film (:func:`vcorner.geometry.sides.film_side`) through ``record``'s view, in the frames
    of its centres (the frames its patches are cut in; NaN without a vertebra)."""
    frames, view = view_frames(record)
    return film_side(pyramid, frames, view.inverted)


def view_frames(record: ImageRecord) -> tuple[Frames, View]:
    """The vertebra frames of ``record``'s centres as its patches are cut in (mirrored on a mirrored film), and its
    view (:mod:`vcorner.geometry.views`)."""
    view = parse_view(record.view)
    frames = frames_from_centers(record.centers, spine_levels([v.name for v in record.vertebrae]))
    return (mirror_frames(frames) if view.mirrored else frames), view
