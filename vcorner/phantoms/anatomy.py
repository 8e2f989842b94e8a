"""A sampled adult cervical spine C2-T1 in millimetres: body shapes, disc spaces, curvature and placement.

Spine frame: millimetres, x anterior (the patient faces right), y caudal (down), origin at the C5 body.
Body frame: the same axes rotated with the vertebra (cranial side up, anterior right), origin at the
centre of the undeformed body. Angles follow image axes: positive turns clockwise on screen, so a body
with a positive angle has its anterior side tilted down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vcorner.phantoms.shapes import place

LEVELS: tuple[str, ...] = ("C2", "C3", "C4", "C5", "C6", "C7", "T1")
ANNOTATED: tuple[str, ...] = ("C3", "C4", "C5", "C6", "C7")
_DEPTH = (15.0, 15.4, 15.8, 16.2, 16.8, 17.3, 18.5)  # mm, anteroposterior, adult means
_HEIGHT = (15.0, 13.4, 13.0, 13.0, 13.2, 13.9, 15.5)  # mm; C2 without the dens
_DISC = (4.4, 5.0, 5.3, 5.4, 5.1, 4.3)  # mm, disc below C2 ... below C7
DISC_MM = _DISC
"""Mean adult disc heights below C2 ... below C7, mm."""
_CORNER_THETA = np.deg2rad([225.0, 315.0, 135.0, 45.0])  # superellipse parameter of each corner apex


@dataclass(frozen=True)
class BodyShape:
    """Outline parameters of one vertebral body (all lengths in mm).

    Attributes:
        depth: Anteroposterior size.
        height: Craniocaudal size at the centre.
        roundness: Superellipse exponent per corner in ``CORNER_NAMES`` order (3 = round, 12 = sharp).
        wedge: Fraction of height lost anteriorly (fractures 0.2-0.4; negative = posterior wedge).
        concavity: Depth of the superior and inferior endplate concavities.
        waist: Concavity of the anterior and posterior walls.
        lip: Downward projection of the anterior-inferior lip.
        osteophytes: (corner index, length) of anterior spurs; drawn, not part of the annotated outline.
    """

    depth: float
    height: float
    roundness: tuple[float, float, float, float]
    wedge: float
    concavity: tuple[float, float]
    waist: tuple[float, float]
    lip: float
    osteophytes: tuple[tuple[int, float], ...] = ()


def _deform(points: np.ndarray, shape: BodyShape) -> np.ndarray:
    """Apply endplate/wall concavities, the anterior lip and wedging to (N, 2) body-frame points."""
    a, b = shape.depth / 2, shape.height / 2
    x, y = points[:, 0].copy(), points[:, 1].copy()
    u, v = x / a, y / b
    bell_x, bell_y = np.clip(1 - u**2, 0, None), np.clip(1 - v**2, 0, None)
    superior, inferior = np.clip(-v, 0, None) ** 6, np.clip(v, 0, None) ** 6
    y += shape.concavity[0] * bell_x * superior - shape.concavity[1] * bell_x * inferior
    x += -shape.waist[0] * bell_y * np.clip(u, 0, None) ** 6 + shape.waist[1] * bell_y * np.clip(-u, 0, None) ** 6
    y += shape.lip * np.exp(-(((u - 0.75) / 0.25) ** 2)) * inferior
    y *= 1 - shape.wedge * (u + 1) / 2
    return np.stack([x, y], axis=1)


def _superellipse_at(theta: np.ndarray, shape: BodyShape) -> np.ndarray:
    """(N, 2) undeformed outline points at parameters ``theta`` (0 = anterior, pi/2 = inferior)."""
    c, s = np.cos(theta), np.sin(theta)
    corner = np.where(s < 0, np.where(c >= 0, 1, 0), np.where(c >= 0, 3, 2))
    e = np.asarray(shape.roundness)[corner]
    return np.stack([shape.depth / 2 * np.sign(c) * np.abs(c) ** (2 / e),
                     shape.height / 2 * np.sign(s) * np.abs(s) ** (2 / e)], axis=1)


def body_outline(shape: BodyShape, n: int = 720) -> np.ndarray:
    """(n, 2) closed body outline in the body frame, mm; starts anterior, runs inferior first.

    ``n`` is rounded to a multiple of 8 so that the four corner apexes are vertices.
    """
    n = max(8, n // 8 * 8)
    theta = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return _deform(_superellipse_at(theta, shape), shape)


def body_corners(shape: BodyShape) -> np.ndarray:
    """(4, 2) corner apexes in the body frame, mm, ``CORNER_NAMES`` order.

    A corner is the apex of the rounded transition between endplate and wall (the undeformed
    superellipse's diagonal point), carried through the same deformation as the outline.
    """
    return _deform(_superellipse_at(_CORNER_THETA, shape), shape)


def osteophyte(shape: BodyShape, corner: int, length: float) -> np.ndarray:
    """(K, 2) polygon of an anterior spur growing from ``corner`` (1 or 3) towards the disc, body frame."""
    apex = body_corners(shape)[corner]
    toward_disc = -1.0 if corner == 1 else 1.0
    offsets = np.array([[-2.2, -0.3], [0.15, -3.8], [0.9, -1.2], [0.6 + 0.3 * length, length * 0.8],
                        [-0.4, length * 0.35]])
    return apex + offsets * np.array([1.0, toward_disc])


@dataclass(frozen=True)
class Body:
    """One vertebral body placed in the spine frame (mm)."""

    name: str
    center: np.ndarray
    angle: float
    shape: BodyShape

    def to_spine(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) body-frame points in the spine frame."""
        return place(points, self.angle, self.center)

    def outline(self, n: int = 720) -> np.ndarray:
        """(n, 2) body outline in the spine frame."""
        return self.to_spine(body_outline(self.shape, n))

    def corners(self) -> np.ndarray:
        """(4, 2) corners in the spine frame, ``CORNER_NAMES`` order."""
        return self.to_spine(body_corners(self.shape))


@dataclass(frozen=True)
class Spine:
    """C2-T1 bodies, cranial first, and the centreline they sit on.

    Attributes:
        bodies: One per name in ``LEVELS``.
        discs: (6,) disc heights below C2 ... below C7, mm.
        curve: (M, 2) centreline from well above C2 to well below T1, mm, cranial first.
        curve_angle: (M,) body angle along the centreline, radians.
        kind: ``lordotic``, ``straight`` or ``kyphotic``.
        listhesis: (level, mm) of a spondylolisthesis (positive = anterior slip), or None (the first of ``slips``).
        fracture: Name of a fractured body, or None (the first of ``fractures``).
        fractures: (name, shape, severity) of every fractured or deformed body; shape is ``wedge``,
            ``biconcave`` or ``crush``; severity: the wedge parameter of :func:`sample_spine`'s fractures, the
            target height loss of :mod:`vcorner.phantoms.pathology`'s.
        slips: (level, mm) of every slip of ``level`` on the body below it (positive = anterior).
        fused: Names of the upper bodies of fused levels (bone bridges the disc below them).
    """

    bodies: tuple[Body, ...]
    discs: np.ndarray
    curve: np.ndarray
    curve_angle: np.ndarray
    kind: str
    listhesis: tuple[str, float] | None
    fracture: str | None
    fractures: tuple[tuple[str, str, float], ...] = ()
    slips: tuple[tuple[str, float], ...] = ()
    fused: tuple[str, ...] = ()

    def body(self, name: str) -> Body:
        """The body called ``name``."""
        return self.bodies[LEVELS.index(name)]


def sample_shape(rng: np.random.Generator, level: int, scale: float, age: float, *, fractured: bool = False,
                 osteoporotic: bool = False) -> BodyShape:
    """Random body outline parameters for ``LEVELS[level]`` of a person of size ``scale`` and ``age`` in [0, 1]."""
    concave = 1.8 if osteoporotic else 1.0
    spurs = tuple((corner, float(rng.uniform(1.0, 3.5))) for corner in (1, 3) if rng.random() < 0.45 * age**1.5)
    return BodyShape(
        depth=_DEPTH[level] * scale * rng.uniform(0.95, 1.05),
        height=_HEIGHT[level] * scale * rng.uniform(0.94, 1.06),
        roundness=tuple(np.exp(rng.uniform(np.log(3.0), np.log(12.0), 4))),  # type: ignore[arg-type]
        wedge=rng.uniform(0.18, 0.42) if fractured else rng.normal(0.03, 0.035),
        concavity=(rng.uniform(0.0, 0.7) * concave, rng.uniform(0.2, 1.2) * concave),
        waist=(rng.uniform(0.0, 0.7), rng.uniform(0.0, 0.4)),
        lip=rng.uniform(1.2, 2.4) if level == 0 else rng.uniform(0.0, 1.2),
        osteophytes=spurs if 0 < level < 6 else (),
    )


def _centreline(s_nodes: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Centreline samples (M, 2) and angles (M,) for body arc positions ``s_nodes`` (C3 at 0)."""
    bend = {"lordotic": (12.0, 32.0), "straight": (-4.0, 5.0), "kyphotic": (-14.0, -5.0)}[kind]
    kappa = np.deg2rad(rng.uniform(*bend)) / (s_nodes[5] - s_nodes[1])
    lean = np.deg2rad(rng.uniform(2.0, 18.0))
    s = np.arange(s_nodes[0] - 140.0, s_nodes[-1] + 140.0, 0.25)
    angle = lean + kappa * (np.clip(s, s_nodes[0], s_nodes[-1]) - s_nodes[3])
    step = np.stack([-np.sin(angle), np.cos(angle)], axis=1) * 0.25
    points = np.cumsum(step, axis=0)
    points -= np.array([np.interp(s_nodes[3], s, points[:, k]) for k in range(2)])
    return np.column_stack([s, points]), angle


def sample_spine(rng: np.random.Generator, *, osteoporotic: bool = False) -> Spine:
    """A random adult C2-T1 spine: sizes, discs, curve (lordotic, straight or kyphotic), tilt, slips, fracture."""
    scale, age = float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.12)), float(rng.uniform())
    fracture = int(rng.integers(1, 6)) if rng.random() < (0.25 if osteoporotic else 0.08) else None
    shapes = [sample_shape(rng, i, scale, age, fractured=i == fracture, osteoporotic=osteoporotic)
              for i in range(len(LEVELS))]
    discs = np.array(_DISC) * scale * rng.uniform(0.85, 1.15, len(_DISC))
    discs[2:5] *= np.where(rng.random(3) < 0.5 * age, rng.uniform(0.35, 0.7, 3), 1.0)
    bodies, curve, angle, kind = assemble(rng, shapes, discs)
    listhesis = None
    if rng.random() < 0.12:
        level = int(rng.integers(1, 5))
        slip = float(rng.uniform(1.5, 4.0) * (1 if rng.random() < 0.7 else -1))
        bodies = slip_above(bodies, level, slip)
        listhesis = (LEVELS[level], slip)
    name = LEVELS[fracture] if fracture is not None else None
    return Spine(tuple(bodies), discs, curve, angle, kind, listhesis, name,
                 fractures=((name, "wedge", shapes[fracture].wedge),) if name else (),
                 slips=(listhesis,) if listhesis else ())


def assemble(rng: np.random.Generator, shapes: list[BodyShape],
             discs: np.ndarray) -> tuple[list[Body], np.ndarray, np.ndarray, str]:
    """Bodies of ``shapes`` (one per ``LEVELS``) stacked with ``discs`` (6,) mm along a random curve.

    Returns:
        The placed bodies, the centreline (M, 2), its angles (M,) and the curve's kind.
    """
    heights = np.array([s.height for s in shapes])
    s_nodes = np.concatenate([[0.0], np.cumsum(heights[:-1] / 2 + discs + heights[1:] / 2)])
    s_nodes -= s_nodes[1]
    kind = str(rng.choice(["lordotic", "straight", "kyphotic"], p=[0.65, 0.22, 0.13]))
    table, angle = _centreline(s_nodes, kind, rng)
    s, curve = table[:, 0], table[:, 1:]
    bodies = []
    for i, name in enumerate(LEVELS):
        center = np.array([np.interp(s_nodes[i], s, curve[:, k]) for k in range(2)])
        tilt = np.interp(s_nodes[i], s, angle) + np.deg2rad(rng.normal(0.0, 1.5))
        center += np.array([np.cos(tilt), np.sin(tilt)]) * rng.normal(0.0, 0.4)
        bodies.append(Body(name, center, float(tilt), shapes[i]))
    return bodies, curve, angle, kind


def slip_above(bodies: list[Body], level: int, slip: float) -> list[Body]:
    """``bodies`` with ``LEVELS[level]`` and every body above it moved ``slip`` mm along that body's anterior
    axis (positive: an anterolisthesis of ``LEVELS[level]`` on the body below)."""
    axis = np.array([np.cos(bodies[level].angle), np.sin(bodies[level].angle)])
    return [Body(b.name, b.center + slip * axis, b.angle, b.shape) if i <= level else b for i, b in enumerate(bodies)]
