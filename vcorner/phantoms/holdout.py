"""A second phantom style, written apart from the training renderer and used **only for validation**: never for
training, tuning or choosing (``vcorner train`` and ``vcorner tune`` refuse a dataset of this style).

It keeps the project's anatomy conventions (lateral cervical film, patient facing right, C3-C7 annotated with
corners in ``vcorner.CORNER_NAMES`` order and a centroid click) and changes everything else: its own geometry
(a circular-arc spine, bodies as rounded wedge quadrilaterals with concave endplates cut by a morphological
opening, C2 with its dens, the atlas' anterior arch), its own rendering (cortical rims from a distance transform,
band-pass trabecular noise, an airway, shoulders that may cover C7, a skull base and mandible as arcs, a
logarithmic exposure with a detector blur and film-like gamma), and 8- or 16-bit PNG output. A corner is the
point of the rounded outline nearest to the sharp quadrilateral's corner.

Coordinates are image pixels (x right, y down); lengths in mm are converted with the film's pixel spacing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vcorner.io.records import ImageRecord, Vertebra

STYLE = "holdout"
"""The name ``phantoms.json`` records for this style; the training and tuning data loaders refuse it."""
LEVELS: tuple[str, ...] = ("C2", "C3", "C4", "C5", "C6", "C7", "T1")
ANNOTATED: tuple[str, ...] = ("C3", "C4", "C5", "C6", "C7")
SUPERSAMPLE = 4
"""Bodies are drawn at 4x the film's resolution before their corners are rounded, so outlines are sub-pixel."""


@dataclass(frozen=True)
class Body:
    """One vertebral body in image pixels.

    Attributes:
        name: level name.
        sharp: (4, 2) corners of the unrounded quadrilateral, ``CORNER_NAMES`` order.
        outline: (K, 2) rounded outline, closed, in contour order.
        corners: (4, 2) points of ``outline`` nearest to ``sharp``.
        mask: (H, W) bool body mask.
    """

    name: str
    sharp: np.ndarray
    outline: np.ndarray
    corners: np.ndarray
    mask: np.ndarray


def _frame(angle: float) -> tuple[np.ndarray, np.ndarray]:
    """(anterior, caudal) unit vectors of a body turned ``angle`` rad from upright (caudal = +y)."""
    caudal = np.array([-np.sin(angle), np.cos(angle)])
    return np.array([caudal[1], -caudal[0]]), caudal


def _body_polygon(centre: np.ndarray, angle: float, width: float, height: float, wedge: float, dip: float,
                  n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Sharp corners (4, 2) and a dense outline (px) of a wedge body with concave endplates (``dip`` px deep)."""
    anterior, caudal = _frame(angle)
    back, front = height / 2.0, height * (1.0 - wedge) / 2.0
    local = {"sl": (-width / 2, -back), "sr": (width / 2, -front), "il": (-width / 2, back), "ir": (width / 2, front)}
    to_px = {k: centre + a * anterior + b * caudal for k, (a, b) in local.items()}
    t = np.linspace(0.0, 1.0, n, endpoint=False)[:, None]
    bump = np.sin(np.pi * t) * dip
    top = to_px["sl"] + t * (to_px["sr"] - to_px["sl"]) + bump * caudal  # endplates dip into the body
    front_wall = to_px["sr"] + t * (to_px["ir"] - to_px["sr"])
    bottom = to_px["ir"] + t * (to_px["il"] - to_px["ir"]) - bump * caudal
    back_wall = to_px["il"] + t * (to_px["sl"] - to_px["il"])
    sharp = np.array([to_px["sl"], to_px["sr"], to_px["il"], to_px["ir"]])
    return sharp, np.vstack([top, front_wall, bottom, back_wall])


def _rounded_body(name: str, sharp: np.ndarray, polygons: list[np.ndarray], radius_px: float,
                  shape: tuple[int, int]) -> Body:
    """The body (the union of ``polygons``, px) with its corners rounded by an opening of ``radius_px``, drawn
    at :data:`SUPERSAMPLE` in its own bounding box."""
    s = SUPERSAMPLE
    points = np.vstack(polygons)
    x0, y0 = (np.floor(points.min(axis=0)) - 2).astype(int)
    x1, y1 = (np.ceil(points.max(axis=0)) + 3).astype(int)
    origin = np.array([x0, y0], dtype=np.float64)
    big = np.zeros(((y1 - y0) * s, (x1 - x0) * s), np.uint8)
    for polygon in polygons:
        cv2.fillPoly(big, [np.round((polygon - origin + 0.5) * s - 0.5).astype(np.int32)], 1)
    k = max(3, int(round(2 * radius_px * s)) | 1)
    big = cv2.morphologyEx(big, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outline = (max(contours, key=len)[:, 0, :].astype(np.float64) + 0.5) / s - 0.5 + origin
    nearest = [outline[int(np.argmin(np.hypot(*(outline - c).T)))] for c in sharp]
    local = cv2.resize(big.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA) > 0.5
    mask = np.zeros(shape, bool)
    top, bottom, left, right = max(y0, 0), min(y1, shape[0]), max(x0, 0), min(x1, shape[1])
    if top < bottom and left < right:  # a level drawn partly (or wholly) outside the film keeps what shows
        mask[top:bottom, left:right] = local[top - y0:bottom - y0, left - x0:right - x0]
    return Body(name, sharp, outline, np.array(nearest), mask)


def _band_noise(shape: tuple[int, int], fine: float, coarse: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-sd band-pass noise (a difference of Gaussians of white noise), float32."""
    white = rng.standard_normal(shape).astype(np.float32)
    band = cv2.GaussianBlur(white, (0, 0), fine) - cv2.GaussianBlur(white, (0, 0), coarse)
    return band / max(float(band.std()), 1e-6)


def _arc(canvas: np.ndarray, centre: tuple[float, float], axes: tuple[float, float], angle: float,
         span: tuple[float, float], thickness: int, value: float) -> None:
    """Add ``value`` along an elliptic arc (degrees ``span``) of ``thickness`` px into ``canvas``, in place."""
    layer = np.zeros_like(canvas)
    cv2.ellipse(layer, (int(centre[0]), int(centre[1])), (max(1, int(axes[0])), max(1, int(axes[1]))), angle,
                span[0], span[1], value, thickness, cv2.LINE_AA)
    canvas += layer


@dataclass(frozen=True)
class SpineShape:
    """A spine drawn per film (mm): arc curvature (1/mm; negative bends the lower levels posteriorly, which
    makes the lordosis), tilt (rad), body widths and heights per level of :data:`LEVELS`, and disc height."""

    curvature: float
    tilt: float
    widths: np.ndarray
    heights: np.ndarray
    disc: float

    def length_to(self, level: str) -> float:
        """Arc length (mm) from the top of C2 to the bottom of ``level``."""
        i = LEVELS.index(level) + 1
        return float(self.heights[:i].sum() + (i - 1) * self.disc)


def sample_spine_shape(rng: np.random.Generator) -> SpineShape:
    """Sizes after published adult cervical means (bodies about 15-17 mm deep, 13-15 mm tall), varied per film."""
    heights = np.linspace(13.5, 14.5, len(LEVELS)) * rng.uniform(0.85, 1.1)
    heights[0] *= 1.55  # C2 is tall
    return SpineShape(-rng.uniform(-0.004, 0.012), np.deg2rad(rng.uniform(-12.0, 12.0)),
                      np.linspace(15.0, 17.5, len(LEVELS)) * rng.uniform(0.88, 1.12), heights,
                      rng.uniform(3.5, 6.0))


def _arc_point(s: float, tilt: float, curvature: float) -> np.ndarray:
    """Point (mm) at arc length ``s`` of a circle of ``curvature`` that starts downwards, turned by ``tilt``."""
    if abs(curvature) < 1e-9:
        local = np.array([0.0, s])
    else:
        phi = curvature * s
        local = np.array([(1 - np.cos(phi)) / curvature, np.sin(phi) / curvature])
    c, sn = np.cos(tilt), np.sin(tilt)
    return np.array([c * local[0] - sn * local[1], sn * local[0] + c * local[1]])


def _spine_bodies(spine: SpineShape, start: np.ndarray, spacing: float, shape: tuple[int, int],
                  rng: np.random.Generator) -> list[Body]:
    """C2-T1 along the arc from ``start`` (px, the top of C2)."""
    mm = 1.0 / spacing
    bodies, s = [], 0.0
    for i, name in enumerate(LEVELS):
        s += spine.heights[i] / 2
        angle = spine.tilt - spine.curvature * s  # each body turns with the arc's tangent
        centre = start + _arc_point(s, spine.tilt, spine.curvature) * mm
        wedge = 0.0 if name == "C2" else rng.uniform(-0.05, 0.12)
        sharp, polygon = _body_polygon(centre, angle, spine.widths[i] * mm, spine.heights[i] * mm, wedge,
                                       rng.uniform(0.2, 0.9) * mm)
        polygons = [polygon]
        if name == "C2":  # the dens: a rounded peg above the body, a little posterior of its middle
            anterior, caudal = _frame(angle)
            base = centre - caudal * spine.heights[i] * mm / 2 - anterior * 0.1 * spine.widths[i] * mm
            polygons.append(np.array([base + (dx * anterior - dy * caudal) * mm for dx, dy in
                                      ((-3.5, -1.0), (3.5, -1.0), (3.0, 9.0), (1.5, 12.0), (-1.5, 12.0), (-3.0, 9.0))]))
        bodies.append(_rounded_body(name, sharp, polygons, rng.uniform(0.8, 1.8) * mm, shape))
        s += spine.heights[i] / 2 + spine.disc
    return bodies


def _posterior(canvas: np.ndarray, body: Body, rng: np.random.Generator, mm: float, value: float) -> None:
    """Pedicle ring, facet and spinous process behind ``body``, added into ``canvas`` (in place)."""
    back_mid = (body.sharp[0] + body.sharp[2]) / 2
    caudal = body.sharp[2] - body.sharp[0]
    caudal /= max(np.linalg.norm(caudal), 1e-9)
    anterior = np.array([caudal[1], -caudal[0]])
    ring = back_mid - anterior * rng.uniform(5.0, 7.0) * mm
    angle = np.rad2deg(np.arctan2(caudal[1], caudal[0]))
    _arc(canvas, tuple(ring), (6.0 * mm, 4.5 * mm), angle, (0, 360), max(1, int(1.6 * mm)), value)
    length = rng.uniform(14.0, 24.0) * mm * (1.4 if body.name == "C7" else 1.0)
    tip = ring - anterior * length + caudal * rng.uniform(3.0, 8.0) * mm
    root = [ring - anterior * 3 * mm - caudal * 3 * mm, ring - anterior * 3 * mm + caudal * 3 * mm]
    layer = np.zeros_like(canvas)
    cv2.fillPoly(layer, [np.round(np.array([root[0], tip, root[1]])).astype(np.int32)], value, cv2.LINE_AA)
    canvas += cv2.GaussianBlur(layer, (0, 0), 0.6)


def render_holdout(rng: np.random.Generator) -> tuple[np.ndarray, ImageRecord, dict]:
    """One film of the validation-only style.

    Returns:
        pixels (H, W) float32 in [0, 1] (bone bright), its record (C3-C7 with centroid clicks, corners and
        boundaries, ``pixel_spacing_mm``) and what was drawn (for ``phantoms.json``).
    """
    spacing = float(rng.uniform(0.1, 0.2))
    mm = 1.0 / spacing
    for _ in range(50):  # a spine whose annotated levels lie inside the film, at least 3 mm from its edges
        spine = sample_spine_shape(rng)
        width_mm = rng.uniform(105.0, 145.0)
        top_mm = rng.uniform(12.0, 30.0)  # room for the dens and the skull base above C2
        height_mm = max(width_mm * rng.uniform(1.1, 1.45), top_mm + spine.length_to("C7") + rng.uniform(4.0, 25.0))
        shape = (int(height_mm * mm), int(width_mm * mm))
        h, w = shape
        start = np.array([w * rng.uniform(0.38, 0.55), top_mm * mm])
        bodies = _spine_bodies(spine, start, spacing, shape, rng)
        corners = np.vstack([b.sharp for b in bodies if b.name in ANNOTATED])
        if np.all((corners >= 3 * mm) & (corners <= np.array([w, h]) - 1 - 3 * mm)):
            break
    info = {"curvature_per_mm": round(spine.curvature, 5), "tilt_deg": round(float(np.rad2deg(spine.tilt)), 2),
            "disc_mm": round(spine.disc, 2)}
    attenuation = np.zeros(shape, np.float32)
    # soft tissue of the neck: a smooth slab around the spine, with the airway in front of it
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    spine_x = np.interp(yy[:, 0], [b.outline[:, 1].mean() for b in bodies], [b.outline[:, 0].mean() for b in bodies])
    neck = np.exp(-(((xx - spine_x[:, None]) / (rng.uniform(45, 60) * mm)) ** 2) ** 1.5)
    attenuation += rng.uniform(0.25, 0.45) * neck
    airway = np.exp(-(((xx - spine_x[:, None] - rng.uniform(22, 30) * mm) / (rng.uniform(5, 8) * mm)) ** 2))
    below_jaw = 1.0 / (1.0 + np.exp(-(yy - h * rng.uniform(0.15, 0.3)) / (4.0 * mm)))
    attenuation -= rng.uniform(0.1, 0.2) * airway * below_jaw
    # skull base and mandible (context above C2), shoulders that may cover C7
    c2 = bodies[0].outline.mean(axis=0)
    _arc(attenuation, (c2[0] - 25 * mm, c2[1] - 40 * mm), (70 * mm, 35 * mm), rng.uniform(-10, 10), (0, 180),
         int(6 * mm), rng.uniform(0.5, 0.8))
    _arc(attenuation, (c2[0] + 45 * mm, c2[1] - 10 * mm), (40 * mm, 25 * mm), rng.uniform(10, 30), (20, 160),
         int(4 * mm), rng.uniform(0.4, 0.7))
    shoulder_y = bodies[LEVELS.index("C7")].outline[:, 1].mean() + rng.uniform(-5, 25) * mm
    shoulder = np.exp(-(((xx - spine_x[:, None] + 10 * mm) / (70 * mm)) ** 2) - ((np.maximum(shoulder_y - yy, 0))
                                                                                 / (8 * mm)) ** 2)
    attenuation += rng.uniform(0.3, 0.7) * shoulder
    # the atlas' anterior arch in front of the dens
    arch = bodies[0].sharp[1] + np.array([4.0, -9.0]) * mm
    _arc(attenuation, tuple(arch), (4 * mm, 6 * mm), 0, (0, 360), -1, rng.uniform(0.5, 0.8))
    # bodies: cortical rim brighter than the trabecular core, with band-pass texture
    texture = _band_noise(shape, 0.35 * mm, 1.5 * mm, rng)
    density, rim_gain = rng.uniform(0.5, 0.8), rng.uniform(0.4, 0.9)
    posterior = np.zeros(shape, np.float32)
    for body in bodies:
        ys, xs = np.nonzero(body.mask)
        if len(ys) == 0:
            continue
        box = slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)
        mask = body.mask[box].astype(np.uint8)
        inside = cv2.distanceTransform(np.pad(mask, 1), cv2.DIST_L2, 3)[1:-1, 1:-1] * spacing  # mm from the edge
        rim = np.exp(-inside / rng.uniform(0.6, 1.2)) * mask
        attenuation[box] += mask * density * (1 + 0.15 * texture[box]) + rim_gain * rim
        _posterior(posterior, body, rng, mm, rng.uniform(0.4, 0.7))
    attenuation += posterior
    # exposure: transmitted fraction, detector blur and noise, log display with a film-like gamma
    transmitted = np.exp(-rng.uniform(1.2, 2.0) * np.maximum(attenuation, 0))
    transmitted = cv2.GaussianBlur(transmitted, (0, 0), rng.uniform(0.5, 1.3))
    photons = rng.uniform(400, 3000)
    transmitted = rng.poisson(transmitted * photons).astype(np.float32) / photons
    image = -np.log(np.maximum(transmitted, 1.0 / photons))
    low, high = np.percentile(image, [0.5, 99.8])
    image = np.clip((image - low) / max(high - low, 1e-6), 0, 1) ** rng.uniform(0.7, 1.4)
    vertebrae = []
    for body in bodies:
        if body.name not in ANNOTATED:
            continue
        click = body.corners.mean(axis=0) + rng.normal(0.0, rng.uniform(1.0, 3.0), 2)
        step = max(1, len(body.outline) // 16)
        vertebrae.append(Vertebra(body.name, click, body.corners.copy(), body.outline[::step].copy()))
    record = ImageRecord("", tuple(vertebrae), round(spacing, 5))
    return image.astype(np.float32), record, {"style": STYLE, **info, "shape": list(shape)}


def write_holdout(out, index: int, seq: np.random.SeedSequence) -> tuple[ImageRecord, dict]:
    """Render film ``index`` of a validation-only dataset from its seed and write it as PNG (8- or 16-bit)."""
    from pathlib import Path

    from vcorner.phantoms.files import write_image

    rng = np.random.default_rng(seq)
    pixels, record, info = render_holdout(rng)
    deep = index % 2 == 1
    name = f"holdout_{index:05d}.png"
    quantized = np.round(pixels * (65535.0 if deep else 255.0)).astype(np.uint16 if deep else np.uint8)
    write_image(Path(out) / name, quantized)
    return ImageRecord(name, record.vertebrae, record.pixel_spacing_mm), {"file": name, **info}


def is_holdout(folder) -> bool:
    """True when ``folder`` holds a dataset of this style (its ``phantoms.json`` says so)."""
    from pathlib import Path

    from vcorner.io.claims import json_field

    return json_field(Path(folder) / "phantoms.json", "style") == STYLE


def refuse_holdout(folder, use: str) -> None:
    """Refuse ``use`` (training, tuning: anything that chooses) of a validation-only dataset.

    Raises:
        InputError: one line naming the folder.
    """
    from vcorner.io.records import InputError

    if is_holdout(folder):
        raise InputError(f"{folder}: a '{STYLE}' phantom set is for validation only; {use} on it would make it "
                         "one more world the models were tuned on (render another with vcorner synth OUT)")
