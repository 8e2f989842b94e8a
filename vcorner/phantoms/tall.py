"""Tall many-level phantoms: lateral thoracolumbar films with T1-L5 annotated (``vcorner synth OUT --style tall``),
to train and test a centre detector on 17 levels (README.md, "Many-level films").

A film about 1:2.5 (170-230 mm wide, up to about 560 mm tall, 0.3-0.5 mm per pixel) shows C5 to the sacrum: a
spine along a smooth sagittal curve (cervical lordosis, thoracic kyphosis of 20-55 degrees, lumbar lordosis of
30-65 degrees, a global tilt), bodies that grow caudally (T1 about 15 mm tall and 17 mm deep, L5 about 27 by 35),
thin thoracic and thick lumbar discs, now and then a wedge fracture; posterior elements, ribs on T1-T12 (a short
last one), lungs above a domed diaphragm, shoulders over the cervicothoracic junction, the iliac wing and the
sacrum. Exposure as in the holdout style: logarithmic, with blur, Poisson noise, an illumination gradient and a
film-like gamma, contrast from strong to weak. Two films in five are cropped: the view starts between T2 and T8,
or ends between T11 and L4, so some levels are missing (a level is annotated only when its corners lie inside).

The bodies' geometry reuses the holdout style's drawing helpers (rounded wedge quadrilaterals with concave
endplates, :mod:`vcorner.phantoms.holdout`); the anatomy, scene and crops are this module's. Coordinates are image
pixels (x right = anterior, y down); lengths in mm are converted with the film's pixel spacing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from vcorner.io.records import ImageRecord, Vertebra
from vcorner.phantoms.holdout import Body, _arc, _band_noise, _body_polygon, _posterior, _rounded_body

STYLE = "tall"
ANNOTATED: tuple[str, ...] = tuple(f"T{i}" for i in range(1, 13)) + tuple(f"L{i}" for i in range(1, 6))
LEVELS: tuple[str, ...] = ("C5", "C6", "C7", *ANNOTATED, "S1")
CROP_SHARE = 0.4
"""Share of cropped films (half start low, half end high)."""


def _sizes(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heights, depths (mm) of every level of :data:`LEVELS` and the disc below each, growing caudally."""
    scale = rng.uniform(0.88, 1.12)
    t = np.linspace(0.0, 1.0, 17)  # T1 .. L5
    heights = np.concatenate([[13.0, 13.2, 13.5], 15.0 + 12.0 * t**0.8, [30.0]]) * scale
    depths = np.concatenate([[15.5, 16.0, 16.5], 17.0 + 18.0 * t**0.9, [42.0]]) * scale * rng.uniform(0.92, 1.08)
    discs = np.concatenate([[5.0, 5.0, 5.0], 3.5 + 2.0 * t[:12], 8.0 + 3.0 * t[12:] / t[-1], [0.0]]) * scale
    return heights * rng.uniform(0.95, 1.05, len(LEVELS)), depths, discs * rng.uniform(0.8, 1.2, len(LEVELS))


def _curve(lengths: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) points (mm, x anterior, y caudal) and (N,) angles (rad from downright, positive leaning the
    caudal direction posteriorly) at every mm of arc length along a spine whose regions end at ``lengths``
    (cervical, thoracic, lumbosacral)."""
    s = np.arange(0.0, lengths[-1] + 1.0)
    kyphosis, lordosis = np.deg2rad(rng.uniform(20, 55)), np.deg2rad(rng.uniform(30, 65))
    bend = np.where(s < lengths[0], np.deg2rad(rng.uniform(5, 20)) / lengths[0],
                    np.where(s < lengths[1], -kyphosis / (lengths[1] - lengths[0]),
                             lordosis / (lengths[2] - lengths[1])))
    bend = cv2.GaussianBlur(bend[None].astype(np.float64), (0, 0), 15.0, borderType=cv2.BORDER_REPLICATE)[0]
    angle = np.cumsum(bend)
    angle += np.deg2rad(rng.uniform(-8, 8)) - angle[(s >= lengths[0]) & (s < lengths[2])].mean()
    step = np.stack([-np.sin(angle), np.cos(angle)], axis=1)
    return np.cumsum(step, axis=0) - step[0], angle


def _spine(rng: np.random.Generator) -> list[tuple[str, np.ndarray, float, float, float]]:
    """Each level's (name, centre mm, angle rad, depth mm, height mm) along a sampled sagittal curve."""
    heights, depths, discs = _sizes(rng)
    tops = np.concatenate([[0.0], np.cumsum(heights + discs)[:-1]])
    centres = tops + heights / 2
    ends = [tops[LEVELS.index("T1")], tops[LEVELS.index("L1")], tops[-1] + heights[-1]]
    points, angles = _curve(np.array(ends), rng)
    index = np.round(centres).astype(int)
    return [(name, points[i], float(angles[i]), float(depths[k]), float(heights[k]))
            for k, (name, i) in enumerate(zip(LEVELS, index, strict=True))]


def _view(levels: list, rng: np.random.Generator) -> tuple[float, float, str]:
    """Top and bottom of the film (mm, the curve's y) and how it is cropped (``full``, ``top``, ``bottom``)."""
    y = {name: float(c[1]) for name, c, _, _, h in levels}
    half = {name: h / 2 for name, _, _, _, h in levels}
    top = rng.uniform(y["C5"] - 10.0, y["T1"] - half["T1"] - 8.0)
    bottom = rng.uniform(y["L5"] + half["L5"] + 10.0, y["S1"] + 40.0)
    draw = rng.random()
    if draw < CROP_SHARE / 2:
        return rng.uniform(y["T2"] - half["T2"], y["T8"] + half["T8"]), bottom, "top"
    if draw < CROP_SHARE:
        return top, rng.uniform(y["T11"] - half["T11"], y["L4"] + half["L4"]), "bottom"
    return top, bottom, "full"


def _ribs(canvas: np.ndarray, body: Body, mm: float, rng: np.random.Generator, last: bool) -> None:
    """Two ribs (left and right, magnified differently) from behind a thoracic ``body``, sweeping anteriorly and
    down across the chest; the last one short. In place."""
    back = (body.sharp[0] + body.sharp[2]) / 2
    for side in range(2):
        reach = (rng.uniform(25, 40) if last else rng.uniform(90, 140)) * mm * (1.0 + 0.06 * side)
        centre = back + np.array([reach * 0.55, rng.uniform(8, 20) * mm])
        span = (200, 300) if last else (195, 345)
        _arc(canvas, tuple(centre), (reach * 0.7, rng.uniform(35, 55) * mm), rng.uniform(5, 25), span,
             max(1, int(rng.uniform(3.5, 6.0) * mm)), rng.uniform(0.08, 0.18))


def spine_grid(shape: tuple[int, int], bodies: list[Body]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel rows ``yy`` and columns ``xx`` (H, W) of a film of ``shape``, and (H, 1) the x of the spine's line (the
    bodies' centres, interpolated) on every row."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ys = np.array([b.sharp.mean(axis=0)[1] for b in bodies])
    xs = np.array([b.sharp.mean(axis=0)[0] for b in bodies])
    return yy, xx, np.interp(yy[:, 0], ys, xs)[:, None]


def _scene(shape: tuple[int, int], bodies: list[Body], mm: float, rng: np.random.Generator) -> np.ndarray:
    """Attenuation of everything but the bodies: soft tissue, lungs and diaphragm, shoulders, ribs, the pelvis."""
    named = {b.name: b for b in bodies}
    yy, xx, spine_x = spine_grid(shape, bodies)
    attenuation = rng.uniform(0.35, 0.55) * np.ones(shape, np.float32)
    attenuation += rng.uniform(0.05, 0.15) * np.exp(-(((xx - spine_x) / (80 * mm)) ** 2))  # paraspinal muscles
    # lungs: from the apex to a domed diaphragm (higher in front), anterior to the back muscles
    dome = named["T11"].sharp.mean(axis=0)[1] - (xx - spine_x) * rng.uniform(0.15, 0.35) - \
        rng.uniform(0, 30) * mm * np.exp(-(((xx - spine_x - 70 * mm) / (60 * mm)) ** 2))
    apex = named["T1"].sharp.mean(axis=0)[1] - rng.uniform(10, 30) * mm
    inside = (1 / (1 + np.exp(-(yy - apex) / (8 * mm)))) * (1 / (1 + np.exp((yy - dome) / (5 * mm))))
    inside *= 1 / (1 + np.exp(-(xx - spine_x + rng.uniform(30, 50) * mm) / (6 * mm)))
    attenuation -= rng.uniform(0.15, 0.3) * inside
    # shoulders and scapulae over the cervicothoracic junction
    top = named[str(rng.choice(["C7", "T1", "T2", "T3"]))].sharp.mean(axis=0)
    attenuation += rng.uniform(0.1, 0.5) * np.exp(-(((xx - top[0] + 20 * mm) / (70 * mm)) ** 2)
                                                  - (np.maximum(yy - top[1], 0) / (25 * mm)) ** 2
                                                  - (np.maximum(top[1] - yy, 0) / (80 * mm)) ** 2)
    ribs = np.zeros(shape, np.float32)
    for name in ANNOTATED[:12]:
        _ribs(ribs, named[name], mm, rng, last=name == "T12")
    attenuation += cv2.GaussianBlur(ribs, (0, 0), 0.8)
    # the iliac wing: a cortical ring with a faint fill, around L5 and S1
    hip = named["L5"].sharp.mean(axis=0) + np.array([rng.uniform(-10, 25), rng.uniform(10, 35)]) * mm
    axes = (rng.uniform(50, 70) * mm, rng.uniform(40, 55) * mm)
    angle = rng.uniform(-20, 20)
    _arc(attenuation, tuple(hip), axes, angle, (0, 360), max(1, int(4 * mm)), rng.uniform(0.2, 0.4))
    _arc(attenuation, tuple(hip), axes, angle, (0, 360), -1, rng.uniform(0.05, 0.15))
    return attenuation


def _expose(attenuation: np.ndarray, rng: np.random.Generator, severe: bool) -> np.ndarray:
    """Display image in [0, 1]: transmitted fraction with an illumination gradient, detector blur and Poisson
    noise, logarithm, windowing and a film-like gamma."""
    h, w = attenuation.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = 1.0 + rng.uniform(-0.3, 0.3) * (yy / h - 0.5) + rng.uniform(-0.2, 0.2) * (xx / w - 0.5)
    transmitted = np.exp(-rng.uniform(1.0, 2.0) * np.maximum(attenuation, 0)) * ramp
    transmitted = cv2.GaussianBlur(transmitted.astype(np.float32), (0, 0), rng.uniform(0.4, 1.4))
    photons = rng.uniform(80, 250) if severe else rng.uniform(300, 3000)
    transmitted = rng.poisson(np.maximum(transmitted, 0) * photons).astype(np.float32) / photons
    image = -np.log(np.maximum(transmitted, 1.0 / photons))
    low, high = np.percentile(image, [rng.uniform(0.2, 3.0), rng.uniform(99.0, 99.9)])
    return np.clip((image - low) / max(high - low, 1e-6), 0, 1) ** rng.uniform(0.6, 1.5)


def render_tall(rng: np.random.Generator) -> tuple[np.ndarray, ImageRecord, dict]:
    """One tall film.

    Returns:
        pixels (H, W) float32 in [0, 1] (bone bright), its record (the levels of T1-L5 inside the film, cranial
        first, with centroid clicks, corners and boundaries, ``pixel_spacing_mm``) and what was drawn.
    """
    spacing = float(rng.uniform(0.3, 0.5))
    mm = 1.0 / spacing
    levels = _spine(rng)
    top, bottom, crop = _view(levels, rng)
    shown = np.array([c[0] for _, c, _, _, _ in levels if top <= c[1] <= bottom])
    span = float(shown.max() - shown.min())
    width = max(rng.uniform(170.0, 230.0), span + 110.0)  # every shown body inside, 45 mm or more from the sides
    left = float(shown.min()) - rng.uniform(45.0, width - span - 45.0)
    shape = (int((bottom - top) * mm), int(width * mm))
    origin = np.array([left, top])
    low_density = rng.random() < 0.15
    bodies, fractured = [], []
    for name, centre, angle, depth, height in levels:
        wedge = rng.uniform(-0.03, 0.1) if name.startswith("T") else rng.uniform(-0.1, 0.04)
        if name in ANNOTATED and rng.random() < 0.03:
            wedge, fractured = rng.uniform(0.2, 0.4), [*fractured, name]
        sharp, polygon = _body_polygon((centre - origin) * mm, angle + (np.deg2rad(25) if name == "S1" else 0),
                                       depth * mm, height * mm, wedge, rng.uniform(0.3, 1.2) * mm)
        polygons = [polygon]
        if name == "S1":  # the fused sacrum tapering below S1
            below = sharp[2:] + (sharp[2:] - sharp[:2]) * np.array([[1.8], [1.6]])
            polygons.append(np.array([sharp[2], sharp[3], below[1] - (below[1] - below[0]) * 0.3, below[0]]))
        bodies.append(_rounded_body(name, sharp, polygons, rng.uniform(1.0, 2.5) * mm, shape))
    attenuation = _scene(shape, bodies, mm, rng)
    texture = _band_noise(shape, 0.5 * mm, 2.0 * mm, rng)
    density = rng.uniform(0.45, 0.75) * (rng.uniform(0.4, 0.6) if low_density else 1.0)
    rim_gain = rng.uniform(0.3, 0.8) * (0.6 if low_density else 1.0)
    posterior = np.zeros(shape, np.float32)

    def behind(body: Body) -> None:
        size = np.linalg.norm(body.sharp[1] - body.sharp[0]) / mm / 16.0  # posterior elements grow with the body
        _posterior(posterior, body, rng, mm * size, rng.uniform(0.3, 0.6))

    fill_bodies(attenuation, bodies, texture, (density, rim_gain), spacing, behind)
    attenuation += posterior
    severe = rng.random() < 0.15
    image = _expose(attenuation, rng, severe)
    vertebrae = annotated_bodies(bodies, shape, mm, rng)
    info = {"style": STYLE, "crop": crop, "shape": list(shape), "fractured": fractured,
            "low_density": bool(low_density), "severe_noise": bool(severe)}
    return image.astype(np.float32), ImageRecord("", vertebrae, round(spacing, 5)), info


def fill_bodies(attenuation: np.ndarray, bodies: list[Body], texture: np.ndarray, gains: tuple[float, float],
                spacing: float, behind: Callable[[Body], None]) -> None:
    """Add each body's bone into ``attenuation`` (in place): a fill of ``gains[0]`` grained by ``texture`` and a
    cortical rim of ``gains[1]`` falling off over a millimetre (``spacing``: mm per pixel), then ``behind(body)`` for
    every body but the sacrum (its posterior elements)."""
    density, rim_gain = gains
    for body in bodies:
        ys, xs_ = np.nonzero(body.mask)
        if len(ys) == 0:
            continue
        box = slice(ys.min(), ys.max() + 1), slice(xs_.min(), xs_.max() + 1)
        mask = body.mask[box].astype(np.uint8)
        inside = cv2.distanceTransform(np.pad(mask, 1), cv2.DIST_L2, 3)[1:-1, 1:-1] * spacing
        attenuation[box] += mask * density * (1 + 0.2 * texture[box]) + rim_gain * np.exp(-inside) * mask
        if body.name != "S1":
            behind(body)


def annotated_bodies(bodies: list[Body], shape: tuple[int, int], mm: float,
                     rng: np.random.Generator) -> tuple[Vertebra, ...]:
    """The bodies of :data:`ANNOTATED` whose sharp corners lie at least 1 mm inside the film (``shape``; ``mm``:
    pixels per mm), cranial first, each with a click near its middle, its exact corners and 16 outline points."""
    limit = np.array([shape[1], shape[0]]) - 1 - 1.0 * mm
    vertebrae = []
    for body in bodies:
        if body.name not in ANNOTATED or not np.all((body.sharp >= 1.0 * mm) & (body.sharp <= limit)):
            continue
        click = body.corners.mean(axis=0) + rng.normal(0.0, rng.uniform(0.2, 0.6) * mm, 2)
        step = max(1, len(body.outline) // 16)
        vertebrae.append(Vertebra(body.name, click, body.corners.copy(), body.outline[::step].copy()))
    return tuple(vertebrae)


def write_film(render: Callable[[np.random.Generator], tuple[np.ndarray, ImageRecord, dict]], prefix: str, out,
               index: int, seq: np.random.SeedSequence) -> tuple[ImageRecord, dict]:
    """Render film ``index`` from its seed with ``render`` and write it as ``{prefix}_{index:05d}.png`` (8-bit, every
    second one 16-bit)."""
    from vcorner.phantoms.files import write_image

    pixels, record, info = render(np.random.default_rng(seq))
    deep = index % 2 == 1
    name = f"{prefix}_{index:05d}.png"
    stored = np.round(pixels * (65535.0 if deep else 255.0)).astype(np.uint16 if deep else np.uint8)
    write_image(Path(out) / name, stored)
    return ImageRecord(name, record.vertebrae, record.pixel_spacing_mm), {"file": name, **info}


def write_tall(out, index: int, seq: np.random.SeedSequence) -> tuple[ImageRecord, dict]:
    """Render film ``index`` of a tall dataset from its seed and write it as PNG (8- or 16-bit)."""
    return write_film(render_tall, "tall", out, index, seq)
