"""Render phantom lateral C-spine radiographs and write a dataset (images, annotations, centres).

Output of :func:`synthesize_dataset` in OUT: ``phantom_00000.png`` ... (PNG 8/16-bit, TIFF 16-bit,
JPEG, DICOM MONOCHROME1/2), ``annotations.json``, ``centers.csv`` (with ``pixel_spacing_mm``) and
``phantoms.json`` (per-image format, hard cases and features, for stratified evaluation).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from vcorner.io.annotations import write_annotations
from vcorner.io.atomic import write_text_atomic
from vcorner.io.centers import write_centers
from vcorner.io.records import ImageRecord, InputError
from vcorner.phantoms import degrade
from vcorner.phantoms.anatomy import ANNOTATED, Spine
from vcorner.phantoms.annotate import annotate, exact_record
from vcorner.phantoms.elements import Part, clutter, hardware, vertebral_bodies
from vcorner.phantoms.files import write_image
from vcorner.phantoms.frontal import write_frontal
from vcorner.phantoms.holdout import write_holdout
from vcorner.phantoms.pathology import PATHOLOGIES, sample_spine_with
from vcorner.phantoms.render import Placement, compose, rasterize, trabecular_texture
from vcorner.phantoms.scene import collimator_rectangle, free_corners, sample_placement
from vcorner.phantoms.softtissue import sample_soft_tissue, soft_tissue_map
from vcorner.phantoms.tall import write_tall
from vcorner.phantoms.varied import write_varied

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("png8", "dcm_mono1", "png16", "jpeg", "tiff16", "png8", "dcm_mono2", "png16",
                            "png8", "jpeg")
"""Output formats, cycled over the image index (mostly PNG, some TIFF, JPEG and DICOM)."""
SUFFIX = {"png8": ".png", "png16": ".png", "tiff16": ".tif", "jpeg": ".jpg", "dcm_mono1": ".dcm",
          "dcm_mono2": ".dcm"}
HARD_CASES: tuple[str, ...] = ("metal", "osteoporotic", "severe_noise")
HARD_EVERY = 4
"""Image ``i`` of a dataset is a hard case when ``i % HARD_EVERY == 1``: a quarter of the images."""


def schedule(index: int) -> tuple[str, bool]:
    """Output format and whether image ``index`` of a dataset is a hard case."""
    return FORMATS[index % len(FORMATS)], index % HARD_EVERY == 1


def _hard_cases(rng: np.random.Generator, hard: bool | None) -> tuple[str, ...]:
    if hard is None:
        hard = bool(rng.random() < 1.0 / HARD_EVERY)
    if not hard:
        return ()
    chosen = rng.choice(len(HARD_CASES), size=1 + int(rng.random() < 0.3), replace=False)
    return tuple(HARD_CASES[i] for i in sorted(chosen))


def _scene_parts(spine: Spine, rng: np.random.Generator, osteoporotic: bool, metal: bool) -> tuple[list[Part], dict]:
    """All attenuating structures of one image, and a description of the bone and hardware."""
    bone = rng.uniform(0.45, 0.7) * (rng.uniform(0.35, 0.55) if osteoporotic else 1.0)
    rim = rng.uniform(0.25, 0.5) * (0.6 if osteoporotic else 1.0)
    parts = vertebral_bodies(spine, bone, rim, rng.uniform(0.5, 1.0))
    factor = bone / 0.55
    parts += [Part(p.polygon, p.density * factor, p.rim * factor, p.rim_mm) for p in clutter(spine, rng)]
    info: dict[str, Any] = {"bone_density": round(bone, 3)}
    if metal:
        metal_parts, info["hardware"] = hardware(spine, rng)
        parts += metal_parts
    return parts, info


def _markers(attenuation: np.ndarray, placement: Placement, body_px: np.ndarray, rng: np.random.Generator,
             occupied: list[tuple[int, int, int, int]]) -> list[str]:
    """Lead letter and ruler burned into the attenuation map (in place); returns what was added.

    Their boxes are appended to ``occupied`` so that later items avoid them.
    """
    added = []
    size = int(rng.uniform(7.0, 12.0) / placement.spacing)
    box = (int(size * 1.3), int(size * 1.4))
    spots = free_corners(placement, body_px, box, rng.uniform(0.02, 0.08) * placement.shape[1], occupied)
    if spots and rng.random() < 0.75:
        letter = "R" if rng.random() < 0.5 else "L"
        x, y = spots[int(rng.integers(len(spots)))]
        degrade.lead_marker(attenuation, (x, y), size, letter)
        occupied.append((x, y, x + box[0], y + box[1]))
        added.append(f"lead {letter}")
    if rng.random() < 0.3:
        length = int(rng.uniform(40.0, 80.0) / placement.spacing)
        width = int(4.0 / placement.spacing)
        spots = free_corners(placement, body_px, (width, length), 0.02 * placement.shape[1], occupied)
        if spots:
            x, y = spots[0]
            degrade.ruler(attenuation, (x, y), length, placement.spacing, vertical=True)
            occupied.append((x, y, x + width, y + length))
            added.append("ruler")
    return added


def _finish(image: np.ndarray, placement: Placement, body_px: np.ndarray, rng: np.random.Generator,
            occupied: list[tuple[int, int, int, int]]) -> list[str]:
    """Collimation and burned-in text on the display image (in place); returns what was added."""
    added = []
    keep = collimator_rectangle(placement, body_px, rng)
    if keep is not None:
        white = bool(rng.random() < 0.6)
        image[:] = degrade.collimate(image, keep, white=white, penumbra_px=rng.uniform(0.5, 2.0) / placement.spacing,
                                     rng=rng)
        added.append("collimation " + ("white" if white else "black"))
    text, patch = degrade.text_patch(rng, int(rng.uniform(3.0, 5.0) / placement.spacing))
    spots = free_corners(placement, body_px, patch.shape[::-1], 0.03 * placement.shape[1], occupied)
    if spots and rng.random() < 0.5:
        degrade.burn_text(image, patch, spots[-1], white=bool(rng.random() < 0.8))
        added.append("text " + text)
    return added


def _quantize(image: np.ndarray, fmt: str) -> np.ndarray:
    """Display values in [0, 1] as the stored integers of ``fmt`` (12-bit values for DICOM)."""
    levels = {"png8": 255, "jpeg": 255, "png16": 65535, "tiff16": 65535}.get(fmt, 4095)
    values = np.rint(np.clip(image, 0.0, 1.0) * levels)
    return values.astype(np.uint8 if levels == 255 else np.uint16)


def render_phantom(rng: np.random.Generator, *, fmt: str | None = None, hard: bool | None = None,
                   context: bool = False, pathology: str = "rare") -> tuple[np.ndarray, ImageRecord, dict[str, Any]]:
    """Render one lateral C-spine phantom with its annotation.

    Args:
        rng: The only source of randomness (same state, same image).
        fmt: One of ``SUFFIX`` (None: random among ``FORMATS``).
        hard: Force a hard case (True), none (False) or draw one with probability 1/4 (None).
        context: also annotate C2 and T1 where their centres lie inside the image (the centre detector's
            anchors, :data:`CONTEXT_LEVELS`); their annotator noise comes from a child of ``rng``, so the
            pixels and the C3-C7 annotations are those of the same ``rng`` without it.
        pathology: ``rare`` (:func:`vcorner.phantoms.anatomy.sample_spine`) or ``clinical``
            (:mod:`vcorner.phantoms.pathology`: fractures of every grade and shape, slips of 1-8 mm, ...).

    Returns:
        ``pixels`` (H, W) uint8 or uint16 (DICOM formats: 12-bit values in uint16); the record (``file``
        empty, C3-C7 cranial first, ``pixel_spacing_mm`` set); metadata with the format, hard cases,
        features and the noise-free ``truth`` per vertebra (outline, corners, centroid in pixels).
    """
    fmt = fmt or str(FORMATS[int(rng.integers(len(FORMATS)))])
    cases = _hard_cases(rng, hard)
    osteoporotic = "osteoporotic" in cases
    spine = sample_spine_with(pathology, rng, osteoporotic=osteoporotic)
    placement, cropped = sample_placement(spine, float(rng.uniform(0.1, 0.2)), rng)
    soft = sample_soft_tissue(spine, rng)
    acq = degrade.sample_acquisition(rng, severe_noise="severe_noise" in cases, low_contrast=osteoporotic)
    parts, info = _scene_parts(spine, rng, osteoporotic, "metal" in cases)
    layers = rasterize(parts, placement)
    attenuation = compose(layers, soft_tissue_map(spine, soft, placement, rng),
                          trabecular_texture(placement.shape, placement.spacing, rng.uniform(0.06, 0.18), rng))
    del layers
    body_px = np.vstack([placement.to_px(spine.body(name).outline(90)) for name in ANNOTATED])
    occupied: list[tuple[int, int, int, int]] = []
    extras = _markers(attenuation, placement, body_px, rng, occupied)
    image = degrade.process(degrade.expose(attenuation, acq, placement.spacing, rng), acq, placement.spacing)
    extras += _finish(image, placement, body_px, rng, occupied)
    annotated = [annotate(spine.body(name), placement, rng) for name in ANNOTATED]
    if context:
        annotated = _with_context(annotated, spine, placement, rng.spawn(1)[0])
    record = ImageRecord("", tuple(v for v, _ in annotated), placement.spacing)
    metadata = {
        "format": fmt, "hard_cases": list(cases), "shape": list(placement.shape),
        "pixel_spacing_mm": round(placement.spacing, 6), "rotation_deg": round(float(np.rad2deg(placement.angle)), 2),
        "curve": spine.kind, "fracture": spine.fracture, "listhesis": spine.listhesis, "cropped": cropped,
        "shoulders_above_c7": bool(soft.shoulder_y[0] < spine.body("C7").center[1]), "extras": extras,
        "photons": round(acq.photons, 1), "contrast": round(acq.contrast, 3), **info,
        "truth": {v.name: t for v, t in annotated},
    }
    if pathology != "rare":
        metadata["pathology"] = {"kind": pathology, "fractures": [list(f) for f in spine.fractures],
                                 "slips": [list(s) for s in spine.slips], "fused": list(spine.fused)}
    return _quantize(image, fmt), record, metadata


TRUTH_FILE = "truth.json"
"""The noise-free twin of ``annotations.json`` that ``vcorner synth`` writes beside it: the same films and vertebrae
with the true corner apexes (no annotator's click spread, :mod:`vcorner.phantoms.annotate`), for measuring
against the anatomy itself (README.md, "Phantoms")."""


CONTEXT_LEVELS: tuple[str, str] = ("C2", "T1")
"""Levels that ``vcorner synth --style context`` also annotates: the structures that tell C3 and C7 from their
neighbours, for training the centre detector's naming (README.md, "Automatic centres")."""


def _with_context(annotated: list, spine: Spine, placement: Placement, rng: np.random.Generator) -> list:
    """``annotated`` (C3-C7) with C2 before and T1 after, each only where its centre lies inside the image."""
    height, width = placement.shape
    extra = {name: annotate(spine.body(name), placement, rng) for name in CONTEXT_LEVELS}
    inside = {name: bool(0 <= a[0].center[0] <= width - 1 and 0 <= a[0].center[1] <= height - 1)
              for name, a in extra.items()}
    return ([extra["C2"]] if inside["C2"] else []) + annotated + ([extra["T1"]] if inside["T1"] else [])


def _write_one(out: Path, index: int, seq: np.random.SeedSequence, context: bool = False,
               pathology: str = "rare") -> tuple[ImageRecord, dict[str, Any]]:
    """Render image ``index`` from its seed sequence and write it into ``out`` (``context``: C2 and T1 too;
    ``pathology``: as :func:`render_phantom`)."""
    rng = np.random.default_rng(seq)
    fmt, hard = schedule(index)
    pixels, record, metadata = render_phantom(rng, fmt=fmt, hard=hard, context=context, pathology=pathology)
    name = f"phantom_{index:05d}{SUFFIX[fmt]}"
    photometric = "MONOCHROME1" if fmt == "dcm_mono1" else "MONOCHROME2"
    write_image(out / name, pixels, pixel_spacing_mm=record.pixel_spacing_mm if fmt.startswith("dcm") else None,
                photometric=photometric, bits_stored=12 if fmt.startswith("dcm") else None,
                jpeg_quality=int(rng.integers(80, 96)), uid_entropy=[rng.bytes(16).hex()])
    exact = exact_record(name, metadata.pop("truth"), record.pixel_spacing_mm)
    return ImageRecord(name, record.vertebrae, record.pixel_spacing_mm), {"file": name, **metadata, "exact": exact}


VARIED_DRAWN = 0.5
"""Share of a ``varied`` dataset's films drawn by :mod:`vcorner.phantoms.varied`; the others are the training
renderer's (with C2 and T1), so that the world widens without losing the one the models knew."""


def _write_varied_or_train(out: Path, index: int, seq: np.random.SeedSequence) -> tuple[ImageRecord, dict[str, Any]]:
    """Film ``index`` of a ``varied`` dataset: domain-randomized (:data:`VARIED_DRAWN` of them) or the training
    renderer's with C2 and T1, decided by the film's own seed."""
    choice, own = seq.spawn(2)
    if np.random.default_rng(choice).random() < VARIED_DRAWN:
        return write_varied(out, index, own)
    return _write_one(out, index, own, context=True)


STYLES: dict[str, Callable[[Path, int, np.random.SeedSequence], tuple[ImageRecord, dict[str, Any]]]] = {
    "train": _write_one, "context": partial(_write_one, context=True), "holdout": write_holdout, "tall": write_tall,
    "varied": _write_varied_or_train, "ap": write_frontal}
"""Renderers by style name (``vcorner synth --style``)."""


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)


def synthesize_dataset(out: Path, n_images: int, seed: int, *, workers: int | None = None,
                       progress: Callable[[int], None] | None = None, style: str = "train",
                       pathology: str = "rare") -> list[ImageRecord]:
    """Write ``n_images`` phantoms with ``annotations.json``, its noise-free twin :data:`TRUTH_FILE`,
    ``centers.csv`` and ``phantoms.json`` into ``out``.

    The bytes written depend only on ``seed`` (per-image seeds from ``SeedSequence(seed).spawn``), not
    on ``workers``.

    Args:
        out: Output directory (created if missing).
        n_images: Number of images, >= 1.
        seed: Dataset seed.
        workers: Processes (default ``min(2, os.cpu_count())``); 1 renders in this process.
        progress: Called with 1 after each finished image (an increment, as rich's ``advance``).
        style: ``train`` (this module's renderer, the world the models learn), ``context`` (the same films
            with C2 and T1 annotated too, for the centre detector), ``holdout``
            (:mod:`vcorner.phantoms.holdout`: for validation only, refused by training and tuning) or ``tall``
            (:mod:`vcorner.phantoms.tall`: lateral thoracolumbar films, T1-L5, for a many-level detector) or ``ap``
            (:mod:`vcorner.phantoms.frontal`: frontal thoracolumbar films, T1-L5: another view and region).
        pathology: ``rare`` (the default; every recorded figure before issue #29) or ``clinical``
            (:mod:`vcorner.phantoms.pathology`); only the ``train`` and ``context`` styles draw it.

    Returns:
        The records in image order, as written to ``annotations.json``.

    Raises:
        InputError: ``out`` exists and is not a directory, ``n_images`` < 1, or an unknown ``style`` or
            ``pathology`` (or ``clinical`` with a style that does not draw it).
        OSError: ``out`` cannot be written.
    """
    out = Path(out)
    if n_images < 1:
        raise InputError(f"n_images must be at least 1, got {n_images}")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    if style not in STYLES:
        raise InputError(f"--style must be one of {', '.join(STYLES)}, got {style!r}")
    if pathology not in PATHOLOGIES:
        raise InputError(f"--pathology must be one of {', '.join(PATHOLOGIES)}, got {pathology!r}")
    write_one = STYLES[style]
    if pathology != "rare":
        if style not in ("train", "context"):
            raise InputError(f"--pathology {pathology} is drawn by the train and context styles, not {style!r}")
        write_one = partial(write_one, pathology=pathology)
    out.mkdir(parents=True, exist_ok=True)
    seqs = np.random.SeedSequence(seed).spawn(n_images)
    workers = max(1, min(workers or min(2, os.cpu_count() or 1), n_images))
    results: list[tuple[ImageRecord, dict[str, Any]] | None] = [None] * n_images
    if workers == 1:
        for i, seq in enumerate(seqs):
            results[i] = write_one(out, i, seq)
            if progress:
                progress(1)
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
            futures = {pool.submit(write_one, out, i, seq): i for i, seq in enumerate(seqs)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if progress:
                    progress(1)
    records = [r for r, _ in results]  # type: ignore[misc]
    exact = [m.pop("exact", r) for r, m in results]  # type: ignore[misc]  # holdout, tall: corners already exact
    write_annotations(out / "annotations.json", records)
    write_annotations(out / TRUTH_FILE, exact)
    write_centers(out / "centers.csv", records)
    document = {"seed": seed, **({"style": style} if style != "train" else {}),
                **({"pathology": pathology} if pathology != "rare" else {}),
                "images": [m for _, m in results]}  # type: ignore[misc]
    write_text_atomic(out / "phantoms.json", json.dumps(document, indent=1) + "\n")
    logger.info("wrote %d phantoms to %s", n_images, out)
    return records
