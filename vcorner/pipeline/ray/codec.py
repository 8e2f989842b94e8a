"""What travels between the driver and the actors of a Ray batch: one dataset row per image (its path and its own
centres as JSON) and one result row per image (its outcome, pickled)."""

from __future__ import annotations

import json
import pickle

import numpy as np

from vcorner.io.records import ImageRecord, Vertebra
from vcorner.pipeline.outcomes import Outcome
from vcorner.stages.plan import PlannedImage


def record_to_json(record: ImageRecord) -> str:
    """An image's record (file, spacing, view, flags, named centres in pixels) as one JSON text."""
    return json.dumps({"file": record.file, "spacing": record.pixel_spacing_mm, "view": record.view,
                       "flags": list(record.flags),
                       "vertebrae": [[v.name, *map(float, v.center)] for v in record.vertebrae]})


def record_from_json(text: str) -> ImageRecord:
    """The record :func:`record_to_json` wrote."""
    data = json.loads(text)
    vertebrae = tuple(Vertebra(n, np.array([x, y])) for n, x, y in data["vertebrae"])
    return ImageRecord(data["file"], vertebrae, data["spacing"], data.get("view", "as_is"),
                       tuple(data.get("flags", ())))


def plan_rows(images: list[PlannedImage]) -> list[dict[str, str]]:
    """One dataset row per image: its path and its listed centres, which travel with it to the actor."""
    return [{"path": str(p.path), "record": record_to_json(p.record)} for p in images]


def outcome_columns(outcomes: list[Outcome]) -> dict[str, list]:
    """The result rows of a call: each image's name and its ``Finished`` (rows, patches, detected centres) or
    ``Failed`` pickled, as Ray pickles everything it moves between the processes of one vcorner."""
    return {"image": [o.image for o in outcomes], "outcome": [pickle.dumps(o) for o in outcomes]}


def outcome_of(row: dict) -> Outcome:
    """The outcome of one result row (:func:`outcome_columns`)."""
    return pickle.loads(row["outcome"])
