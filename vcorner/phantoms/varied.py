"""Domain-randomized lateral C-spine films: the same anatomy as the training renderer, drawn with primitives whose
look is drawn anew for every film (``vcorner synth --style varied``; README.md, "A wider training world").

The training renderer (:mod:`vcorner.phantoms.dataset`) makes one kind of film: a detector trained on it alone
learns that kind's textures, and names the levels of a film drawn otherwise one level off. Here every film draws
its own style: the background and neck (dark or bright, with or without soft tissue and shoulders), the bodies'
fill, rim, texture and edge, the dens and atlas, the posterior elements (none, bars, spinous triangles, pedicle
rings, blobs or overlapping laminae), the skull base and mandible (arcs, filled or outlined), clutter, blur, noise
and the tone curve, and the field of view (from well above the skull base to below T2, or tight on C2-T1). What
stays is what identifies a level: C2 with its dens on top, five bodies below it, T1 at the bottom. The annotations
are the anatomy's own (:func:`vcorner.phantoms.annotate.annotate`): C2-T1, each where its centre lies inside the
film.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vcorner.io.records import ImageRecord
from vcorner.phantoms.anatomy import LEVELS, Body, Spine
from vcorner.phantoms.annotate import annotate, exact_record
from vcorner.phantoms.pathology import sample_spine_with
from vcorner.phantoms.render import Placement
from vcorner.phantoms.shapes import place, rotation

STYLE = "varied"
POSTERIOR = ("none", "bar", "triangle", "ring", "blob", "laminae")
"""How a film draws the posterior elements of every level (one kind per film)."""
_SHIFT = 4
_ONE = 1 << _SHIFT


def _poly(canvas: np.ndarray, points_px: np.ndarray, value: float, thickness: int = -1) -> None:
    """Draw (N, 2) pixel polygon ``points_px`` into ``canvas`` (in place): filled (``thickness`` -1) or outlined."""
    pts = np.round(np.asarray(points_px) * _ONE).astype(np.int32)[None]
    if thickness < 0:
        cv2.fillPoly(canvas, pts, float(value), cv2.LINE_AA, _SHIFT)
    else:
        cv2.polylines(canvas, pts, True, float(value), max(1, thickness), cv2.LINE_AA, _SHIFT)


def _ellipse(centre: np.ndarray, axes: tuple[float, float], angle: float, n: int = 48,
             arc: tuple[float, float] = (0.0, 2 * np.pi)) -> np.ndarray:
    """(n, 2) points on an ellipse (or an arc of it), mm, turned by ``angle`` radians."""
    t = np.linspace(arc[0], arc[1], n)
    return place(np.c_[axes[0] * np.cos(t), axes[1] * np.sin(t)], angle, centre)


def _body_frame(body: Body) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (anterior, caudal) of ``body`` in the spine frame."""
    r = rotation(body.angle)
    return r @ np.array([1.0, 0.0]), r @ np.array([0.0, 1.0])


def _depth_height(body: Body) -> tuple[float, float]:
    """Anteroposterior depth and height of a body, mm (from its corners)."""
    c = body.corners()
    return float(np.linalg.norm(c[1] - c[0])), float(np.linalg.norm(c[2] - c[0]))


def _placement(spine: Spine, rng: np.random.Generator) -> Placement:
    """A field of view from above C2 (up to the skull base) to below T1 (down to T2 and beyond), tilted up to
    12 degrees, 700-1600 pixels tall."""
    top = spine.body("C2").center[1] - rng.uniform(15.0, 80.0)
    bottom = spine.body("T1").center[1] + rng.uniform(-2.0, 60.0)
    height_px = float(rng.uniform(700.0, 1600.0))
    spacing = (bottom - top) / height_px
    width_px = height_px * float(rng.uniform(0.65, 1.15))
    x_mid = float(np.mean([b.center[0] for b in spine.bodies])) + rng.uniform(-0.25, 0.25) * width_px * spacing
    angle = float(np.deg2rad(rng.uniform(-12.0, 12.0)))
    shape = (int(round(height_px)), int(round(width_px)))
    centre_px = place(np.array([[x_mid, (top + bottom) / 2]]) / spacing, angle, (0.0, 0.0))[0]
    offset = np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2]) - centre_px
    return Placement(spacing, angle, offset, shape)


def _texture(shape: tuple[int, int], scale_px: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W) zero-mean unit-sd noise blurred to ``scale_px``."""
    field = cv2.GaussianBlur(rng.normal(0.0, 1.0, shape).astype(np.float32), (0, 0), max(scale_px, 0.3))
    return field / (field.std() + 1e-6)


def _soft_tissue(canvas: np.ndarray, spine: Spine, p: Placement, rng: np.random.Generator) -> list[str]:
    """Neck, shoulders, skull base and mandible as smooth or outlined shapes (in place); what was drawn."""
    drawn = []
    mm = 1.0 / p.spacing
    if rng.random() < 0.75:  # the neck: a band around the spine, anterior and posterior soft tissue
        front, back = rng.uniform(20.0, 45.0), rng.uniform(45.0, 85.0)
        curve = spine.curve
        band = np.vstack([curve + [front, 0.0], (curve - [back, 0.0])[::-1]])
        layer = np.zeros_like(canvas)
        _poly(layer, p.to_px(band), rng.uniform(0.05, 0.3))
        canvas += cv2.GaussianBlur(layer, (0, 0), rng.uniform(3.0, 15.0) * mm)
        drawn.append("neck")
    if rng.random() < 0.6:  # shoulders: a bright mass from one side over the lower levels
        t1 = spine.body("T1").center
        y = t1[1] - rng.uniform(-10.0, 30.0)
        side = rng.choice([-1.0, 1.0])
        blob = _ellipse(np.array([t1[0] + side * rng.uniform(0.0, 40.0), y + 80.0]),
                        (rng.uniform(80.0, 160.0), 80.0), rng.uniform(-0.3, 0.3))
        layer = np.zeros_like(canvas)
        _poly(layer, p.to_px(blob), rng.uniform(0.1, 0.5))
        canvas += cv2.GaussianBlur(layer, (0, 0), rng.uniform(4.0, 20.0) * mm)
        drawn.append("shoulders")
    c2 = spine.body("C2")
    anterior, caudal = _body_frame(c2)
    value, width = rng.uniform(0.15, 0.7), int(max(1, rng.uniform(1.0, 5.0) * mm))
    filled = rng.random() < 0.4
    layer = np.zeros_like(canvas)
    if rng.random() < 0.8:  # skull base and occiput: an arc above and behind the dens
        centre = c2.center - caudal * rng.uniform(35.0, 60.0) - anterior * rng.uniform(0.0, 40.0)
        arc = _ellipse(centre, (rng.uniform(50.0, 90.0), rng.uniform(20.0, 40.0)), c2.angle + rng.uniform(-0.4, 0.4),
                       arc=(0.1 * np.pi, 1.0 * np.pi))
        _poly(layer, p.to_px(arc), value, -1 if filled else width)
        drawn.append("skull base")
    if rng.random() < 0.7:  # the mandible: an arc in front of C2-C3
        centre = c2.center + anterior * rng.uniform(25.0, 50.0) - caudal * rng.uniform(-5.0, 20.0)
        arc = _ellipse(centre, (rng.uniform(25.0, 50.0), rng.uniform(12.0, 30.0)), c2.angle + rng.uniform(-0.6, 0.6),
                       arc=(rng.uniform(-0.3, 0.3) * np.pi, rng.uniform(0.7, 1.2) * np.pi))
        _poly(layer, p.to_px(arc), value, -1 if filled and rng.random() < 0.5 else width)
        drawn.append("mandible")
    canvas += layer
    return drawn


def _posterior(canvas: np.ndarray, spine: Spine, p: Placement, kind: str, rng: np.random.Generator) -> None:
    """The posterior elements of C2-T1 drawn as ``kind`` (:data:`POSTERIOR`), one look for every level (in place)."""
    if kind == "none":
        return
    mm = 1.0 / p.spacing
    value = rng.uniform(0.2, 0.8)
    length, droop = rng.uniform(10.0, 28.0), rng.uniform(0.0, 0.6)
    gap = rng.uniform(1.0, 6.0)
    size = rng.uniform(3.0, 7.0)
    width = int(max(1, rng.uniform(0.7, 3.0) * mm))
    filled = rng.random() < 0.5
    layer = np.zeros_like(canvas)  # drawn apart and added: an element is brighter than what lies under it
    for body in spine.bodies:
        anterior, caudal = _body_frame(body)
        depth, height = _depth_height(body)
        root = body.center - anterior * (depth / 2 + gap)
        tip_dir = -anterior * np.cos(droop) + caudal * np.sin(droop)
        grow = 1.4 if body.name in ("C2", "C7", "T1") else 1.0
        tip = root + tip_dir * (size + length * grow * rng.uniform(0.85, 1.15))
        side = caudal * height * rng.uniform(0.2, 0.35)
        level_value = value * rng.uniform(0.85, 1.15)
        if kind == "bar":
            _poly(layer, p.to_px(np.array([root - side * 0.4, tip - side * 0.2, tip + side * 0.2, root + side * 0.4])),
                  level_value)
        elif kind == "triangle":
            _poly(layer, p.to_px(np.array([root - side, root + side, tip])), level_value, -1 if filled else width)
        elif kind == "ring":
            ring = _ellipse(root - anterior * size / 2, (size * 0.8, size), body.angle)
            _poly(layer, p.to_px(ring), level_value, width)
            _poly(layer, p.to_px(np.array([root - anterior * size * 1.6 - side * 0.5,
                                            root - anterior * size * 1.6 + side * 0.5, tip])), level_value * 0.8)
        elif kind == "blob":
            blob = _ellipse((root + tip) / 2, (float(np.linalg.norm(tip - root)) / 2, height * 0.3),
                            float(np.arctan2(tip_dir[1], tip_dir[0])))
            _poly(layer, p.to_px(blob), level_value, -1 if filled else width)
        else:  # laminae: a parallelogram overlapping the next level, as the training renderer's arches
            lam = np.array([root - caudal * height * 0.5, root + caudal * height * 0.7,
                            tip + caudal * height * 0.6, tip - caudal * height * 0.2])
            _poly(layer, p.to_px(lam), level_value * 0.6, -1 if filled else width)
    canvas += layer


def _bodies(canvas: np.ndarray, spine: Spine, p: Placement, rng: np.random.Generator) -> dict[str, Any]:
    """C2 (with its dens), the atlas's anterior arch and C3-T1 (in place); the look drawn."""
    mm = 1.0 / p.spacing
    fill = rng.uniform(0.3, 1.0)
    rim = rng.uniform(-0.3, 0.5) if rng.random() < 0.7 else 0.0
    rim_px = int(max(1, rng.uniform(0.4, 2.0) * mm))
    texture = rng.uniform(0.0, 0.45)
    grain_px = rng.uniform(0.3, 2.5) * mm
    layer = np.zeros_like(canvas)
    rims = np.zeros_like(canvas)
    c2 = spine.body("C2")
    anterior, caudal = _body_frame(c2)
    depth, height = _depth_height(c2)
    dens_w, dens_h = depth * rng.uniform(0.3, 0.5), rng.uniform(9.0, 15.0)
    base = c2.center - caudal * height / 2 + anterior * depth * rng.uniform(-0.15, 0.1)
    dens = np.vstack([base + place(np.array([[-dens_w / 2, 0.0], [dens_w / 2, 0.0]]), c2.angle, (0.0, 0.0)),
                      _ellipse(base - caudal * (dens_h - dens_w / 2), (dens_w / 2, dens_w / 2), c2.angle,
                               arc=(np.pi, 2 * np.pi))[::-1]])
    _poly(layer, p.to_px(dens), fill * rng.uniform(0.7, 1.0))
    if rng.random() < 0.8:  # the atlas's anterior arch, in front of the dens
        arch = _ellipse(base - caudal * dens_h * 0.6 + anterior * (dens_w / 2 + rng.uniform(3.0, 7.0)),
                        (rng.uniform(2.5, 4.5), rng.uniform(4.0, 6.5)), c2.angle)
        _poly(layer, p.to_px(arch), fill * rng.uniform(0.5, 1.0))
    for body in spine.bodies:
        outline = p.to_px(body.outline(180))
        _poly(layer, outline, fill * rng.uniform(0.9, 1.1))
        if rim:
            _poly(rims, outline, rim * fill, rim_px)
    mask = (layer > 0).astype(np.float32)
    canvas += layer + rims * mask + texture * fill * _texture(canvas.shape, grain_px, rng) * mask
    return {"body_fill": round(float(fill), 3), "rim": round(float(rim), 3), "texture": round(float(texture), 3)}


def _clutter(canvas: np.ndarray, rng: np.random.Generator) -> int:
    """0-4 random lines, circles and rectangles (labels, tubes, markers) anywhere on the film (in place)."""
    h, w = canvas.shape
    count = int(rng.integers(0, 5)) if rng.random() < 0.5 else 0
    for _ in range(count):
        value = rng.uniform(0.2, 1.0)
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        kind = rng.integers(3)
        size = rng.uniform(0.02, 0.12) * min(h, w)
        if kind == 0:
            end = (x + rng.normal(0, 3 * size), y + rng.normal(0, 3 * size))
            cv2.line(canvas, (int(x), int(y)), (int(end[0]), int(end[1])), value, int(rng.integers(2, 10)), cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(canvas, (int(x), int(y)), int(size / 2), value, int(rng.choice([-1, 2, 4])), cv2.LINE_AA)
        else:
            cv2.rectangle(canvas, (int(x), int(y)), (int(x + size), int(y + size * rng.uniform(0.3, 1.5))), value, -1)
    return count


def render_varied(rng: np.random.Generator) -> tuple[np.ndarray, ImageRecord, dict[str, Any]]:
    """One domain-randomized lateral C-spine film and its annotation.

    Returns:
        ``pixels`` (H, W) float32 display values in [0, 1], bone bright; the record (``file`` empty; C2-T1, each
        where its centre lies inside the film; ``pixel_spacing_mm`` set); what was drawn, with the noise-free
        ``truth`` of each annotated vertebra (:class:`vcorner.phantoms.annotate.Truth`).
    """
    spine = sample_spine_with("clinical" if rng.random() < 0.3 else "rare", rng,
                              osteoporotic=bool(rng.random() < 0.15))
    p = _placement(spine, rng)
    h, w = p.shape
    canvas = np.full(p.shape, rng.uniform(0.0, 0.45), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    canvas += (rng.uniform(-0.2, 0.2) * (xx / w - 0.5) + rng.uniform(-0.2, 0.2) * (yy / h - 0.5)).astype(np.float32)
    drawn = _soft_tissue(canvas, spine, p, rng)
    kind = str(POSTERIOR[int(rng.integers(len(POSTERIOR)))])
    _posterior(canvas, spine, p, kind, rng)
    look = _bodies(canvas, spine, p, rng)
    clutter = _clutter(canvas, rng)
    canvas = cv2.GaussianBlur(canvas, (0, 0), float(rng.uniform(0.3, 1.8)))
    canvas += rng.normal(0.0, rng.uniform(0.005, 0.06), canvas.shape).astype(np.float32)
    low, high = np.percentile(canvas, [rng.uniform(0.0, 2.0), rng.uniform(98.0, 100.0)])
    pixels = np.clip((canvas - low) / max(high - low, 1e-6), 0.0, 1.0) ** float(np.exp(rng.uniform(-0.5, 0.5)))
    vertebrae, truths = [], {}
    for name in LEVELS:
        vertebra, truth = annotate(spine.body(name), p, rng)
        x, y = vertebra.center
        if 0 <= x <= w - 1 and 0 <= y <= h - 1:
            vertebrae.append(vertebra)
            truths[name] = truth
    info = {"truth": truths, "style": STYLE, "shape": [h, w], "pixel_spacing_mm": round(p.spacing, 6),
            "rotation_deg": round(float(np.rad2deg(p.angle)), 2), "posterior": kind, "drawn": drawn,
            "clutter": clutter, **look}
    return pixels.astype(np.float32), ImageRecord("", tuple(vertebrae), p.spacing), info


def write_varied(out: Path, index: int, seq: np.random.SeedSequence) -> tuple[ImageRecord, dict[str, Any]]:
    """Render film ``index`` of a varied dataset from its seed and write it as PNG (every third 16-bit)."""
    from vcorner.phantoms.files import write_image

    pixels, record, info = render_varied(np.random.default_rng(seq))
    deep = index % 3 == 2
    name = f"varied_{index:05d}.png"
    write_image(Path(out) / name, np.round(pixels * (65535.0 if deep else 255.0)).astype(
        np.uint16 if deep else np.uint8))
    exact = exact_record(name, info.pop("truth"), record.pixel_spacing_mm)
    return ImageRecord(name, record.vertebrae, record.pixel_spacing_mm), {"file": name, **info, "exact": exact}
