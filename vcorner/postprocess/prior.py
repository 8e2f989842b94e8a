"""The learned prior corner distribution, per vertebra name, in vertebra-frame units.

Stored in the model card so that inference weights its maps (and falls back) exactly as trained.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vcorner.geometry.frames import Frames, record_frames
from vcorner.io.records import ImageRecord

ANY = "*"
MIN_COUNT = 5
"""A name seen fewer times than this in training uses the pooled prior (``ANY``)."""
"""Key of the prior pooled over all vertebra names (used for names not seen in training)."""


@dataclass(frozen=True)
class CornerPrior:
    """Gaussian corner positions in frame units, per vertebra name.

    Attributes:
        means: name -> (4, 2) mean corner positions (frame units: x to the image right of the spine, y caudal).
        covariances: name -> (4, 2, 2) covariances of those positions.
        counts: name -> number of training vertebrae.
    """

    means: dict[str, np.ndarray]
    covariances: dict[str, np.ndarray]
    counts: dict[str, int]

    def lookup(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(4, 2) means and (4, 2, 2) covariances for ``name`` (pooled prior when unseen or rare)."""
        key = name if self.counts.get(name, 0) >= MIN_COUNT else ANY
        return self.means[key], self.covariances[key]

    def unseen(self, names: Iterable[str]) -> list[str]:
        """The names among ``names`` this prior (its model) saw fewer than :data:`MIN_COUNT` times in training,
        in first-seen order: their corners come from the pooled prior and were never validated."""
        return list(dict.fromkeys(n for n in names if self.counts.get(n, 0) < MIN_COUNT))

    def trained(self) -> list[str]:
        """The names with a prior of their own (seen at least :data:`MIN_COUNT` times in training)."""
        return [n for n, count in self.counts.items() if count >= MIN_COUNT and n != ANY]

    def in_image(self, frames: Frames, index: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Prior of vertebra ``index`` in image pixels: (4, 2) means and (4, 2, 2) covariances."""
        mean, cov = self.lookup(name)
        rot = frames.axes[index] * frames.sizes[index]
        return frames.to_image(index, mean), rot @ cov @ rot.T

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            name: {"mean": self.means[name].round(6).tolist(), "cov": self.covariances[name].round(8).tolist(),
                   "count": self.counts[name]}
            for name in self.means
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CornerPrior:
        """Inverse of :meth:`to_dict`."""
        if ANY not in data:
            raise ValueError("corner prior lacks the pooled entry '*'")
        return cls(
            means={k: np.asarray(v["mean"], dtype=np.float64).reshape(4, 2) for k, v in data.items()},
            covariances={k: np.asarray(v["cov"], dtype=np.float64).reshape(4, 2, 2) for k, v in data.items()},
            counts={k: int(v["count"]) for k, v in data.items()},
        )


def corners_in_frames(records: Iterable[ImageRecord]) -> dict[str, list[np.ndarray]]:
    """Annotated corners of every vertebra in its own frame units, grouped by vertebra name."""
    grouped: dict[str, list[np.ndarray]] = {}
    for record in records:
        if len(record.vertebrae) < 2:
            continue
        frames = record_frames(record)
        for i, v in enumerate(record.vertebrae):
            if v.corners is not None:
                grouped.setdefault(v.name, []).append(frames.to_frame(i, v.corners))
    return grouped


def _gaussian(samples: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    stack = np.stack(samples)  # (n, 4, 2)
    mean = stack.mean(axis=0)
    centred = stack - mean
    cov = np.einsum("nki,nkj->kij", centred, centred) / max(len(stack) - 1, 1)
    return mean, cov + 1e-4 * np.eye(2)


def fit_prior(records: Iterable[ImageRecord]) -> CornerPrior:
    """Fit the per-name and pooled Gaussian corner priors from annotated images.

    Raises:
        ValueError: no annotated vertebra with corners.
    """
    grouped = corners_in_frames(records)
    pooled = [s for samples in grouped.values() for s in samples]
    if not pooled:
        raise ValueError("cannot fit a corner prior: no vertebra with corners in the training annotations")
    means, covs, counts = {}, {}, {}
    for name, samples in {**grouped, ANY: pooled}.items():
        means[name], covs[name] = _gaussian(samples)
        counts[name] = len(samples)
    return CornerPrior(means, covs, counts)
