"""Clutter around the vertebral bodies, as attenuating polygons in the spine frame (mm).

Posterior elements (pedicles, articular pillars, laminae, spinous, transverse and uncinate processes),
the dens, atlas, skull base, mandible and hyoid, plus metal hardware (anterior plate, screws, cage).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vcorner.phantoms.anatomy import LEVELS, Body, Spine, body_outline, osteophyte
from vcorner.phantoms.shapes import catmull_rom, ellipse, place, polyline, stroke, superellipse

_SPINOUS_MM = (22.0, 13.0, 13.0, 14.0, 18.0, 26.0, 26.0)


@dataclass(frozen=True)
class Part:
    """One attenuating structure.

    Attributes:
        polygon: (N, 2) closed outline, spine frame, mm.
        density: Attenuation added inside (projected, dimensionless).
        rim: Extra attenuation of a cortical rim drawn inside the outline.
        rim_mm: Rim thickness, mm.
        layer: ``body`` (union of vertebral bodies), ``bone`` (additive, textured) or ``metal``.
    """

    polygon: np.ndarray
    density: float
    rim: float = 0.0
    rim_mm: float = 0.0
    layer: str = "bone"


def _parallelogram(center: tuple[float, float], width: float, top: float, bottom: float, slope: float) -> np.ndarray:
    """Rounded quadrilateral with oblique (facet) top and bottom edges; ``slope`` = tan of the facet angle."""
    cx, cy = center
    xa, xp, dy = cx + width / 2, cx - width / 2, width / 2 * slope
    corners = np.array([[xa, cy + top - dy], [xa, cy + bottom - dy], [xp, cy + bottom + dy], [xp, cy + top + dy]])
    control = np.vstack([corners, (corners + np.roll(corners, -1, axis=0)) / 2])[[0, 4, 1, 5, 2, 6, 3, 7]]
    return catmull_rom(control, per_segment=6)


def _spinous(body: Body, level: int, rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """Tapered, downward-curving spinous process outline from ``base`` (body frame)."""
    length = _SPINOUS_MM[level] * rng.uniform(0.85, 1.15)
    slope = np.deg2rad(rng.uniform(10.0, 35.0) + (8.0 if level in (5, 6) else 0.0))
    sag = rng.uniform(0.0, 0.15) * length
    t = np.linspace(0.0, 1.0, 8)
    path = base + np.stack([-np.cos(slope) * length * t, np.sin(slope) * length * t + sag * t**2], axis=1)
    thick = 9.0 if level == 0 else 7.0
    tip = 6.5 if level in (0, 5, 6) else 4.5
    return stroke(path, thick + (tip - thick) * t)


def posterior_elements(body: Body, level: int, discs: tuple[float, float], rng: np.random.Generator) -> list[Part]:
    """Pedicle, left/right articular pillars, lamina, spinous/transverse/uncinate processes of one vertebra.

    Args:
        body: The vertebral body the elements hang on.
        level: Index into ``LEVELS``.
        discs: Disc heights above and below, mm (the pillars span them to form the facet joints).
        rng: Random generator.
    """
    a, b = body.shape.depth / 2, body.shape.height / 2
    parts = [Part(ellipse((-a - 2.5, -b * 0.35), 4.2, 2.8), 0.3, 0.25, 0.5)]
    width = rng.uniform(8.5, 11.0) * (1.15 if level == 0 else 1.0)
    cx, slope = -a - 10.0 + rng.normal(0.0, 0.8), np.tan(np.deg2rad(rng.uniform(25.0, 45.0)))
    top, bottom = -b - discs[0] * 0.5 + 0.8, b + discs[1] * 0.5 - 0.8
    for _ in range(2):  # left and right pillars, imperfectly superimposed
        offset = rng.normal(0.0, 1.0, 2)
        pillar = _parallelogram((cx + offset[0], 0.6 + offset[1]), width, top, bottom, slope)
        parts.append(Part(pillar, 0.28, 0.3, 0.6))
    lamina = np.array([[cx - width / 2 + 1.0, 1.5], [-a - 21.0, 4.0]])
    parts.append(Part(stroke(polyline(lamina, 6), 5.0), 0.35, 0.2, 0.5))
    parts.append(Part(_spinous(body, level, rng, np.array([-a - 20.0, 3.5])), 0.4, 0.35, 0.6))
    parts.append(Part(ellipse((-a * 0.35, -b * 0.1), 6.0, 4.0, rng.normal(0.0, 0.2)), 0.12))
    if level > 0:
        parts.append(Part(ellipse((-a * 0.6, -b - 0.6), 3.0, 1.6), 0.22))
    return [Part(body.to_spine(p.polygon), p.density, p.rim, p.rim_mm) for p in parts]


def vertebral_bodies(spine: Spine, density: float, rim: float, rim_mm: float) -> list[Part]:
    """Body outlines (with osteophytes, and the dens on C2) for the ``body`` layer."""
    parts = []
    for body in spine.bodies:
        parts.append(Part(body.outline(360), density, rim, rim_mm, "body"))
        for corner, length in body.shape.osteophytes:
            parts.append(Part(body.to_spine(osteophyte(body.shape, corner, length)), density, rim, rim_mm, "body"))
    c2 = spine.body("C2")
    a, b = c2.shape.depth / 2, c2.shape.height / 2
    dens = place(superellipse(4.8, 9.5, 3.0), 0.0, (-a * 0.2, -b - 7.5))
    parts.append(Part(c2.to_spine(dens), density, rim * 0.7, rim_mm, "body"))
    return parts


def atlas_and_skull(spine: Spine, rng: np.random.Generator) -> list[Part]:
    """C1 arches and lateral masses, occiput with the mastoid, in the spine frame."""
    c2 = spine.body("C2")
    a, b = c2.shape.depth / 2, c2.shape.height / 2
    y1 = -b - 14.0 + rng.normal(0.0, 1.5)
    parts = [
        Part(ellipse((a + 2.5, y1), 3.6, 5.8, 0.2), 0.25, 0.4, 0.8),
        Part(stroke(polyline([(-a - 13.0, y1 + 1), (-a - 28.0, y1), (-a - 42.0, y1 + 3)], 10),
                    np.linspace(6.5, 9.5, 10)), 0.35, 0.35, 0.8),
        Part(ellipse((-a * 0.5, y1 - 1.0), 9.0, 6.0), 0.3),
        Part(ellipse((-a - 9.0, y1 - 12.0), 8.0, 10.0, 0.3), 0.45, 0.2, 0.8),
    ]
    drop = rng.uniform(-6.0, 8.0)
    occiput = [(-a - 110, y1 - 12 + drop), (-a - 70, y1 - 9 + drop), (-a - 40, y1 - 11 + drop / 2),
               (-a - 18, y1 - 16), (-a - 10, y1 - 40), (-a - 5, y1 - 140), (-a - 110, y1 - 140)]
    parts.append(Part(catmull_rom(np.array(occiput), 8), 0.9, 0.5, 1.5))
    return [Part(c2.to_spine(p.polygon), p.density, p.rim, p.rim_mm) for p in parts]


def mandible_and_hyoid(spine: Spine, rng: np.random.Generator) -> list[Part]:
    """Both hemimandibles (ramus, angle, body) and the hyoid, in the spine frame."""
    c2, c3 = spine.body("C2"), spine.body("C3")
    x_r = c2.center[0] + c2.shape.depth / 2 + rng.uniform(3.0, 16.0)
    gy = c3.center[1] + rng.uniform(-12.0, 6.0)
    outline = np.array([(0, -75), (1, -25), (4, -4), (14, 2), (45, 3), (100, -6), (100, -38), (52, -31),
                        (33, -30), (29, -75)], dtype=np.float64)
    parts = []
    for side in range(2):
        scale = 1.0 if side == 0 else rng.uniform(1.02, 1.08)
        shift = (x_r, gy) if side == 0 else (x_r + rng.uniform(1.0, 7.0), gy + rng.uniform(0.0, 6.0))
        shape = catmull_rom(outline * scale, 6)
        parts.append(Part(place(shape, np.deg2rad(rng.normal(0.0, 4.0)), shift), 0.22, 0.45, 1.6))
    hyoid = ellipse((c3.center[0] + c3.shape.depth / 2 + rng.uniform(22.0, 34.0), c3.center[1] + rng.uniform(0, 12)),
                    6.5, 2.6, np.deg2rad(rng.uniform(-30.0, 0.0)))
    parts.append(Part(hyoid, 0.3, 0.3, 0.7))
    return parts


def hardware(spine: Spine, rng: np.random.Generator) -> tuple[list[Part], str]:
    """Anterior cervical plate with screws over 2-3 annotated levels and interbody cages.

    Returns:
        The metal and graft parts, and a description such as ``"plate C4-C6"``.
    """
    first = int(rng.integers(1, 5))
    last = min(first + int(rng.integers(1, 3)), 5)
    fused = spine.bodies[first : last + 1]
    path = []
    for i, body in enumerate(fused):
        a, b = body.shape.depth / 2, body.shape.height / 2
        ys = [-0.6 * b, 0.0] if i == 0 else ([0.0, 0.6 * b] if i == len(fused) - 1 else [0.0])
        path += [body.to_spine(np.array([[a + 1.4, y]]))[0] for y in ys]
    parts = [Part(stroke(polyline(np.array(path), 24), 2.3), 3.5, layer="metal")]
    for body, y in ((fused[0], -0.45), (fused[-1], 0.45)):
        a, b = body.shape.depth / 2, body.shape.height / 2
        tilt = np.deg2rad(rng.uniform(5.0, 15.0)) * np.sign(y)
        length = rng.uniform(12.0, 16.0)
        t = np.linspace(0.0, 1.0, 40)
        screw = np.stack([a + 1.0 - length * t * np.cos(tilt), y * b + length * t * np.sin(tilt)], axis=1)
        widths = 3.6 + 0.5 * np.sign(np.sin(2 * np.pi * t * length / 1.1)) - 1.2 * t**4
        parts.append(Part(body.to_spine(stroke(screw, widths)), 3.0, layer="metal"))
    for upper, lower in zip(fused[:-1], fused[1:]):
        mid = (upper.center + lower.center) / 2
        size = (min(upper.shape.depth, lower.shape.depth) * 0.42, 2.2)
        cage = place(superellipse(*size, 6.0), (upper.angle + lower.angle) / 2, mid)
        parts.append(Part(cage, 0.9 if rng.random() < 0.5 else 2.5, layer="metal"))
    return parts, f"plate {LEVELS[first]}-{LEVELS[last]}"


def clutter(spine: Spine, rng: np.random.Generator) -> list[Part]:
    """All bony clutter except the bodies: posterior elements of C2-T1, atlas, skull base, mandible, hyoid."""
    discs = np.concatenate([[4.0], spine.discs, [4.0]])
    parts: list[Part] = []
    for level, body in enumerate(spine.bodies):
        parts += posterior_elements(body, level, (discs[level], discs[level + 1]), rng)
    return parts + atlas_and_skull(spine, rng) + mandible_and_hyoid(spine, rng)


__all__ = ["Part", "body_outline", "clutter", "hardware", "vertebral_bodies"]
