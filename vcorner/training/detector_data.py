"""Views and target maps for training the centre detector, from the same ``annotations.json`` as the corners.

One view is the whole image letterboxed into S x S pixels (:mod:`vcorner.geometry.letterbox`), randomly turned,
zoomed and shifted; its target holds, per vertebra name, a Gaussian at that vertebra's centre normalized to
sum 1, or a flat map where the name is missing from the view (not annotated, cut off by the zoom).
Negative views (no spine: noise, gradients, blank, soft tissue only) have every map flat.

Memory: no film's pixels are held in memory between passes. :func:`load_detector_images` decodes each film once
and writes to a temporary folder on disk only the pyramid levels a view can sample (those at or above the level
of the letterbox step divided by the largest zoom: for a 3000 x 2500 film into 128 x 128, level 4, 1/256 of
its pixels); a pass (:func:`epoch_views`) reads them back :data:`CHUNK_FILMS` films at a time. Negative
soft-tissue views decode their film in full, one at a time. So the peak is the model + one decoded film + one
chunk of views and targets (``CHUNK_FILMS`` x (1 + names) x S x S x 4 bytes, 24 MB for 64 films of 5 names at
128), whatever the number of films; the disk holds the views' levels of every film.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vcorner.config import DetectionConfig
from vcorner.geometry.letterbox import (
    Size,
    augmented_affine,
    detector_input,
    grid_shape,
    letterbox_affine,
    pixel_step,
    to_grid,
)
from vcorner.geometry.patches import apply_affine, build_pyramid
from vcorner.geometry.sequence import checked_annotation, spine_levels, typical_spacing
from vcorner.geometry.views import VIEWS, parse_view, view_input
from vcorner.io.annotations import read_annotations
from vcorner.io.images import read_image
from vcorner.io.records import ImageRecord, InputError, anatomical_rank
from vcorner.training.appearance import slanted_cut, standardized, vary_appearance
from vcorner.training.detector_recipe import AugmentSpec

log = logging.getLogger(__name__)


CHUNK_FILMS = 64
"""Films whose views are cut per chunk of a pass: their views are shuffled together, then batched."""


@dataclass
class DetectorImage:
    """One training image: its file, its named centres (image pixels) and where the levels its views sample are
    kept on disk (its pixels are read back per pass, never held)."""

    record: ImageRecord
    path: Path
    shape: tuple[int, int]
    spacing_px: float
    """Typical distance between neighbouring centres, image pixels."""
    levels: Path
    """``.npz`` of the pyramid levels from ``first_level`` up, written by :func:`load_detector_images`."""
    first_level: int
    keep: object = field(default=None, repr=False)
    """The temporary folder holding ``levels`` (removed once no image refers to it)."""

    def view_pyramid(self) -> list[np.ndarray | None]:
        """The pyramid as a view samples it: the levels below ``first_level`` are None (never sampled)."""
        with np.load(self.levels) as stored:
            coarse = [stored[f"level{k}"] for k in range(len(stored.files))]
        return [None] * self.first_level + coarse

    def pyramid(self) -> list[np.ndarray]:
        """The whole pyramid, decoded now (soft-tissue negatives zoom in far beyond a view)."""
        return build_pyramid(read_image(self.path).pixels)


def channel_names(records: Sequence[ImageRecord]) -> tuple[str, ...]:
    """Every vertebra name of the annotations, cranial first: anatomical order when all names are anatomical
    labels, else the order of first appearance."""
    names: list[str] = []
    for record in records:
        names += [v.name for v in record.vertebrae if v.name not in names]
    ranks = [anatomical_rank(n) for n in names]
    if all(r is not None for r in ranks):
        names = [n for _, n in sorted(zip(ranks, names, strict=True))]
    return tuple(names)


def first_view_level(shape: tuple[int, int], size: Size, max_zoom: float, levels: int) -> int:
    """The finest pyramid level (of ``levels``) a view of ``size`` of an image of ``shape`` samples, at zooms up
    to ``max_zoom`` (the step of a view is the letterbox step over its zoom; turns and shifts keep it)."""
    step = pixel_step(letterbox_affine(shape, size)) / max(max_zoom, 1.0)
    return int(np.clip(np.floor(np.log2(max(step * (1 - 1e-9), 1.0))), 0, levels - 1))


def load_detector_images(root: Path, size: Size, max_zoom: float) -> list[DetectorImage]:
    """Check every annotated image of ``root/annotations.json`` usable for the detector (two or more checked
    centres; the others are skipped with a warning naming them) and keep on disk the pyramid levels that views of
    ``size`` at zooms up to ``max_zoom`` sample (see the module's memory bound).

    Raises:
        InputError: no usable image.
    """
    root = Path(root)
    keep = tempfile.TemporaryDirectory(prefix="vcorner-views-")
    images = []
    for listed in read_annotations(root / "annotations.json"):
        try:
            record = checked_annotation(listed)
            if len(record.vertebrae) < 2:
                raise InputError("needs two or more vertebrae")
            pixels = read_image(root / record.file).pixels
        except InputError as err:
            log.warning("skipping %s: %s", listed.file, err)
            continue
        levels = spine_levels([v.name for v in record.vertebrae])
        spacing = typical_spacing(record.centers, levels if levels is not None else
                                  np.arange(len(record.vertebrae), dtype=float))
        pyramid = build_pyramid(pixels)
        first = first_view_level(pixels.shape, size, max_zoom, len(pyramid))
        levels = Path(keep.name) / f"{len(images)}.npz"
        np.savez(levels, **{f"level{k}": a for k, a in enumerate(pyramid[first:])})
        images.append(DetectorImage(record, root / record.file, pixels.shape, spacing, levels, first, keep))
        del pixels, pyramid
    if not images:
        raise InputError(f"{root}: no usable annotated image for the detector")
    return images


def gaussian_map(size: Size, centre: np.ndarray, sd: float) -> np.ndarray:
    """(S, S) (or ``size`` = (h, w)) float32 Gaussian at ``centre`` (x, y grid pixels) with sd ``sd`` pixels,
    summing to 1; flat when its mass inside the grid vanishes."""
    rows, columns = grid_shape(size)
    gx = np.exp(-0.5 * ((np.arange(columns, dtype=np.float64) - centre[0]) / sd) ** 2)
    gy = np.exp(-0.5 * ((np.arange(rows, dtype=np.float64) - centre[1]) / sd) ** 2)
    grid = np.outer(gy, gx)
    total = grid.sum()
    return (grid / total).astype(np.float32) if total > 1e-6 else flat_map(size)


def flat_map(size: Size) -> np.ndarray:
    """(S, S) (or (h, w)) float32 uniform map: the target of a name missing from the view."""
    rows, columns = grid_shape(size)
    return np.full((rows, columns), 1.0 / (rows * columns), dtype=np.float32)


def view_targets(image: DetectorImage, affine: np.ndarray, names: Sequence[str], config: DetectionConfig,
                 margin: float = 0.5) -> np.ndarray:
    """(K, S, S) targets of one view: a Gaussian per name whose centre lies inside the view (``margin`` grid
    pixels in from its edge), flat maps for the rest (:func:`view_centres` gives those centres)."""
    size = config.input_shape
    step = pixel_step(affine)  # image pixels per grid pixel
    sd = max(config.sigma * image.spacing_px / step, config.min_sigma_px)
    where = {v.name: to_grid(affine, v.center) for v in image.record.vertebrae}
    out = np.empty((len(names), *size), dtype=np.float32)
    last = np.array(size[::-1]) - 1 - margin  # (x, y) of the last grid pixels kept
    for k, name in enumerate(names):
        centre = where.get(name)
        inside = centre is not None and np.all((centre >= margin) & (centre <= last))
        out[k] = gaussian_map(size, centre, sd) if inside else flat_map(size)
    return out


def view_centres(image: DetectorImage, affine: np.ndarray, names: Sequence[str], size: Size,
                 margin: float = 0.5) -> np.ndarray:
    """(K, 2) grid position of each name's centre in one view, NaN where the name is missing from it."""
    out = np.full((len(names), 2), np.nan)
    where = {v.name: to_grid(affine, v.center) for v in image.record.vertebrae}
    last = np.array(grid_shape(size)[::-1]) - 1 - margin
    for k, name in enumerate(names):
        centre = where.get(name)
        if centre is not None and np.all((centre >= margin) & (centre <= last)):
            out[k] = centre
    return out


NEGATIVE_KINDS = ("noise", "gradient", "blank", "soft tissue", "bars")


def negative_view(size: Size, rng: np.random.Generator, images: Sequence[DetectorImage],
                  bars: bool = True, kind: int | None = None) -> np.ndarray:
    """(1, S, S) (or (1, h, w)) standardized input without a spine: noise, a gradient, a blank field, soft tissue
    only (a magnified corner of a training image far from its centres), or with ``bars`` rows of bone-like bars (a
    hand or limb film); ``kind`` picks one of :data:`NEGATIVE_KINDS` (default: drawn)."""
    if kind is None:
        kind = int(rng.integers(0, 5 if bars else 4))
    shape = grid_shape(size)
    if kind == 0:
        pixels = rng.normal(0.5, rng.uniform(0.02, 0.3), shape)
    elif kind == 1:
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]] / max(shape)
        pixels = rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy + rng.normal(0, 0.02, shape)
    elif kind == 2:
        pixels = np.full(shape, rng.uniform(0, 1)) + rng.normal(0, 1e-3, shape)
    elif kind == 3:
        return _soft_tissue_view(size, rng, images)
    else:
        pixels = _bars(size, rng)
    pixels = cv2.GaussianBlur(pixels.astype(np.float32), (0, 0), float(rng.uniform(0.3, 3.0)))
    return ((pixels - pixels.mean()) / (pixels.std() + 1e-6)).astype(np.float32)[None]


def _bars(size: Size, rng: np.random.Generator) -> np.ndarray:
    """(S, S) (or (h, w)) rows of bright rounded bars on a dark field, like the bones of a hand or a limb."""
    high, wide = grid_shape(size)
    pixels = np.full((high, wide), rng.uniform(0.05, 0.3), dtype=np.float32)
    columns, rows = int(rng.integers(2, 6)), int(rng.integers(1, 4))
    for c in range(columns):
        for r in range(rows):
            centre = (int(wide * (c + 0.5) / columns + rng.normal(0, 2)),
                      int(high * (r + 0.5) / rows + rng.normal(0, 2)))
            axes = (int(wide / columns * rng.uniform(0.15, 0.35)), int(high / rows * rng.uniform(0.25, 0.45)))
            cv2.ellipse(pixels, centre, axes, float(rng.uniform(-15, 15)), 0, 360, float(rng.uniform(0.5, 0.9)), -1)
    return pixels + rng.normal(0, rng.uniform(0.005, 0.05), pixels.shape).astype(np.float32)


def _soft_tissue_view(size: Size, rng: np.random.Generator, images: Sequence[DetectorImage]) -> np.ndarray:
    image = images[int(rng.integers(0, len(images)))]
    height, width = image.shape
    step = image.spacing_px * rng.uniform(0.6, 1.2) / max(grid_shape(size))  # about one vertebra spacing wide
    for _ in range(20):
        centre = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        if np.min(np.linalg.norm(image.record.centers - centre, axis=1)) > 2.5 * image.spacing_px:
            break
    rows, columns = grid_shape(size)
    affine = np.array([[step, 0.0, centre[0] - step * ((columns - 1) / 2.0)],
                       [0.0, step, centre[1] - step * ((rows - 1) / 2.0)]])
    return detector_input(image.pyramid(), affine, size)[0]


Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) part of a film, image pixels."""


CROP_SMALLEST = 0.3
"""Smallest part of a film's height a cropped view shows (so views magnify up to 1 / 0.3 times more)."""


def view_zoom(augment: AugmentSpec) -> float:
    """The largest magnification of a view over the plain letterbox, cropped views included."""
    return max(augment.zoom) / (CROP_SMALLEST if augment.crop > 0 else 1.0)


def crop_box(image: DetectorImage, rng: np.random.Generator, tries: int = 8) -> Box | None:
    """A random part of the film, 30-85% of its height and 60-100% of its width, holding two or more of its
    centres (a film that starts and ends anywhere along the spine); None when no try holds two."""
    height, width = image.shape
    for _ in range(tries):
        fh, fw = rng.uniform(CROP_SMALLEST, 0.85), rng.uniform(0.6, 1.0)
        x0, y0 = rng.uniform(0, width * (1 - fw)), rng.uniform(0, height * (1 - fh))
        box = (x0, y0, x0 + fw * width, y0 + fh * height)
        if int(in_box(image.record.centers, box).sum()) >= 2:
            return box
    return None


LEVEL_CUT = (0.3, 0.7)
"""Where between two neighbouring centres a level cut falls (share of the way from the upper one): in the disc
space or across the end plates of either body."""


def level_box(image: DetectorImage, rng: np.random.Generator) -> Box | None:
    """A part of the film cut between levels: its top edge between two neighbouring centres of an evenly drawn level
    (or one level step above the first centre), its bottom edge between two at least two levels lower (or one step
    below the last), at :data:`LEVEL_CUT`; 60-100% of the film's width, holding the centres' columns when it can.
    Names are taken in anatomical order (:meth:`vcorner.io.records.ImageRecord.centers`). The box is widened to at
    least :data:`CROP_SMALLEST` of the film's longer side where the film allows, so that it magnifies no more than
    the pyramid levels kept for cut views (:func:`view_zoom`); None with fewer than two centres or where it cannot be.
    """
    centres = image.record.centers
    count = len(centres)
    if count < 2:
        return None
    height, width = image.shape
    ys = centres[:, 1]
    ends = np.concatenate([[ys[0] - (ys[1] - ys[0])], ys, [ys[-1] + (ys[-1] - ys[-2])]])
    top = int(rng.integers(0, count - 1))
    bottom = int(rng.integers(top + 2, count + 1))
    y0 = ends[top] + rng.uniform(*LEVEL_CUT) * (ends[top + 1] - ends[top])
    y1 = ends[bottom] + rng.uniform(*LEVEL_CUT) * (ends[bottom + 1] - ends[bottom])
    smallest = CROP_SMALLEST * max(height, width)
    fw = min(max(rng.uniform(0.6, 1.0) * width, smallest), width)
    if max(fw, y1 - y0) < smallest:
        return None
    low, high = max(0.0, centres[:, 0].max() - fw), min(width - fw, centres[:, 0].min())
    x0 = rng.uniform(low, high) if low <= high else rng.uniform(0.0, width - fw)
    return (x0, float(np.clip(y0, 0.0, height)), x0 + fw, float(np.clip(y1, 0.0, height)))


def in_box(points: np.ndarray, box: Box) -> np.ndarray:
    """(N,) whether each of ``points`` (N, 2) image pixels lies inside ``box``."""
    x0, y0, x1, y1 = box
    return (points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0) & (points[:, 1] <= y1)


def box_affine(box: Box, size: Size) -> np.ndarray:
    """(2, 3) letterbox affine of the part ``box`` of a film, as if it were the whole film."""
    x0, y0, x1, y1 = box
    affine = letterbox_affine((max(int(round(y1 - y0)), 1), max(int(round(x1 - x0)), 1)), size)
    return affine + np.array([[0.0, 0.0, x0], [0.0, 0.0, y0]])


def cropped_view(x: np.ndarray, y: np.ndarray, c: np.ndarray, affine: np.ndarray, box: Box, image: DetectorImage,
                 names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A view's input (1, S, S), targets (K, S, S) and centres (K, 2) with everything outside ``box`` cut away:
    its pixels read as the view's darkest level, its names are missing (flat targets, NaN centres)."""
    size = x.shape[-2:]
    grid = np.stack(np.meshgrid(np.arange(size[1]), np.arange(size[0])), axis=-1).reshape(-1, 2).astype(np.float64)
    outside = ~in_box(apply_affine(affine, grid), box).reshape(size)
    view = x[0].copy()
    view[outside] = view.min()
    where = {v.name: v.center for v in image.record.vertebrae}
    y, c = y.copy(), c.copy()
    for k, name in enumerate(names):
        if name in where and not in_box(where[name][None], box)[0]:
            y[k], c[k] = flat_map(size), np.nan
    return standardized(view)[None], y, c


def hide(y: np.ndarray, c: np.ndarray, hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Targets (K, S, S) and centres (K, 2) with the names whose centre lies under ``hidden`` (S, S) missing."""
    if not hidden.any():
        return y, c
    y, c = y.copy(), c.copy()
    size = hidden.shape
    for k in np.flatnonzero(np.all(np.isfinite(c), axis=1)):
        u, v = np.clip(np.round(c[k]).astype(int), 0, np.array(size[::-1]) - 1)
        if hidden[v, u]:
            y[k], c[k] = flat_map(size), np.nan
    return y, c


def film_view(image: DetectorImage, affine: np.ndarray, names: Sequence[str], config: DetectionConfig,
              augment: AugmentSpec, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One film's view (1, S, S), targets (K, S, S) and centres (K, 2) through ``affine``; with ``rng`` and the
    recipe's ``crop`` and ``appearance`` shares, cut to a part of the film and given another look."""
    size = config.input_shape
    box = None
    if rng is not None and rng.random() < augment.crop:
        # the level draw only where a recipe asks for it: the random stream of earlier recipes stays as it was
        if augment.level_crop > 0 and rng.random() < augment.level_crop:
            box = level_box(image, rng)
        box = box or crop_box(image, rng)
    if box is not None:
        affine = augmented_affine(box_affine(box, size), size, rng, augment.zoom, augment.rotation_deg, augment.shift)
    x = detector_input(image.view_pyramid(), affine, size)[0]
    y, c = view_targets(image, affine, names, config), view_centres(image, affine, names, size)
    if box is not None:
        x, y, c = cropped_view(x, y, c, affine, box, image, names)
    if rng is not None and augment.slanted_cut > 0 and rng.random() < augment.slanted_cut:
        view, hidden = slanted_cut(x[0], c, rng)  # drawn only where a recipe asks: earlier streams stay as they were
        x = view[None]
        y, c = hide(y, c, hidden)
    if rng is not None and rng.random() < augment.appearance:
        view, hidden = vary_appearance(x[0], rng, c)
        x = view[None]
        y, c = hide(y, c, hidden)
    return x, y, c


UPSIDE_DOWN = "mirrored+turned_180"
"""The view of a film flipped top to bottom: the wrong pose :attr:`AugmentSpec.upside_down` weighs."""


def wrong_view(x: np.ndarray, rng: np.random.Generator, upside_down: float = 0.0) -> np.ndarray:
    """(1, S, S) view ``x`` in a random wrong pose: flipped top to bottom with probability ``upside_down``, else one
    of :data:`vcorner.geometry.views.VIEWS` but ``as_is``, evenly."""
    if upside_down > 0 and rng.random() < upside_down:  # without it, the random stream of earlier recipes as it was
        return view_input(x[None], parse_view(UPSIDE_DOWN))[0]
    return view_input(x[None], VIEWS[int(rng.integers(1, len(VIEWS)))])[0]


def epoch_views(images: Sequence[DetectorImage], names: Sequence[str], config: DetectionConfig,
                augment: AugmentSpec, rng: np.random.Generator | None, chunk_films: int = CHUNK_FILMS
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One pass, ``chunk_films`` films at a time: a view of every image (augmented when ``rng`` is given, else the
    plain letterbox, for validation) plus ``augment.negatives`` as many negative views and ``augment.wrong_views``
    as many views of the chunk's films in a wrong pose (training only).

    With ``rng`` the augmentations of the whole pass are drawn first, in film order (the draws of a pass that cut
    every view at once); the films are then visited in an order drawn from ``rng``, each chunk gets its share of
    the negative views and is shuffled. Without ``rng`` the chunks follow the images' order, unshuffled.

    Yields:
        inputs (M, 1, h, w) and targets (M, K, h, w), float32; (M, K, 2) grid centres, NaN where missing.
    """
    size, n = config.input_shape, len(images)
    affines = [letterbox_affine(image.shape, size) for image in images]
    if rng is not None:
        affines = [augmented_affine(a, size, rng, augment.zoom, augment.rotation_deg, augment.shift) for a in affines]
    negatives = int(round(augment.negatives * n)) if rng is not None else 0
    wrong = int(round(augment.wrong_views * n)) if rng is not None else 0
    varied = rng is not None and (augment.crop > 0 or augment.appearance > 0 or augment.slanted_cut > 0)
    salts = rng.integers(0, 2**63, n) if varied else None  # drawn only by recipes that use them
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, chunk_films):
        xs, ys, cs = [], [], []
        for i in order[start:start + chunk_films]:
            if salts is None:
                xs.append(detector_input(images[i].view_pyramid(), affines[i], size)[0])
                ys.append(view_targets(images[i], affines[i], names, config))
                cs.append(view_centres(images[i], affines[i], names, size))
            else:
                x, y, c = film_view(images[i], affines[i], names, config, augment, np.random.default_rng(salts[i]))
                xs.append(x), ys.append(y), cs.append(c)
        end = min(start + chunk_films, n)
        films = len(xs)
        for _ in range(int(round(wrong * end / n)) - int(round(wrong * start / n))):
            xs.append(wrong_view(xs[int(rng.integers(0, films))], rng, augment.upside_down))
            ys.append(np.stack([flat_map(size)] * len(names)))
            cs.append(np.full((len(names), 2), np.nan))
        for _ in range(int(round(negatives * end / n)) - int(round(negatives * start / n))):
            xs.append(negative_view(size, rng, images, augment.bars))
            ys.append(np.stack([flat_map(size)] * len(names)))
            cs.append(np.full((len(names), 2), np.nan))
        x, y, c = np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32), np.stack(cs)
        del xs, ys, cs
        if rng is not None:
            shuffle = rng.permutation(len(x))
            x, y, c = x[shuffle], y[shuffle], c[shuffle]
        yield x, y, c
