"""From attenuation to a processed radiograph: exposure, quantum noise, blur, scatter, processing,
window, gamma, contrast, collimation and burned-in markers.

The detector sees ``T = exp(-A)`` photons per unattenuated photon; quantum noise is Poisson-like
(Gaussian with variance ``T / N0``); the displayed image is the log signal ``-log T`` (bone bright),
compressed at large scale and windowed, as a digital radiography workstation would do.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_WORDS = ("LAT", "C-SPINE", "ERECT", "SUPINE", "PORTABLE", "LATERAL", "XTABLE")


@dataclass(frozen=True)
class Acquisition:
    """Exposure and processing settings of one image.

    Attributes:
        photons: Mean photons per pixel without attenuation (N0); 30-200 is severe noise.
        focal_blur_mm: Geometric unsharpness (Gaussian sigma), mm.
        detector_blur_px: Detector blur (Gaussian sigma) applied after the noise, pixels.
        scatter: Scattered fraction added as a broad haze.
        heel: Extra attenuation across the image (x, y), from the heel effect and uneven exposure.
        latitude: Large-scale compression of the log signal (0 = none).
        edge_enhance: Unsharp-mask gain.
        window: Percentiles of the log signal mapped to black and white.
        gamma: Display gamma.
        contrast: Output range used (1 = full, 0.12 = very weak contrast).
        brightness: Output black level; ``brightness + contrast <= 1``.
    """

    photons: float
    focal_blur_mm: float
    detector_blur_px: float
    scatter: float
    heel: tuple[float, float]
    latitude: float
    edge_enhance: float
    window: tuple[float, float]
    gamma: float
    contrast: float
    brightness: float


def sample_acquisition(rng: np.random.Generator, *, severe_noise: bool = False,
                       low_contrast: bool = False) -> Acquisition:
    """Random acquisition; hard cases ask for severe noise or very weak contrast."""
    if low_contrast:
        contrast = rng.uniform(0.12, 0.3)
    else:
        contrast = rng.uniform(0.3, 0.55) if rng.random() < 0.2 else rng.uniform(0.6, 1.0)
    log_photons = rng.uniform(np.log(30.0), np.log(200.0)) if severe_noise else rng.uniform(np.log(500), np.log(2e4))
    return Acquisition(
        photons=float(np.exp(log_photons)),
        focal_blur_mm=rng.uniform(0.04, 0.25),
        detector_blur_px=rng.uniform(0.4, 1.1),
        scatter=rng.uniform(0.0, 0.6),
        heel=tuple(rng.normal(0.0, 0.15, 2)),  # type: ignore[arg-type]
        latitude=rng.uniform(0.2, 0.85),
        edge_enhance=rng.uniform(0.0, 1.2) if rng.random() < 0.6 else 0.0,
        window=(rng.uniform(0.0, 4.0), rng.uniform(97.0, 100.0)),
        gamma=float(np.exp(rng.uniform(np.log(0.6), np.log(1.7)))),
        contrast=contrast,
        brightness=(1.0 - contrast) * rng.uniform(0.15, 0.85),
    )


def _broad_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur with a large sigma, computed on an 8x smaller copy."""
    small = cv2.resize(image, (image.shape[1] // 8 + 1, image.shape[0] // 8 + 1), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(sigma_px / 8, 0.5))
    return cv2.resize(small, image.shape[::-1], interpolation=cv2.INTER_LINEAR)


def expose(attenuation: np.ndarray, acq: Acquisition, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Simulate the exposure of an (H, W) attenuation map.

    Returns:
        (H, W) float32 log signal ``-log T`` with quantum noise (bright = attenuating).
    """
    h, w = attenuation.shape
    a = cv2.GaussianBlur(attenuation, (0, 0), max(acq.focal_blur_mm / spacing, 0.3))
    ramp_x = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :] * np.float32(acq.heel[0])
    ramp_y = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None] * np.float32(acq.heel[1])
    a += ramp_x
    a += ramp_y
    t = np.exp(-a)
    if acq.scatter > 0:
        t += np.float32(acq.scatter) * _broad_blur(t, 25.0 / spacing)
    noise = rng.standard_normal(t.shape, dtype=np.float32)
    noise *= np.sqrt(t / np.float32(acq.photons))
    t += noise
    np.maximum(t, np.float32(0.5 / acq.photons), out=t)
    t = cv2.GaussianBlur(t, (0, 0), acq.detector_blur_px)
    return -np.log(t)


def process(signal: np.ndarray, acq: Acquisition, spacing: float) -> np.ndarray:
    """Workstation processing of the log signal: latitude compression, unsharp mask, window, gamma, contrast.

    Returns:
        (H, W) float32 display values in [0, 1].
    """
    d = signal
    if acq.latitude > 0:
        d = d - np.float32(acq.latitude) * (_broad_blur(d, 20.0 / spacing) - np.float32(np.median(d[::8, ::8])))
    if acq.edge_enhance > 0:
        d = d + np.float32(acq.edge_enhance) * (d - cv2.GaussianBlur(d, (0, 0), 1.5 / spacing))
    lo, hi = np.percentile(d[::4, ::4], acq.window)
    v = np.clip((d - np.float32(lo)) / np.float32(max(hi - lo, 1e-6)), 0.0, 1.0)
    v **= np.float32(acq.gamma)
    return (np.float32(acq.brightness) + np.float32(acq.contrast) * v).astype(np.float32)


def collimate(image: np.ndarray, keep: tuple[int, int, int, int], *, white: bool, penumbra_px: float,
              rng: np.random.Generator) -> np.ndarray:
    """Darken or whiten the image outside the rectangle ``keep`` = (left, top, right, bottom) pixels.

    The blades are tilted by up to 1.5 degrees and have a soft penumbra; the unexposed region keeps
    some structure and noise (white) or is masked flat (black, as an electronic shutter does).
    """
    h, w = image.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tilt = np.tan(np.deg2rad(rng.uniform(-1.5, 1.5, 4))).astype(np.float32)
    left, top, right, bottom = keep
    inside = np.ones((h, w), np.float32)
    for dist in (xx - left - tilt[0] * (yy - h / 2), yy - top - tilt[1] * (xx - w / 2),
                 right - xx - tilt[2] * (yy - h / 2), bottom - yy - tilt[3] * (xx - w / 2)):
        inside *= np.clip(dist / max(penumbra_px, 1.0) + 0.5, 0.0, 1.0)
    outside_value = np.float32(rng.uniform(0.85, 1.0)) if white else np.float32(0.0)
    outside = 0.85 * outside_value + 0.15 * image if white else np.zeros_like(image) + outside_value
    return inside * image + (1.0 - inside) * outside


def _text_patch(text: str, height_px: int, thickness: int) -> np.ndarray:
    """float32 coverage in [0, 1] of ``text`` in OpenCV's simplex font, ``height_px`` tall (cap height)."""
    scale = cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_SIMPLEX, height_px, thickness)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    patch = np.zeros((h + base + 2 * thickness, w + 2 * thickness), np.uint8)
    cv2.putText(patch, text, (thickness, h + thickness), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness,
                cv2.LINE_AA)
    return patch.astype(np.float32) / 255.0


def _paste(image: np.ndarray, patch: np.ndarray, corner: tuple[int, int], value: float, *, add: bool) -> None:
    """Add ``value * patch`` to (or blend it over) ``image`` at ``corner`` = (x, y), clipped, in place."""
    x, y = corner
    h, w = min(patch.shape[0], image.shape[0] - y), min(patch.shape[1], image.shape[1] - x)
    if h <= 0 or w <= 0:
        return
    region, cover = image[y : y + h, x : x + w], patch[:h, :w]
    if add:
        region += np.float32(value) * cover
    else:
        region *= 1.0 - cover
        region += np.float32(value) * cover


def lead_marker(attenuation: np.ndarray, corner: tuple[int, int], size_px: int, letter: str) -> None:
    """Burn a lead positioning letter (inside a faint plastic holder) into the attenuation map, in place."""
    x, y = corner
    attenuation[y : y + int(size_px * 1.4), x : x + int(size_px * 1.3)] += 0.25
    _paste(attenuation, _text_patch(letter, size_px, max(2, size_px // 7)), (x + size_px // 8, y + size_px // 8),
           4.0, add=True)


def ruler(attenuation: np.ndarray, start: tuple[int, int], length_px: int, spacing: float, vertical: bool) -> None:
    """Burn a metal ruler with 1/5/10 mm ticks into the attenuation map, in place."""
    x, y = start
    step = 1.0 / spacing
    for k in range(int(length_px / step) + 1):
        tick = (10 if k % 10 == 0 else 6 if k % 5 == 0 else 3) / spacing * 0.4
        p = int(round(k * step))
        p0, p1 = ((x, y + p), (x + int(tick), y + p)) if vertical else ((x + p, y), (x + p, y + int(tick)))
        cv2.line(attenuation, p0, p1, 2.5, max(1, int(0.25 / spacing)), cv2.LINE_AA)
    end = (x, y + length_px) if vertical else (x + length_px, y)
    cv2.line(attenuation, (x, y), end, 2.5, max(1, int(0.4 / spacing)), cv2.LINE_AA)


def text_patch(rng: np.random.Generator, height_px: int) -> tuple[str, np.ndarray]:
    """A random workstation label (e.g. ``LAT``) and its float32 coverage patch."""
    text = str(rng.choice(_WORDS))
    return text, _text_patch(text, height_px, max(1, height_px // 10))


def burn_text(image: np.ndarray, patch: np.ndarray, corner: tuple[int, int], white: bool) -> None:
    """Write a text patch onto the display image at ``corner`` = (x, y), white or black, in place."""
    _paste(image, patch, corner, 1.0 if white else 0.0, add=False)
