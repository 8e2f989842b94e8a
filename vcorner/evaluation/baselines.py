"""Baselines evaluated through the same ``evaluate``: the prior alone, and Harris corners in quadrants.

* ``prior``: each corner at the learned prior's mean in the vertebra frame (what the network must beat).
* ``harris``: in the spirit of the paper's HarrisNB, the Harris corner response of the image, weighted by the
  same prior and searched in the same frame quadrants as the network's accumulated maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from vcorner.geometry.frames import Frames, record_frames
from vcorner.geometry.views import mirror_frames, parse_view
from vcorner.io.records import ImageRecord
from vcorner.models.card import ModelCard
from vcorner.postprocess.decode import VertebraCorners, decode_vertebra, vertebra_region

BASELINES = ("prior", "harris")


def viewed_frames(record: ImageRecord) -> Frames:
    """The record's vertebra frames, mirrored on a mirrored film (its ``view``), as ``vcorner batch`` cuts them."""
    frames = record_frames(record)
    return mirror_frames(frames) if parse_view(record.view).mirrored else frames


def prior_corners(record: ImageRecord, card: ModelCard) -> list[VertebraCorners]:
    """Every corner at the prior mean, with the prior's covariance and confidence 0."""
    frames = viewed_frames(record)
    out = []
    for i, v in enumerate(record.vertebrae):
        means, covs = card.prior.in_image(frames, i, v.name)
        out.append(VertebraCorners(v.name, means, np.zeros(4), covs, ("prior",) * 4))
    return out


def harris_response(pixels: np.ndarray, frames: Frames, index: int, radius: float,
                    origin_shape: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    """Harris response (positive part, rescaled to [0, 1]) over one vertebra's region.

    The image is smoothed at a scale proportional to the vertebra size (2% of it) so that trabecular
    texture and noise do not dominate the corners of the body outline.
    """
    (x0, y0), (h, w) = origin_shape
    crop = np.ascontiguousarray(pixels[y0:y0 + h, x0:x0 + w], dtype=np.float32)
    sigma = max(1.0, 0.02 * float(frames.sizes[index]))
    smooth = cv2.GaussianBlur(crop, (0, 0), sigma)
    block = max(3, int(round(2 * sigma)) | 1)
    response = np.maximum(cv2.cornerHarris(smooth, block, 3, 0.04), 0.0)
    peak = float(response.max())
    return (response / peak).astype(np.float32) if peak > 0 else response.astype(np.float32)


def harris_corners(pixels: np.ndarray, record: ImageRecord, card: ModelCard) -> list[VertebraCorners]:
    """Corners as the prior-weighted maxima of the Harris response in each frame quadrant."""
    frames = viewed_frames(record)
    decode = card.decode
    out = []
    for i, v in enumerate(record.vertebrae):
        region = vertebra_region(frames, i, decode.search_radius, pixels.shape)
        response = harris_response(pixels, frames, i, decode.search_radius, region)
        out.append(decode_vertebra(response, region[0], frames, i, v.name, card.prior, decode))
    return out


def baseline_corners(method: str, pixels: np.ndarray, record: ImageRecord,
                     card: ModelCard) -> Sequence[VertebraCorners]:
    """Corners of one image by baseline ``method`` (one of :data:`BASELINES`)."""
    if method == "prior":
        return prior_corners(record, card)
    if method == "harris":
        return harris_corners(pixels, record, card)
    raise ValueError(f"unknown baseline {method!r}; known: {', '.join(BASELINES)}")
