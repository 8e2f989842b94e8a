"""Clutter around the vertebral bodies, as attenuating polygons in the spine frame (mm).

Posterior elements (pedicles, articular pillars, laminae, spinous, transverse and uncinate processes),
the dens, atlas, skull base, mandible and hyoid, plus metal hardware (anterior plate, screws, cage).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vcorner.phantoms.anatomy import LEVELS, Body, Spine, osteophyte
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


def _arch(level: int, pillar: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Lamina and spinous process as one smooth outline (body frame, mm).

    Args:
        level: Index into ``LEVELS`` (sets the spinous length and tip).
        pillar: (posterior edge x, centre y, height) of the articular pillar the lamina leaves from.
        rng: Random generator.
    """
    x0, y0, height = pillar
    length = _SPINOUS_MM[level] * rng.uniform(0.85, 1.15)
    slope = np.deg2rad(rng.uniform(25.0, 50.0) - (10.0 if level in (5, 6) else 0.0))
    axis, normal = np.array([-np.cos(slope), np.sin(slope)]), np.array([np.sin(slope), np.cos(slope)])
    junction = np.array([x0 - 4.0, y0 + 0.15 * height])
    tip = junction + axis * length
    base, end = (6.0 if level == 0 else 4.5), (3.5 if level in (0, 5, 6) else 2.2)
    control = [
        (x0 + 2.0, y0 - 0.3 * height), junction - normal * base,
        junction + axis * length * 0.5 - normal * (base + end) / 2, tip - normal * end,
        tip + axis * end * 0.8, tip + normal * end,
        junction + axis * length * 0.5 + normal * (base + end) / 2, junction + normal * base * 1.1,
        (x0 + 2.0, y0 + 0.35 * height),
    ]
    return catmull_rom(np.array(control, dtype=np.float64), 6)


def posterior_elements(body: Body, level: int, discs: tuple[float, float], rng: np.random.Generator) -> list[Part]:
    """Pedicle, left/right articular pillars, lamina, spinous/transverse/uncinate processes of one vertebra.

    Args:
        body: The vertebral body the elements hang on.
        level: Index into ``LEVELS``.
        discs: Disc heights above and below, mm (the pillars span them to form the facet joints).
        rng: Random generator.

    Returns:
        Parts in the spine frame; the pedicles, pillars and transverse processes overlap the posterior
        part of the body as they do on a lateral film.
    """
    a, b = body.shape.depth / 2, body.shape.height / 2
    width = rng.uniform(8.5, 11.0) * (1.15 if level == 0 else 1.0)
    cx, slope = -a - 8.5 + rng.normal(0.0, 0.8), np.tan(np.deg2rad(rng.uniform(30.0, 50.0)))
    top, bottom = -b - discs[0] * 0.5 + 0.7, b + discs[1] * 0.5 - 0.7
    parts = []
    for _ in range(2):  # left and right, imperfectly superimposed
        dx, dy = rng.normal(0.0, 0.9, 2)
        pedicle = stroke(polyline([(-a + 2.0, -0.3 * b + dy), (cx + dx, -0.3 * b + dy)], 6), 0.45 * body.shape.height)
        parts.append(Part(pedicle, 0.1))
        parts.append(Part(_parallelogram((cx + dx, 0.6 + dy), width, top, bottom, slope), 0.2, 0.12, 0.5))
    parts.append(Part(_arch(level, (cx - width / 2, 0.6, bottom - top), rng), 0.3, 0.18, 0.6))
    parts.append(Part(ellipse((-a * 0.4, -b * 0.1), 6.0, 4.0, rng.normal(0.0, 0.2)), 0.08))
    if level > 0:
        parts.append(Part(ellipse((-a * 0.6, -b - 0.5), 3.0, 1.5), 0.15))
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
    for name in spine.fused:
        upper, lower = spine.body(name), spine.bodies[LEVELS.index(name) + 1]
        parts.append(Part(fusion_bridge(upper.corners(), lower.corners()), density * 0.8, rim * 0.4, rim_mm))
    return parts


def fusion_bridge(upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """(4, 2) bone across a fused disc: from the upper body's inferior endplate to the lower one's superior endplate,
    inset 12% from the corners and reaching 0.8 mm into each body; corners (4, 2) in ``CORNER_NAMES`` order."""
    def inset(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return a + 0.12 * (b - a), b + 0.12 * (a - b)

    up_post, up_ant = inset(upper[2], upper[3])
    low_post, low_ant = inset(lower[0], lower[1])
    down = (low_post + low_ant - up_post - up_ant) / 2
    reach = 0.8 * down / max(float(np.hypot(*down)), 1e-6)
    return np.array([up_post - reach, up_ant - reach, low_ant + reach, low_post + reach])


def atlas_and_skull(spine: Spine, rng: np.random.Generator) -> list[Part]:
    """C1 arches and lateral masses, the occiput, clivus and mastoid, in the spine frame."""
    c2 = spine.body("C2")
    a, b = c2.shape.depth / 2, c2.shape.height / 2
    y1 = -b - 14.0 + rng.normal(0.0, 1.5)
    tip = -b - 17.0
    parts = [
        Part(ellipse((a + 2.5, y1), 3.4, 5.6, 0.2), 0.2, 0.35, 0.8),
        Part(stroke(polyline([(-a - 12.0, y1 + 1), (-a - 27.0, y1), (-a - 40.0, y1 + 3)], 10),
                    np.linspace(6.0, 9.0, 10)), 0.25, 0.3, 0.8),
        Part(ellipse((-a * 0.4, y1 - 2.0), 10.0, 6.5, 0.1), 0.12),
        Part(ellipse((0.0, tip - 12.0), 9.0, 14.0, 0.35), 0.22, 0.1, 1.0),
        Part(stroke(polyline([(a * 0.2, tip - 5.0), (a + 8.0, tip - 30.0)], 6), 9.0), 0.3, 0.2, 1.0),
    ]
    drop = rng.uniform(-5.0, 12.0)
    lower = [(-a - 8.0, tip - 6.0), (-a - 30.0, tip - 10.0 + drop * 0.3), (-a - 60.0, tip - 22.0 + drop),
             (-a - 95.0, tip - 50.0 + drop), (-a - 130.0, tip - 90.0 + drop)]
    edge = polyline(lower, 30)
    occiput = np.vstack([edge, [(-a - 160.0, tip - 200.0), (-a + 10.0, tip - 200.0)]])
    parts.append(Part(occiput, 0.45, 0.0))
    parts.append(Part(stroke(edge, 5.0), 0.35))
    return [Part(c2.to_spine(p.polygon), p.density, p.rim, p.rim_mm) for p in parts]


_MANDIBLE = np.array([(-15, -62), (-9, -35), (-4, -12), (2, -1), (14, 5), (40, 12), (95, 30), (97, -2), (60, -11),
                      (36, -15), (27, -30), (21, -50), (13, -66)], dtype=np.float64)
_MOLARS = ((44.0, -19.0), (55.0, -16.5), (66.0, -14.0))


def mandible_and_hyoid(spine: Spine, rng: np.random.Generator) -> list[Part]:
    """Both hemimandibles (ramus, angle, body, molar crowns) and the hyoid, in the spine frame."""
    c2, c3 = spine.body("C2"), spine.body("C3")
    gonion = (c2.center[0] + c2.shape.depth / 2 + rng.uniform(4.0, 16.0),
              (c2.center[1] + c3.center[1]) / 2 + rng.uniform(-8.0, 10.0))
    tilt = np.deg2rad(rng.normal(0.0, 6.0))
    parts = []
    for side in range(2):
        scale = 1.0 if side == 0 else rng.uniform(1.02, 1.08)
        shift = np.array(gonion) + (rng.uniform(1.0, 7.0, 2) if side else 0.0)
        parts.append(Part(place(catmull_rom(_MANDIBLE * scale, 6), tilt, shift), 0.18, 0.4, 2.0))
        if rng.random() < 0.7:
            for x, y in _MOLARS:
                crown = place(superellipse(5.0, 4.0, 3.0, 24), 0.0, (x, y - 4.0))
                parts.append(Part(place(crown * scale, tilt, shift), 0.55, 0.2, 0.8))
    c3_front = c3.center[0] + c3.shape.depth / 2
    hyoid = ellipse((c3_front + rng.uniform(22.0, 34.0), c3.center[1] + rng.uniform(0, 12)), 5.5, 2.2,
                    np.deg2rad(rng.uniform(-30.0, 0.0)))
    parts.append(Part(hyoid, 0.2, 0.25, 0.7))
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
    for upper, lower in zip(fused[:-1], fused[1:], strict=True):
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

