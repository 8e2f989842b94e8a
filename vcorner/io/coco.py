"""COCO keypoints <-> vcorner annotations, and corners.csv -> COCO (README.md, Interoperability).

The mapping: one COCO category per vertebra name (``C3``...), each with the four keypoints
``superior_left, superior_right, inferior_left, inferior_right`` and the skeleton of the quadrilateral; one
annotation per vertebra with ``keypoints`` [x, y, v] x 4 (v = 2: labelled and visible), a ``bbox`` around
the corners, and vcorner's own ``center``, ``boundary`` (when it has them) and ``order`` (the vertebra's
position in its image, 0 cranial) (other tools ignore extra fields; the centre otherwise is the mean of the
four corners; without ``order``, anatomical names are put in anatomical order, others in the categories'
order). COCO puts the origin at the top-left corner
of the top-left pixel, vcorner at its centre: x_coco = x + 0.5, and back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vcorner import CORNER_NAMES
from vcorner.io.coco_parse import CocoAnnotation, CocoCategory, CocoDocument, CocoImage, parse_coco
from vcorner.io.corners_table import group_corner_rows
from vcorner.io.records import ImageRecord, InputError, Vertebra, anatomical_rank

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


def _annotation(index: int, image_id: int, category: int, v: Vertebra, order: int,
                score: float | None = None) -> dict:
    corners = np.asarray(v.corners, dtype=np.float64)
    low, high = corners.min(axis=0) + SHIFT, corners.max(axis=0) + SHIFT
    keypoints = []
    for x, y in corners + SHIFT:
        keypoints += [float(x), float(y), 2]
    item: dict[str, Any] = {"id": index, "image_id": image_id, "category_id": category, "keypoints": keypoints,
                            "num_keypoints": 4, "bbox": [float(low[0]), float(low[1]), *map(float, high - low)],
                            "area": float(np.prod(high - low)), "iscrowd": 0, "center": _to_coco(v.center),
                            "order": order}
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
        for order, v in enumerate(record.vertebrae):
            if v.corners is None:
                log.warning("%s: vertebra %s has no corners; not written to COCO", record.file, v.name)
                continue
            score = (scores or {}).get((record.file, v.name)) if scores is not None else None
            annotations.append(_annotation(len(annotations) + 1, image_id, category[v.name], v, order, score))
    return {"info": {"description": "vertebral corners (vcorner)"}, "images": images, "annotations": annotations,
            "categories": categories}


def _keypoint_order(category: CocoCategory) -> list[int] | None:
    """Indices into the category's keypoints of vcorner's four corners; None without them."""
    if any(n not in category.keypoints for n in CORNER_NAMES):
        return None
    return [category.keypoints.index(n) for n in CORNER_NAMES]


def _vertebra(item: CocoAnnotation, name: str, order: list[int], where: str) -> Vertebra | None:
    """A vertebra from one COCO annotation; None (with a warning) when a corner is not labelled (v = 0)."""
    if item.keypoints is None or len(item.keypoints) <= max(order):
        raise InputError(f"{where} 'keypoints': must hold [x, y, v] for each of the category's keypoints")
    triples = item.keypoints[order]
    if np.any(triples[:, 2] <= 0) or not np.all(np.isfinite(triples)):
        log.warning("%s: vertebra %s has an unlabelled corner (visibility 0); left out (not usable for "
                    "training)", where, name)
        return None
    corners = triples[:, :2] - SHIFT
    center = item.center - SHIFT if item.center is not None else corners.mean(axis=0)
    boundary = item.boundary - SHIFT if item.boundary is not None else None
    return Vertebra(name, center, corners, boundary)


def _ordered(found: list[tuple[CocoAnnotation, Vertebra]], category_rank: dict[str, int]) -> tuple[Vertebra, ...]:
    """Vertebrae cranial first: by vcorner's recorded ``order`` when every annotation has one, else anatomical
    order for anatomical names, else the categories' order."""
    if all(item.order is not None for item, _ in found):
        return tuple(v for _, v in sorted(found, key=lambda pair: pair[0].order))
    vertebrae = [v for _, v in found]
    if all(anatomical_rank(v.name) is not None for v in vertebrae):
        return tuple(sorted(vertebrae, key=lambda v: anatomical_rank(v.name)))
    return tuple(sorted(vertebrae, key=lambda v: category_rank[v.name]))


def _corner_categories(document: CocoDocument, source: str) -> dict[int, tuple[CocoCategory, list[int]]]:
    """Category id -> (category, corner indices) of the categories with the four corner keypoints."""
    kept = {}
    for category in document.categories:
        order = _keypoint_order(category)
        if order is None:
            log.warning("%s: category %r lacks the keypoints %s; skipped", source, category.name,
                        ", ".join(CORNER_NAMES))
            continue
        kept[category.id] = (category, order)
    if not kept:
        raise InputError(f"{source}: no category has the four keypoints {', '.join(CORNER_NAMES)}")
    return kept


def document_records(document: CocoDocument, source: str = "COCO file") -> list[ImageRecord]:
    """vcorner records from a parsed COCO document (see :func:`coco_to_records`)."""
    categories = _corner_categories(document, source)
    rank = {category.name: category.index for category, _ in categories.values()}
    files = {image.id: image.file_name for image in document.images}
    found: dict[int, dict[str, tuple[CocoAnnotation, Vertebra]]] = {image.id: {} for image in document.images}
    for item in document.annotations:
        if item.category_id not in categories:
            continue
        category, order = categories[item.category_id]
        where = f"{source}: annotations[{item.index}] ({files[item.image_id]}, {category.name})"
        vertebra = _vertebra(item, category.name, order, where)
        if vertebra is None:
            continue
        if category.name in found[item.image_id]:
            log.warning("%s: vertebra %s annotated twice; the first is kept", where, category.name)
            continue
        found[item.image_id][category.name] = (item, vertebra)
    return [ImageRecord(image.file_name, _ordered(list(found[image.id].values()), rank), image.pixel_spacing_mm)
            for image in document.images]


def coco_to_records(data: Any, source: str = "COCO file") -> list[ImageRecord]:
    """vcorner records from a decoded COCO keypoints document.

    Categories without the four corner keypoints are skipped with a warning; annotations of skipped
    categories, unlabelled corners and duplicated vertebrae are left out with warnings.

    Raises:
        InputError: a malformed or inconsistent document (:func:`vcorner.io.coco_parse.parse_coco`), no
            category with the four corner keypoints, too few keypoints (one line naming the file, the entry
            and the field).
    """
    return document_records(parse_coco(data, source), source)


def check_image_sizes(images: Sequence[CocoImage], sizes: Mapping[str, tuple[int, int] | None],
                      source: str = "COCO file") -> None:
    """Refuse an image whose recorded width and height differ from its file's (``sizes``: file_name ->
    (width, height), None when unknown); images without a recorded size (0 x 0) pass.

    Raises:
        InputError: one line naming the image and both sizes.
    """
    for image in images:
        real = sizes.get(image.file_name)
        if real is None or not (image.width or image.height) or (image.width, image.height) == tuple(real):
            continue
        raise InputError(f"{source}: images[{image.index}] ({image.file_name}) 'width'/'height': recorded as "
                         f"{image.width} x {image.height} pixels, but the image file is {real[0]} x {real[1]}; "
                         "its coordinates would be read at the wrong scale")


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
                corners, confidence = None, 0.0
            if corners is None or not (np.all(np.isfinite(corners)) and np.isfinite(confidence)):
                log.warning("%s: %s vertebra %s lacks a usable corner (missing, not a number, NaN or "
                            "infinite); left out", source, image, name)
                continue
            kept.append(Vertebra(name, corners.mean(axis=0), corners))
            scores[(image, name)] = confidence
        records.append(ImageRecord(image, tuple(kept)))
    return records, scores
