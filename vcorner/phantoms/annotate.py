"""Simulated manual annotation of a vertebral body, with the variability of human annotators.

An annotator clicks the four corners (near the true apexes, about 0.35 mm off), a few points along
each side between them (about 0.3 mm off the true outline), and a centre a few pixels off the body's
centroid. Boundary points run superior-left, along the superior endplate, superior-right, down the
anterior wall, inferior-right, along the inferior endplate, inferior-left, up the posterior wall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vcorner.io.records import ImageRecord, Vertebra
from vcorner.phantoms.anatomy import Body, body_corners, body_outline
from vcorner.phantoms.render import Placement
from vcorner.phantoms.shapes import arc_length, centroid

_SIDES = ((0, 1), (1, 3), (3, 2), (2, 0))  # corner index pairs walked around the outline
_OUTLINE_POINTS = 720


@dataclass(frozen=True)
class Truth:
    """Noise-free geometry of one body in pixels.

    Attributes:
        outline: (N, 2) true outline (without osteophytes).
        corners: (4, 2) true corner apexes, ``CORNER_NAMES`` order.
        centroid: (2,) area centroid of the outline.
    """

    outline: np.ndarray
    corners: np.ndarray
    centroid: np.ndarray


def body_truth(body: Body, placement: Placement) -> Truth:
    """The true outline, corners and centroid of ``body`` in pixels."""
    outline = placement.to_px(body.to_spine(body_outline(body.shape, _OUTLINE_POINTS)))
    corners = placement.to_px(body.to_spine(body_corners(body.shape)))
    return Truth(outline, corners, centroid(outline))


def _side_points(outline: np.ndarray, start: int, stop: int, count: int) -> np.ndarray:
    """``count`` points evenly spaced by arc length strictly between outline indices ``start`` and ``stop``."""
    n = len(outline)
    idx = np.arange(start, start + (stop - start) % n + 1) % n
    path = outline[idx]
    s = arc_length(path, closed=False)
    targets = s[-1] * (np.arange(1, count + 1) / (count + 1))
    return np.stack([np.interp(targets, s, path[:, 0]), np.interp(targets, s, path[:, 1])], axis=1)


def exact_vertebra(name: str, truth: Truth, points: int = 16) -> Vertebra:
    """The noise-free annotation of one body: its true corner apexes, its area centroid as the centre, and
    ``points`` points of its true outline as the boundary (``truth.json`` of ``vcorner synth``)."""
    step = max(1, len(truth.outline) // points)
    return Vertebra(name, truth.centroid.copy(), truth.corners.copy(), truth.outline[::step].copy())


def exact_record(file: str, truths: dict[str, Truth], spacing_mm: float) -> ImageRecord:
    """One film's noise-free record: :func:`exact_vertebra` of each of ``truths`` ({name: truth}, cranial first)."""
    return ImageRecord(file, tuple(exact_vertebra(n, t) for n, t in truths.items()), spacing_mm)


def annotate(body: Body, placement: Placement, rng: np.random.Generator) -> tuple[Vertebra, Truth]:
    """Clicked centre, corners and boundary of ``body``, and its noise-free truth.

    Args:
        body: The body to annotate (spine frame).
        placement: Spine frame to pixels.
        rng: Random generator (annotator noise).

    Returns:
        The annotation in pixels (``corners`` (4, 2), ``boundary`` (12-20, 2)) and the truth.
    """
    truth = body_truth(body, placement)
    mm = 1.0 / placement.spacing
    corners = truth.corners + rng.normal(0.0, 0.35 * mm, (4, 2))
    corner_index = [int(np.argmin(np.hypot(*(truth.outline - c).T))) for c in truth.corners]
    boundary = []
    for a, b in _SIDES:
        count = int(rng.integers(2, 5))
        side = _side_points(truth.outline, corner_index[a], corner_index[b], count)
        boundary += [corners[a][None, :], side + rng.normal(0.0, 0.3 * mm, side.shape)]
    center = truth.centroid + rng.normal(0.0, rng.uniform(1.0, 3.0), 2)
    return Vertebra(body.name, center, corners, np.vstack(boundary)), truth
