"""Pixel values to intensities: grey levels from colour layouts, float32 in [0, 1] by the sample type's range or
by min-max, and the refusal of an image whose pixels are all equal (nothing to find).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from vcorner.io.records import InputError


def check_contrast(pixels: np.ndarray, path: Path) -> None:
    """InputError when every pixel has the same value (blank or all-black image: nothing to find)."""
    low, high, _, _ = cv2.minMaxLoc(pixels) if pixels.size else (0.0, 1.0, None, None)
    if high <= low:
        raise InputError(f"{path}: every pixel has the same value ({low:.3g}): a blank image")


def to_gray(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        return array[:, :, 0]
    if array.ndim == 3 and array.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if array.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(array, code)
    if array.ndim != 2:
        raise InputError(f"{path}: unsupported pixel layout {array.shape}")
    return array


def unit_range(array: np.ndarray) -> np.ndarray:
    """(H, W) values min-max normalized to float32 [0, 1] (zeros for a constant image)."""
    values = array.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    values -= low  # in place: the same float32 operations as (values - low) / (high - low), no temporaries
    values /= high - low
    return values


def scaled(array: np.ndarray, full: float) -> np.ndarray:
    """(H, W) integer samples / ``full`` as float32 (divided in place: no temporary)."""
    values = array.astype(np.float32)
    values /= full
    return values
