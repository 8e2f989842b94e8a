"""Accuracy columns: the phantom set, maps decoded into corners, mean P2P and deltas against a reference."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vcorner.evaluation.metrics import match, table1_row
from vcorner.io.annotations import read_annotations
from vcorner.io.records import ImageRecord
from vcorner.models.card import ModelCard
from vcorner.phantoms.dataset import synthesize_dataset
from vcorner.pipeline.outputs import CORNER_COLUMNS, corner_rows
from vcorner.stages.finish import finish
from vcorner.stages.plan import PlannedImage
from vcorner.stages.prepare import prepare


@dataclass
class PhantomSet:
    """Prepared jobs of the benchmark images and their annotations."""

    jobs: list
    truth: list[ImageRecord]
    patches: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.patches = np.concatenate([job.patches for job in self.jobs])


@dataclass(frozen=True)
class Accuracy:
    """A variant's maps and corners on the phantom set."""

    maps: np.ndarray
    predictions: dict[tuple[str, str, str], dict[str, str]]
    p2p_mean: float
    unit: str


def phantom_set(folder: Path, card: ModelCard, images: int, seed: int) -> PhantomSet:
    """Write ``images`` phantoms at ``seed`` into ``folder`` and cut their patches as inference does."""

    synthesize_dataset(folder, images, seed, workers=1)
    truth = read_annotations(folder / "annotations.json")
    return PhantomSet([prepare(PlannedImage(r, folder / r.file), card) for r in truth], truth)


def decode_predictions(maps: np.ndarray, phantoms: PhantomSet, card: ModelCard) -> dict:
    """``corners.csv``-like rows keyed by (image, vertebra, corner), decoded from ``maps`` of every patch."""

    rows, offset = {}, 0
    for job in phantoms.jobs:
        job.maps = maps[offset:offset + len(job.patches)]
        offset += len(job.patches)
        for row in corner_rows(job.name, finish(job, card)[0]):
            rows[tuple(row[:3])] = dict(zip(CORNER_COLUMNS, row, strict=True))
    return rows


def evaluate(maps: np.ndarray, phantoms: PhantomSet, card: ModelCard) -> Accuracy:
    """Decoded corners and mean P2P of the maps of every phantom patch."""

    predictions = decode_predictions(maps, phantoms, card)
    summary = table1_row(match(predictions, phantoms.truth))
    return Accuracy(maps, predictions, summary["p2p_mean"], summary["unit"])


def corner_shift(a: dict, b: dict) -> float:
    """Mean distance (px) between the corners two prediction sets share (NaN when none)."""
    pairs = np.asarray([[[float(p[k]["x"]), float(p[k]["y"])] for p in (a, b)] for k in set(a) & set(b)])
    return float(np.mean(np.linalg.norm(pairs[:, 0] - pairs[:, 1], axis=1))) if len(pairs) else float("nan")


def compare(result: Accuracy, reference: Accuracy | None) -> dict[str, Any]:
    """Accuracy columns of a row: mean P2P and its change, max |map difference|, corner shift."""
    out: dict[str, Any] = {"p2p_mean": round(result.p2p_mean, 4), "p2p_unit": result.unit}
    if reference is not None:
        out.update(max_abs_diff=float(np.max(np.abs(result.maps - reference.maps))),
                   p2p_delta=round(result.p2p_mean - reference.p2p_mean, 4),
                   corner_shift_px=round(corner_shift(result.predictions, reference.predictions), 4))
    return out
