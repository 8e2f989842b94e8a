"""Smooth soft-tissue attenuation: the neck's cross-section, the airway and the shoulders.

Computed on a coarse grid (blocks of ``factor`` pixels) in the spine frame and upsampled: these
structures are smooth and lie far from the detector, so their edges are blurred in real films too.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vcorner.phantoms.anatomy import Spine
from vcorner.phantoms.render import Placement
from vcorner.phantoms.shapes import polyline, stroke


@dataclass(frozen=True)
class SoftTissue:
    """Soft-tissue parameters (mm in the spine frame, attenuations dimensionless).

    Attributes:
        neck: Attenuation through the thickest part of the neck.
        anterior_mm: Skin distance anterior of the body surface at the throat.
        posterior_mm: Skin distance posterior of the body surface.
        throat_y: Height of the throat (most posterior point of the anterior skin).
        prevertebral: Prevertebral soft-tissue thickness above and below the larynx.
        airway_mm: Anteroposterior width of the airway.
        airway: Attenuation missing in the airway.
        shoulder_y: Heights where the two shoulder tops cross the spine.
        shoulder_slope: Tilt of the shoulder line (dy/dx).
        shoulder: Attenuation of both shoulders at full depth.
        clavicle: Whether a clavicle crosses the lower field.
    """

    neck: float
    anterior_mm: float
    posterior_mm: float
    throat_y: float
    prevertebral: tuple[float, float]
    airway_mm: float
    airway: float
    shoulder_y: tuple[float, float]
    shoulder_slope: float
    shoulder: float
    clavicle: bool


def sample_soft_tissue(spine: Spine, rng: np.random.Generator) -> SoftTissue:
    """Random neck build, airway and shoulder height; shoulders hide C6-C7 in about half the images."""
    c5, c6, c7 = (spine.body(n).center[1] for n in ("C5", "C6", "C7"))
    high = rng.random() < 0.5
    top = rng.uniform(c5, c6 + 4.0) if high else rng.uniform(c7, c7 + 35.0)
    return SoftTissue(
        neck=rng.uniform(0.9, 1.5),
        anterior_mm=rng.uniform(30.0, 45.0),
        posterior_mm=rng.uniform(55.0, 80.0),
        throat_y=(spine.body("C4").center[1] + c5) / 2 + rng.normal(0.0, 5.0),
        prevertebral=(rng.uniform(2.5, 6.0), rng.uniform(11.0, 18.0)),
        airway_mm=rng.uniform(9.0, 17.0),
        airway=rng.uniform(0.25, 0.45),
        shoulder_y=(top, top + rng.uniform(0.0, 18.0)),
        shoulder_slope=rng.uniform(0.05, 0.6),
        shoulder=rng.uniform(1.6, 3.2),
        clavicle=bool(rng.random() < 0.4),
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))


def _neck(u: np.ndarray, y: np.ndarray, p: SoftTissue, y_top: float, y_bottom: float) -> np.ndarray:
    """Projected thickness profile of an elliptical neck cross-section at (u, y)."""
    above, below = np.clip(p.throat_y - y, 0, None), np.clip(y - p.throat_y, 0, None)
    front = 8.0 + p.anterior_mm + 0.012 * above**2 + 0.25 * below
    back = -8.0 - p.posterior_mm - 0.25 * np.clip(y - y_bottom, 0, None) - 0.15 * np.clip(y_top - y, 0, None)
    r = (u - (front + back) / 2) / ((front - back) / 2)
    return np.sqrt(np.clip(1.0 - r**2, 0.0, 1.0))


def _airway(u: np.ndarray, y: np.ndarray, p: SoftTissue, larynx_y: float) -> np.ndarray:
    """Fraction of the airway's depth at (u, y): a band anterior to the prevertebral tissue."""
    behind = p.prevertebral[0] + (p.prevertebral[1] - p.prevertebral[0]) * _sigmoid((y - larynx_y) / 5.0)
    start = 8.0 + behind
    width = p.airway_mm * (1.0 + 0.4 * _sigmoid((larynx_y - 25.0 - y) / 8.0))
    return _sigmoid((u - start) / 0.9) * _sigmoid((start + width - u) / 0.9)


def _shoulders(x: np.ndarray, y: np.ndarray, p: SoftTissue) -> np.ndarray:
    """Attenuation of the two shoulders: depth grows below a domed line."""
    total = np.zeros_like(x)
    for level in p.shoulder_y:
        line = level + p.shoulder_slope * x + 0.006 * (x + 10.0) ** 2
        depth = np.clip((y - line) / 50.0, 0.0, 1.0) ** 0.7
        total += 0.5 * p.shoulder * depth * _sigmoid((y - line) / 5.0)
    return total


def _clavicle(params: SoftTissue, placement: Placement, shape: tuple[int, int], factor: int,
              rng: np.random.Generator) -> np.ndarray:
    """Coarse-grid attenuation of a clavicle: an S-shaped band rising posteriorly below the shoulder top."""
    low = np.array([rng.uniform(50.0, 90.0), params.shoulder_y[0] + rng.uniform(30.0, 55.0)])
    high = np.array([rng.uniform(-70.0, -40.0), params.shoulder_y[0] + rng.uniform(0.0, 15.0)])
    bend = rng.uniform(-8.0, 8.0)
    control = [low, low + (high - low) * 0.35 + (0, bend), low + (high - low) * 0.7 - (0, bend), high]
    band = placement.to_px(stroke(polyline(control, 24), np.linspace(14.0, 10.0, 24))) / factor
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round((band - (factor - 1) / (2 * factor)) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 2.5 / factor / placement.spacing) * (0.25 / 255.0)


def soft_tissue_map(spine: Spine, params: SoftTissue, placement: Placement, rng: np.random.Generator,
                    factor: int = 4) -> np.ndarray:
    """(H, W) float32 soft-tissue attenuation of the image described by ``placement``.

    Args:
        spine: Supplies the centreline and the levels.
        params: Neck, airway and shoulders.
        placement: Spine frame to pixels.
        rng: Random generator (clavicle placement).
        factor: Coarse-grid block size in pixels.
    """
    x, y = placement.grid_mm(factor)
    order = np.argsort(spine.curve[:, 1])
    cy = spine.curve[order, 1]
    u = (x - np.interp(y, cy, spine.curve[order, 0])) * np.cos(np.interp(y, cy, spine.curve_angle[order]))
    top, bottom = spine.body("C2").center[1], spine.body("C7").center[1]
    larynx_y = (spine.body("C4").center[1] + spine.body("C5").center[1]) / 2
    neck = _neck(u, y, params, top, bottom)
    coarse = params.neck * neck - params.airway * _airway(u, y, params, larynx_y) * np.clip(neck * 3, 0, 1)
    coarse += _shoulders(x, y, params)
    if params.clavicle:
        coarse += _clavicle(params, placement, coarse.shape, factor, rng)
    return cv2.resize(coarse.astype(np.float32), placement.shape[::-1], interpolation=cv2.INTER_LINEAR)
