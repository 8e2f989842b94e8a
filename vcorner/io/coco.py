"""COCO keypoints <-> vcorner annotations, and corners.csv -> COCO (README.md, Interoperability).

The mapping: one COCO category per vertebra name (``C3``...), each with the four keypoints
``superior_left, superior_right, inferior_left, inferior_right`` and the skeleton of the quadrilateral; one
annotation per vertebra with ``keypoints`` [x, y, v] x 4 (v = 2: labelled and visible), a ``bbox`` around
the corners, and vcorner's own ``center`` and ``boundary`` when it has them (other tools ignore extra
fields; the centre otherwise is the mean of the four corners). COCO puts the origin at the top-left corner
of the top-left pixel, vcorner at its centre: x_coco = x + 0.5, and back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from vcorner import CORNER_NAMES
from vcorner.io.corners_table import group_corner_rows
from vcorner.io.records import ImageRecord, InputError, Vertebra, anatomical_rank
from vcorner.io.spacing import checked_spacing

log = logging.getLogger(__name__)

SHIFT = 0.5
"""COCO coordinate minus vcorner coordinate, pixels."""
SKELETON = [[1, 2], [2, 4], [4, 3], [3, 1]]


def _to_coco(points: np.ndarray) -> list[float]:
    return [float(v) for v in (np.asarray(points, dtype=np.float64) + SHIFT).reshape(-1)]


def _from_coco(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1, 2) - SHIFT


def categories_for(names: Sequence[str]) -> list[dict[str, Any]]:
    """COCO categories, one per vertebra name (anatomical order first, then as met), ids from 1."""
    ordered = sorted(dict.fromkeys(names), key=lambda n: (anatomical_rank(n) is None, anatomical_rank(n) or 0))
    return [{"id": i, "name": name, "supercategory": "vertebra", "keypoints": list(CORNER_NAMES),
             "skeleton": SKELETON} for i, name in enumerate(ordered, start=1)]


def _annotation(index: int, image_id: int, category: int, v: Vertebra, score: float | None = None) -> dict:
    corners = np.asarray(v.corners, dtype=np.float64)
    low, high = corners.min(axis=0) + SHIFT, corners.max(axis=0) + SHIFT
    keypoints = []
    for x, y in corners + SHIFT:
        keypoints += [float(x), float(y), 2]
    item: dict[str, Any] = {"id": index, "image_id": image_id, "category_id": category, "keypoints": keypoints,
                            "num_keypoints": 4, "bbox": [float(low[0]), float(low[1]), *map(float, high - low)],
                            "area": float(np.prod(high - low)), "iscrowd": 0, "center": _to_coco(v.center)}
    if v.boundary is not None:
        item["boundary"] = _to_coco(v.boundary)
    if score is not None:
        item["score"] = float(score)
    return item


def records_to_coco(records: Sequence[ImageRecord], sizes: dict[str, tuple[int, int] | None] | None = None,
                    scores: dict[tuple[str, str], float] | None = None) -> dict[str, Any]:
    """A COCO keypoints document of the vertebrae with corners (``sizes``: image -> (width, height);
    ``scores``: (image, vertebra) -> score for predictions)."""
    categories = categories_for([v.name for r in records for v in r.vertebrae])
    category = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []
    for image_id, record in enumerate(records, start=1):
        width, height = (sizes or {}).get(record.file) or (0, 0)
        entry: dict[str, Any] = {"id": image_id, "file_name": record.file, "width": width, "height": height}
        if record.pixel_spacing_mm is not None:
            entry["pixel_spacing_mm"] = record.pixel_spacing_mm
        images.append(entry)
        for v in record.vertebrae:
            if v.corners is None:
                log.warning("%s: vertebra %s has no corners; not written to COCO", record.file, v.name)
                continue
            score = (scores or {}).get((record.file, v.name)) if scores is not None else None
            annotations.append(_annotation(len(annotations) + 1, image_id, category[v.name], v, score))
    return {"info": {"description": "vertebral corners (vcorner)"}, "images": images, "annotations": annotations,
            "categories": categories}


def _keypoint_order(category: dict, source: str) -> list[int] | None:
    """Indices into the category's keypoints of vcorner's four corners; None (with a warning) without them."""
    names = category.get("keypoints") or []
    missing = [n for n in CORNER_NAMES if n not in names]
    if missing:
        return None
    return [names.index(n) for n in CORNER_NAMES]


def _vertebra(item: dict, name: str, order: list[int], where: str) -> Vertebra | None:
    """A vertebra from one COCO annotation; None (with a warning) when a corner is not labelled (v = 0)."""
    values = np.asarray(item.get("keypoints") or [], dtype=np.float64)
    if values.size % 3 or values.size // 3 <= max(order):
        raise InputError(f"{where}: 'keypoints' must hold [x, y, v] for each of the category's keypoints")
    triples = values.reshape(-1, 3)[order]
    if np.any(triples[:, 2] <= 0) or not np.all(np.isfinite(triples)):
        log.warning("%s: vertebra %s has an unlabelled corner (visibility 0); left out (not usable for "
                    "training)", where, name)
        return None
    corners = triples[:, :2] - SHIFT
    center = _from_coco(item["center"])[0] if item.get("center") is not None else corners.mean(axis=0)
    boundary = _from_coco(item["boundary"]) if item.get("boundary") else None
    return Vertebra(name, center, corners, boundary)


def _ordered(vertebrae: list[Vertebra], category_rank: dict[str, int]) -> tuple[Vertebra, ...]:
    """Vertebrae cranial first: anatomical order for anatomical names, else the categories' order."""
    if all(anatomical_rank(v.name) is not None for v in vertebrae):
        return tuple(sorted(vertebrae, key=lambda v: anatomical_rank(v.name)))
    return tuple(sorted(vertebrae, key=lambda v: category_rank[v.name]))


def coco_to_records(data: Any, source: str = "COCO file") -> list[ImageRecord]:
    """vcorner records from a COCO keypoints document.

    Categories without the four corner keypoints are skipped with a warning; annotations of skipped
    categories, unlabelled corners and duplicated vertebrae are left out with warnings.

    Raises:
        InputError: not a COCO document, no category with the four corner keypoints, an annotation of an
            image that is not listed (one line naming the file and the problem).
    """
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                      "categories")):
        raise InputError(f"{source}: not a COCO keypoints file (needs 'images', 'annotations' and 'categories')")
    orders, names, rank = {}, {}, {}
    for position, category in enumerate(data["categories"]):
        order = _keypoint_order(category, source)
        if order is None:
            log.warning("%s: category %r lacks the keypoints %s; skipped", source, category.get("name"),
                        ", ".join(CORNER_NAMES))
            continue
        orders[category["id"]], names[category["id"]], rank[category["name"]] = order, category["name"], position
    if not orders:
        raise InputError(f"{source}: no category has the four keypoints {', '.join(CORNER_NAMES)}")
    images = {image["id"]: image for image in data["images"]}
    found: dict[int, dict[str, Vertebra]] = {i: {} for i in images}
    for item in data["annotations"]:
        if item.get("image_id") not in images:
            raise InputError(f"{source}: annotation {item.get('id')} refers to image {item.get('image_id')}, "
                             "which is not in 'images'")
        if item.get("category_id") not in orders:
            continue
        image = images[item["image_id"]]
        name = names[item["category_id"]]
        where = f"{source}: {image.get('file_name')}"
        vertebra = _vertebra(item, name, orders[item["category_id"]], where)
        if vertebra is None:
            continue
        if name in found[item["image_id"]]:
            log.warning("%s: vertebra %s annotated twice; the first is kept", where, name)
            continue
        found[item["image_id"]][name] = vertebra
    records = []
    for image_id, image in images.items():
        spacing = image.get("pixel_spacing_mm")
        if spacing is not None:
            spacing = checked_spacing(spacing, f"{source}: image {image['file_name']}: pixel_spacing_mm")
        records.append(ImageRecord(str(image["file_name"]), _ordered(list(found[image_id].values()), rank),
                                   spacing))
    return records


def corners_csv_records(text: str, source: str = "corners.csv") -> tuple[list[ImageRecord],
                                                                         dict[tuple[str, str], float]]:
    """Records (centre: the mean of the four corners) and per-vertebra scores (mean corner confidence) of a
    ``corners.csv``; vertebrae without their four corners are left out with a warning.

    Raises:
        InputError: not a corners.csv (one line).
    """

    records, scores = [], {}
    for image, vertebrae in group_corner_rows(text, source).items():
        kept = []
        for name, rows in vertebrae.items():
            try:
                corners = np.array([[float(rows[c]["x"]), float(rows[c]["y"])] for c in CORNER_NAMES])
                confidence = float(np.mean([float(rows[c].get("confidence") or 0.0) for c in CORNER_NAMES]))
            except (KeyError, ValueError):
                log.warning("%s: %s vertebra %s lacks a usable corner; left out", source, image, name)
                continue
            kept.append(Vertebra(name, corners.mean(axis=0), corners))
            scores[(image, name)] = confidence
        records.append(ImageRecord(image, tuple(kept)))
    return records, scores
