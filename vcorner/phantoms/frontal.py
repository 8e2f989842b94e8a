"""Frontal (AP) thoracolumbar phantoms with T1-L5 annotated (``vcorner synth OUT --style ap``): films of the
kind vcorner's lateral cervical models were never trained on, for measuring that the tool says so (issue #27:
applicability) and for training a model on AP films of your own.

A film about 1:2.5 (0.3-0.5 mm per pixel) shows T1 (or C7) to the pelvis seen from the front: bodies wider than
tall that grow caudally (T1 about 25 mm wide, L5 about 50), along a coronal curve that is straight or scoliotic
(a C- or an S-curve, 0-45 degrees); two pedicle rings inside each body's upper half, a spinous process's tear drop
in its middle, transverse processes to the sides; ribs sweeping out from both sides of T1-T12 over two dark lungs,
a domed diaphragm on each side, the clavicles, and the iliac wings and sacrum below. Exposure, noise and crops as
in the tall style (:mod:`vcorner.phantoms.tall`). Corners are in ``vcorner.CORNER_NAMES`` order with "left" and
"right" the film's own (image x), annotated exactly; the centre is a click near the body's middle. Coordinates
are image pixels (x right, y down).
"""

from __future__ import annotations

import cv2
import numpy as np

from vcorner.io.records import ImageRecord
from vcorner.phantoms.holdout import Body, _arc, _band_noise, _body_polygon, _rounded_body
from vcorner.phantoms.tall import (
    ANNOTATED,
    LEVELS,
    _expose,
    _sizes,
    annotated_bodies,
    fill_bodies,
    spine_grid,
    write_film,
)

STYLE = "ap"


def _curve(length: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """(N, 2) points (mm, x to the film's right, y caudal) and (N,) tilts (rad) at every mm of a coronal curve of
    ``length`` mm, and its kind (``straight``, ``c``, ``s``)."""
    s = np.arange(0.0, length + 1.0)
    kind = str(rng.choice(["straight", "c", "s"], p=[0.3, 0.35, 0.35]))
    cobb = np.deg2rad(rng.uniform(2, 8) if kind == "straight" else rng.uniform(10, 45))
    turns = 1 if kind != "s" else 2
    phase = rng.uniform(-0.3, 0.3)
    # the tilt swings by the Cobb angle between the curve's end vertebrae: a sine over the span
    tilt = 0.5 * cobb * np.sin(np.pi * turns * (s / length + phase)) * rng.choice([-1.0, 1.0])
    tilt += np.deg2rad(rng.uniform(-4, 4))
    step = np.stack([np.sin(tilt), np.cos(tilt)], axis=1)
    return np.cumsum(step, axis=0) - step[0], tilt, kind


def _spine(rng: np.random.Generator) -> tuple[list[tuple[str, np.ndarray, float, float, float]], str]:
    """Each level's (name, centre mm, tilt rad, width mm, height mm) along a sampled coronal curve, and its kind."""
    heights, depths, discs = _sizes(rng)
    widths = depths * rng.uniform(1.35, 1.6)
    tops = np.concatenate([[0.0], np.cumsum(heights + discs)[:-1]])
    centres = tops + heights / 2
    points, tilts, kind = _curve(float(tops[-1] + heights[-1]), rng)
    index = np.round(centres).astype(int)
    # a body turns with the curve, and leans into it: its own tilt is the curve's
    return [(name, points[i], -float(tilts[i]), float(widths[k]), float(heights[k]))
            for k, (name, i) in enumerate(zip(LEVELS, index, strict=True))], kind


def _view(levels: list, rng: np.random.Generator) -> tuple[float, float, str]:
    """Top and bottom of the film (mm, the curve's y) and how it is cropped (``full``, ``top``, ``bottom``)."""
    y = {name: float(c[1]) for name, c, _, _, h in levels}
    half = {name: h / 2 for name, _, _, _, h in levels}
    top = rng.uniform(y["C6"], y["T1"] - half["T1"] - 8.0)
    bottom = rng.uniform(y["L5"] + half["L5"] + 15.0, y["S1"] + 60.0)
    draw = rng.random()
    if draw < 0.2:
        return rng.uniform(y["T2"] - half["T2"], y["T8"] + half["T8"]), bottom, "top"
    if draw < 0.4:
        return top, rng.uniform(y["T11"] - half["T11"], y["L4"] + half["L4"]), "bottom"
    return top, bottom, "full"


def _posterior(canvas: np.ndarray, body: Body, mm: float, rng: np.random.Generator) -> None:
    """Pedicle rings, spinous process and transverse processes of a body seen from the front (in place)."""
    sl, sr, il, ir = body.sharp
    across = (sr - sl) / max(np.linalg.norm(sr - sl), 1e-9)
    down = (il - sl) / max(np.linalg.norm(il - sl), 1e-9)
    width = float(np.linalg.norm(sr - sl))
    height = float(np.linalg.norm(il - sl))
    mid = body.sharp.mean(axis=0)
    angle = float(np.rad2deg(np.arctan2(across[1], across[0])))
    value = rng.uniform(0.15, 0.35)
    for side in (-1.0, 1.0):  # pedicles: oval rings in the upper half, near the sides
        centre = mid + side * across * width * rng.uniform(0.3, 0.36) - down * height * rng.uniform(0.1, 0.2)
        _arc(canvas, tuple(centre), (width * 0.09, height * 0.2), angle, (0, 360), max(1, int(1.2 * mm)), value)
        tip = mid + side * across * (width * 0.5 + rng.uniform(10, 22) * mm) - down * height * 0.15
        root = mid + side * across * width * 0.35 - down * height * 0.15
        cv2.line(canvas, tuple(np.round(root).astype(int)), tuple(np.round(tip).astype(int)), value * 0.8,
                 max(1, int(rng.uniform(4, 7) * mm)), cv2.LINE_AA)
    spinous = mid + down * height * rng.uniform(0.1, 0.35)
    _arc(canvas, tuple(spinous), (width * 0.06, height * 0.22), angle, (0, 360), -1, value * 0.7)


def _scene(shape: tuple[int, int], bodies: list[Body], mm: float, rng: np.random.Generator) -> np.ndarray:
    """Attenuation of everything but the bodies: the trunk, lungs and diaphragm, ribs, clavicles, the pelvis."""
    named = {b.name: b for b in bodies}
    yy, xx, spine_x = spine_grid(shape, bodies)
    trunk = rng.uniform(130, 170) * mm
    attenuation = rng.uniform(0.3, 0.5) / (1 + np.exp((np.abs(xx - spine_x) - trunk) / (10 * mm)))
    attenuation += rng.uniform(0.05, 0.15) * np.exp(-(((xx - spine_x) / (35 * mm)) ** 2))  # paraspinal muscles
    apex = named["T1"].sharp.mean(axis=0)[1] - rng.uniform(0, 25) * mm
    for side in (-1.0, 1.0):  # a lung on each side, its dome over the liver (right, lower) or the stomach
        dome = named["T10" if side < 0 else "T11"].sharp.mean(axis=0)[1] + rng.uniform(-20, 20) * mm \
            - 25 * mm * np.exp(-(((xx - spine_x - side * 70 * mm) / (50 * mm)) ** 2))
        lateral = side * (xx - spine_x)
        inside = (1 / (1 + np.exp(-(yy - apex) / (10 * mm)))) * (1 / (1 + np.exp((yy - dome) / (5 * mm))))
        inside *= (1 / (1 + np.exp(-(lateral - rng.uniform(25, 40) * mm) / (5 * mm))))
        inside *= (1 / (1 + np.exp((lateral - trunk + 15 * mm) / (8 * mm))))
        attenuation -= rng.uniform(0.15, 0.3) * inside
    ribs = np.zeros(shape, np.float32)
    for k, name in enumerate(ANNOTATED[:12]):
        root = named[name].sharp.mean(axis=0)
        for side in (-1.0, 1.0):
            reach = (rng.uniform(40, 60) if name == "T12" else rng.uniform(95, 140) - 3 * abs(k - 6)) * mm
            centre = root + np.array([side * reach * 0.6, rng.uniform(15, 35) * mm])
            span = (180, 300) if side < 0 else (240, 360)
            _arc(ribs, tuple(centre), (reach * 0.75, rng.uniform(30, 50) * mm), side * rng.uniform(5, 20), span,
                 max(1, int(rng.uniform(4.0, 7.0) * mm)), rng.uniform(0.06, 0.14))
    for side in (-1.0, 1.0):  # clavicles over the top of the chest
        start = named["T1"].sharp.mean(axis=0) + np.array([side * 15 * mm, -rng.uniform(5, 25) * mm])
        end = start + np.array([side * rng.uniform(110, 150) * mm, -rng.uniform(0, 30) * mm])
        cv2.line(ribs, tuple(np.round(start).astype(int)), tuple(np.round(end).astype(int)), rng.uniform(0.1, 0.25),
                 max(1, int(rng.uniform(8, 12) * mm)), cv2.LINE_AA)
    attenuation += cv2.GaussianBlur(ribs, (0, 0), 0.8)
    sacrum = named["S1"].sharp.mean(axis=0)
    for side in (-1.0, 1.0):  # the iliac wings: a cortical ring with a faint fill on each side of the sacrum
        hip = sacrum + np.array([side * rng.uniform(55, 75), rng.uniform(-5, 20)]) * mm
        axes = (rng.uniform(45, 60) * mm, rng.uniform(60, 80) * mm)
        angle = side * rng.uniform(10, 30)
        _arc(attenuation, tuple(hip), axes, angle, (0, 360), max(1, int(4 * mm)), rng.uniform(0.2, 0.4))
        _arc(attenuation, tuple(hip), axes, angle, (0, 360), -1, rng.uniform(0.05, 0.15))
    return attenuation


def render_frontal(rng: np.random.Generator) -> tuple[np.ndarray, ImageRecord, dict]:
    """One AP thoracolumbar film.

    Returns:
        pixels (H, W) float32 in [0, 1] (bone bright), its record (the levels of T1-L5 inside the film, cranial
        first, with clicks near the body's middle, exact corners and boundaries, ``pixel_spacing_mm``) and what
        was drawn.
    """
    spacing = float(rng.uniform(0.3, 0.5))
    mm = 1.0 / spacing
    levels, kind = _spine(rng)
    top, bottom, crop = _view(levels, rng)
    shown = np.array([c[0] for _, c, _, _, _ in levels if top <= c[1] <= bottom])
    span = float(shown.max() - shown.min())
    width = max(rng.uniform(150.0, 260.0), span + 120.0)
    left = float(shown.mean()) - width / 2 + rng.uniform(-15.0, 15.0)
    shape = (int((bottom - top) * mm), int(width * mm))
    origin = np.array([left, top])
    bodies = []
    for name, centre, tilt, body_width, height in levels:
        sharp, polygon = _body_polygon((centre - origin) * mm, tilt, body_width * mm, height * mm,
                                       rng.uniform(-0.06, 0.06), rng.uniform(0.2, 0.8) * mm)
        bodies.append(_rounded_body(name, sharp, [polygon], rng.uniform(1.5, 3.5) * mm, shape))
    attenuation = _scene(shape, bodies, mm, rng)
    texture = _band_noise(shape, 0.5 * mm, 2.0 * mm, rng)
    density, rim_gain = rng.uniform(0.35, 0.65), rng.uniform(0.2, 0.6)
    posterior = np.zeros(shape, np.float32)
    fill_bodies(attenuation, bodies, texture, (density, rim_gain), spacing,
                lambda body: _posterior(posterior, body, mm, rng))
    attenuation += cv2.GaussianBlur(posterior, (0, 0), 0.7)
    severe = rng.random() < 0.15
    image = _expose(attenuation, rng, severe)
    vertebrae = annotated_bodies(bodies, shape, mm, rng)
    info = {"style": STYLE, "crop": crop, "curve": kind, "shape": list(shape), "severe_noise": bool(severe)}
    return image.astype(np.float32), ImageRecord("", vertebrae, round(spacing, 5)), info


def write_frontal(out, index: int, seq: np.random.SeedSequence) -> tuple[ImageRecord, dict]:
    """Render film ``index`` of an AP dataset from its seed and write it as PNG (8- or 16-bit)."""
    return write_film(render_frontal, "ap", out, index, seq)
