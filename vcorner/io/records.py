"""In-memory records shared by every stage: one image and its vertebrae.

Coordinates are pixels, origin at the top-left pixel's centre, x right, y down (docs/design.md section 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np


class InputError(ValueError):
    """Bad user input (a file, a row, a value); its message is one line that names the culprit."""


class MachineError(RuntimeError):
    """A failure of this machine or of a dependency, not of the user's input: a missing optional library, an
    engine that will not load or build, a Ray cluster that stalls; its message is one line with what to do.
    Commands exit with code 3 on it (2 is kept for the user's options and files)."""


@dataclass(frozen=True)
class Vertebra:
    """One vertebra of one image.

    Attributes:
        name: Vertebra label, e.g. ``"C3"``.
        center: (2,) clicked centre, pixels.
        corners: (4, 2) corners in the order of ``vcorner.CORNER_NAMES``, or None at inference.
        boundary: (K, 2) clicked contour points, or None (then the quadrilateral through the corners).
    """

    name: str
    center: np.ndarray
    corners: np.ndarray | None = None
    boundary: np.ndarray | None = None


@dataclass(frozen=True)
class ImageRecord:
    """One image and its vertebrae, ordered cranial to caudal.

    Attributes:
        file: Image path relative to the dataset root (POSIX separators).
        vertebrae: Vertebrae, cranial first.
        pixel_spacing_mm: Physical pixel size, or None when unknown.
        view: how the film differs from the pose the models learned (``as_is``, or ``mirrored``, ``turned_180``,
            ``inverted`` joined by ``+``: :mod:`vcorner.geometry.views`); patches are cut through it.
        flags: image-level flags the centre detector raised (``levels_uncertain``, ``view_uncertain``), kept in
            its journal so that an image redone from it still carries them.
    """

    file: str
    vertebrae: tuple[Vertebra, ...] = field(default_factory=tuple)
    pixel_spacing_mm: float | None = None
    view: str = "as_is"
    flags: tuple[str, ...] = ()

    @property
    def centers(self) -> np.ndarray:
        """(V, 2) float64 centres, cranial first."""
        return np.array([v.center for v in self.vertebrae], dtype=np.float64).reshape(-1, 2)


VIEW_PARTS: tuple[str, ...] = ("mirrored", "turned_180", "inverted")
"""The transforms a view name joins with ``+``, in this order (``as_is``: none)."""


def checked_view(text: str, where: str = "view") -> str:
    """``text`` as a view name (:attr:`vcorner.geometry.views.View.name`; empty reads as ``as_is``).

    Raises:
        InputError: unknown transforms, or known ones out of order or repeated.
    """
    name = text.strip() or "as_is"
    parts = [] if name == "as_is" else name.split("+")
    if any(p not in VIEW_PARTS for p in parts) or parts != sorted(set(parts), key=VIEW_PARTS.index):
        raise InputError(f"{where}: unknown view {text!r} (as_is, or {', '.join(VIEW_PARTS)} joined by '+' in "
                         "this order)")
    return name


_REGIONS = {"C": (0, 7), "T": (7, 12), "L": (19, 6), "S": (25, 5)}
_LABEL = re.compile(r"^\s*([CTLS])\s*(\d{1,2})\s*$", re.IGNORECASE)


def anatomical_rank(name: str) -> int | None:
    """Position of an anatomical vertebra label along the spine, cranial first (C1 -> 0, L5 -> 23), else None."""
    match = _LABEL.match(name)
    if not match:
        return None
    start, count = _REGIONS[match.group(1).upper()]
    number = int(match.group(2))
    return start + number - 1 if 1 <= number <= count else None
