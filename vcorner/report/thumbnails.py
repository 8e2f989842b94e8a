"""Small JPEG thumbnails embedded in the report as ``data:`` URIs, so the page is one self-contained file."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np

from vcorner.io.images import read_image
from vcorner.io.records import InputError

MAX_SIDE = 128
"""Longest thumbnail side, pixels: about 3 KB each, so a 1,000-image report stays a few MB."""
QUALITY = 65
COLOURS = {"network": (60, 200, 60), "prior": (40, 160, 255), "outside": (40, 40, 230)}  # BGR


def _shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    scale = min(1.0, max_side / max(image.shape[:2]))
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def _data_uri(image: np.ndarray) -> str:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def overlay_thumbnail(path: Path, max_side: int = MAX_SIDE) -> str | None:
    """A thumbnail of an overlay PNG already drawn by ``vcorner batch --vis``; None when unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else _data_uri(_shrink(image, max_side)[0])


def image_thumbnail(path: Path, corners: list[dict[str, str]], max_side: int = MAX_SIDE) -> str | None:
    """A thumbnail of the radiograph with its corners as dots (green network, orange prior, red outside);
    None when the image cannot be read."""
    try:
        grey = read_image(path).pixels
    except (InputError, OSError, ValueError, TypeError, MemoryError):
        return None
    small, scale = _shrink((np.clip(grey, 0, 1) * 255).astype(np.uint8), max_side)
    rgb = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
    for row in corners:
        centre = (round(float(row["x"]) * scale), round(float(row["y"]) * scale))
        cv2.circle(rgb, centre, 2, COLOURS.get(row["source"], (255, 255, 255)), -1, cv2.LINE_AA)
    return _data_uri(rgb)
