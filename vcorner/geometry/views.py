"""Candidate views of a film: the transforms that may bring it to the pose the models learned (README.md,
"Automatic centres", "Orientation and polarity").

The models learned lateral films with the patient facing right, the head up and bone bright. A user's film may
be mirrored (the patient facing left), upside down or inverted (bone dark, a MONOCHROME1-like PNG); the
detector looks at each candidate view and the one it finds a spine in wins (:mod:`vcorner.stages.detect`).

A view is a transform of the detector's S x S input grid (mirror and half turn about the grid's centre) and a
sign of its standardized pixels, so it composes with the letterbox affine
(:func:`vcorner.geometry.letterbox.letterbox_affine`) and every point found in it maps straight back to the
film's own pixels. Patches follow the same view: a mirrored film's vertebra frames are mirrored
(:func:`mirror_frames`) so that the frame's +x is anterior, and an inverted film's patches change sign.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vcorner.geometry.frames import Frames
from vcorner.io.records import checked_view


@dataclass(frozen=True)
class View:
    """How a film differs from the learned pose: mirrored left-right, turned half a turn, intensities inverted."""

    mirrored: bool = False
    turned: bool = False
    inverted: bool = False

    @property
    def name(self) -> str:
        """``as_is`` or the transforms joined by ``+`` (``mirrored``, ``turned_180``, ``inverted``)."""
        parts = [p for p, on in (("mirrored", self.mirrored), ("turned_180", self.turned),
                                 ("inverted", self.inverted)) if on]
        return "+".join(parts) or "as_is"

    @property
    def handedness(self) -> float:
        """+1 for a view that keeps the film's handedness (as_is, turned_180), -1 for a reflection (mirrored, or
        mirrored+turned_180: flipped top to bottom): a turn of the film by ``d`` degrees is one of
        ``d * handedness`` in the view."""
        return -1.0 if self.mirrored else 1.0


AS_IS = View()
VIEWS: tuple[View, ...] = tuple(View(m, t, i) for i in (False, True) for t in (False, True) for m in (False, True))
"""Every candidate view, ``as_is`` first."""


def parse_view(text: str) -> View:
    """The :class:`View` named by ``text`` (:attr:`View.name`; empty reads as ``as_is``).

    Raises:
        InputError: an unknown name (:func:`vcorner.io.records.checked_view`).
    """
    parts = checked_view(text).split("+")
    return View("mirrored" in parts, "turned_180" in parts, "inverted" in parts)


def grid_transform(view: View, size: int | tuple[int, int]) -> np.ndarray:
    """(3, 3) homogeneous map of input-grid points of the view to those of the plain letterbox (its own inverse),
    for an input grid of side ``size`` or of shape (height, width)."""
    height, width = (size, size) if isinstance(size, int) else size
    out = np.eye(3)
    if view.mirrored != view.turned:  # a mirror and a half turn together flip the rows only
        out[0] = (-1.0, 0.0, width - 1.0)
    if view.turned:
        out[1] = (0.0, -1.0, height - 1.0)
    return out


def view_affine(letterbox: np.ndarray, view: View, size: int | tuple[int, int]) -> np.ndarray:
    """(2, 3) grid-to-image affine of ``view``: the plain ``letterbox`` (2, 3) affine after the view's grid
    transform (``size``: the grid's side, or its (height, width))."""
    return letterbox @ grid_transform(view, size)


def turn_about_centre(degrees: float, size: int | tuple[int, int]) -> np.ndarray:
    """(3, 3) homogeneous map turning grid points by ``degrees`` (from +x towards +y) about the centre of a grid
    of side ``size`` or shape (height, width): composed after a view's affine, it shows the view turned by
    ``-degrees`` (a spine leaning ``a`` degrees from +y towards +x then leans ``a + degrees``)."""
    height, width = (size, size) if isinstance(size, int) else size
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    linear = np.array([[c, -s], [s, c]])
    out = np.eye(3)
    out[:2, :2], out[:2, 2] = linear, centre - linear @ centre
    return out


def view_input(plain: np.ndarray, view: View) -> np.ndarray:
    """(1, 1, S, S) standardized detector input of ``view`` from that of the plain letterbox (same shape)."""
    out = plain[:, :, ::-1, ::-1] if view.turned else plain
    out = out[:, :, :, ::-1] if view.mirrored else out
    return np.ascontiguousarray(-out if view.inverted else out)


def mirror_frames(frames: Frames) -> Frames:
    """``frames`` with their x axes reversed: on a mirrored film, +x of every frame points anterior again."""
    axes = frames.axes.copy()
    axes[:, :, 0] *= -1.0
    return Frames(centers=frames.centers, axes=axes, sizes=frames.sizes)
