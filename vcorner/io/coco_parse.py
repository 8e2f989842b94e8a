"""A COCO keypoints document parsed into typed entries, every field checked.

Every problem is one :class:`InputError` line naming the file, the entry (``images[3]``) and the field, e.g.
``coco.json: images[3] 'pixel_spacing_mm': must be a positive finite number, got "abc"``. Coordinates stay in
COCO's convention here (origin at the top-left corner of the top-left pixel); ``vcorner.io.coco`` maps them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import numpy as np

from vcorner.io.records import InputError
from vcorner.io.spacing import spacing_problem

_MISSING = object()
T = TypeVar("T")


@dataclass(frozen=True)
class CocoImage:
    """One entry of ``images`` (``index``: its position in the list; ``width``/``height`` 0: unknown)."""

    index: int
    id: int
    file_name: str
    width: int
    height: int
    pixel_spacing_mm: float | None


@dataclass(frozen=True)
class CocoCategory:
    """One entry of ``categories``; ``keypoints`` the names of its keypoints (empty when it has none)."""

    index: int
    id: int
    name: str
    keypoints: tuple[str, ...]


@dataclass(frozen=True)
class CocoAnnotation:
    """One entry of ``annotations``.

    Attributes:
        keypoints: (K, 3) x, y, visibility in COCO pixels, or None when the entry has none.
        center: (2,) vcorner's extra centre in COCO pixels, or None.
        boundary: (P, 2) vcorner's extra contour (P >= 3) in COCO pixels, or None.
        order: vcorner's extra position of the vertebra in its image (0: cranial), or None.
    """

    index: int
    image_id: int
    category_id: int
    keypoints: np.ndarray | None
    center: np.ndarray | None
    boundary: np.ndarray | None
    order: int | None


@dataclass(frozen=True)
class CocoDocument:
    """The three lists of a COCO keypoints file, parsed."""

    images: tuple[CocoImage, ...]
    categories: tuple[CocoCategory, ...]
    annotations: tuple[CocoAnnotation, ...]


def _show(value: Any) -> str:
    """A value as the user wrote it in JSON, cut to 60 characters."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(where: str, key: str, problem: str, value: Any) -> NoReturn:
    if value is _MISSING:
        raise InputError(f"{where} {key!r}: missing; it {problem}")
    raise InputError(f"{where} {key!r}: {problem}, got {_show(value)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_float(value: Any) -> float | None:
    """``value`` as a float (NaN and infinities included), or None when it is no number or too large."""
    if not _is_number(value):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None."""
    number = _as_float(value)
    return number if number is not None and math.isfinite(number) else None


def _integer(entry: dict, key: str, where: str, *, required: bool = True) -> int | None:
    """A non-negative integer field (an integral float is accepted); None when absent and not required."""
    value = entry.get(key, _MISSING)
    if (value is _MISSING or value is None) and not required:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        _fail(where, key, "must be a non-negative integer", value)
    return value


def _text(entry: dict, key: str, where: str) -> str:
    value = entry.get(key, _MISSING)
    if not isinstance(value, str) or not value:
        _fail(where, key, "must be a non-empty string", value)
    return value


def _spacing(entry: dict, where: str) -> float | None:
    value = entry.get("pixel_spacing_mm")
    if value is None:
        return None
    spacing = _finite(value)
    if spacing is None or spacing <= 0:
        _fail(where, "pixel_spacing_mm", "must be a positive finite number (mm per pixel)", value)
    if (problem := spacing_problem(spacing)) is not None:
        raise InputError(f"{where} 'pixel_spacing_mm': {problem}")
    return spacing


def _numbers(entry: dict, key: str, where: str, multiple: int) -> np.ndarray | None:
    """A flat list of numbers whose length is a multiple of ``multiple``, as (N, multiple); None when absent.
    NaN and infinities pass (JSON numbers too large for a float do not)."""
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) % multiple or any(_as_float(v) is None for v in value):
        _fail(where, key, f"must be a list of numbers, {multiple} per point", value)
    return np.asarray(value, dtype=np.float64).reshape(-1, multiple)


def _center(entry: dict, where: str) -> np.ndarray | None:
    """vcorner's extra ``center``: [x, y], finite; None when absent."""
    value = entry.get("center")
    if value is not None and (not isinstance(value, list) or len(value) != 2):
        _fail(where, "center", "must be [x, y] (two finite numbers)", value)
    points = _numbers(entry, "center", where, 2)
    if points is not None and not np.all(np.isfinite(points)):
        _fail(where, "center", "must be [x, y] (two finite numbers)", entry["center"])
    return None if points is None else points[0]


def _boundary(entry: dict, where: str) -> np.ndarray | None:
    """vcorner's extra ``boundary``: x, y pairs of at least 3 finite points; None when absent or empty."""
    points = _numbers(entry, "boundary", where, 2)
    if points is None or not len(points):
        return None
    if len(points) < 3 or not np.all(np.isfinite(points)):
        _fail(where, "boundary", "must hold at least 3 points of finite x, y numbers", entry["boundary"])
    return points


def _segmentation(entry: dict, where: str) -> None:
    """Check ``segmentation`` (unused by vcorner): polygons of x, y pairs, or a run-length dict."""
    value = entry.get("segmentation")
    if value is None or isinstance(value, dict):
        return
    polygons = [value] if isinstance(value, list) and all(_is_number(v) for v in value) else value
    if not isinstance(polygons, list) or not all(
            isinstance(p, list) and all(_is_number(v) for v in p) and len(p) % 2 == 0 for p in polygons):
        _fail(where, "segmentation", "must be polygons of x, y numbers (an even count each)", value)


def _object(item: Any, where: str) -> dict:
    if not isinstance(item, dict):
        raise InputError(f"{where}: must be an object, got {_show(item)}")
    return item


def _image(item: Any, where: str, index: int) -> CocoImage:
    entry = _object(item, where)
    file_name = _text(entry, "file_name", where)
    width = _integer(entry, "width", where, required=False) or 0
    height = _integer(entry, "height", where, required=False) or 0
    return CocoImage(index, _integer(entry, "id", where), file_name, width, height, _spacing(entry, where))


def _category(item: Any, where: str, index: int) -> CocoCategory:
    entry = _object(item, where)
    names = entry.get("keypoints", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        _fail(where, "keypoints", "must be a list of keypoint names", names)
    return CocoCategory(index, _integer(entry, "id", where), _text(entry, "name", where), tuple(names))


def _annotation(item: Any, where: str, index: int) -> CocoAnnotation:
    entry = _object(item, where)
    _segmentation(entry, where)
    return CocoAnnotation(
        index, _integer(entry, "image_id", where), _integer(entry, "category_id", where),
        _numbers(entry, "keypoints", where, 3), _center(entry, where), _boundary(entry, where),
        _integer(entry, "order", where, required=False))


def _unique(entries: Sequence[T], key: Callable[[T], Hashable], source: str, section: str, field: str) -> None:
    """Refuse two entries of ``section`` sharing ``key`` (one line naming both entries and the value)."""
    seen: dict[Hashable, int] = {}
    for position, entry in enumerate(entries):
        value = key(entry)
        if value in seen:
            raise InputError(f"{source}: {section}[{seen[value]}] and {section}[{position}] share {field} "
                             f"{_show(value)}; each {field} must be listed once")
        seen[value] = position


def parse_coco(data: Any, source: str = "COCO file") -> CocoDocument:
    """Parse and check a decoded COCO keypoints document.

    Images and categories must have unique ids, images unique file names; every annotation must refer to a
    listed image and category.

    Raises:
        InputError: one line naming ``source``, the entry and the field.
    """
    sections = ("images", "categories", "annotations")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in sections):
        raise InputError(f"{source}: not a COCO keypoints file (needs 'images', 'annotations' and 'categories')")
    images = tuple(_image(item, f"{source}: images[{i}]", i) for i, item in enumerate(data["images"]))
    categories = tuple(_category(item, f"{source}: categories[{i}]", i) for i, item in enumerate(data["categories"]))
    annotations = tuple(_annotation(item, f"{source}: annotations[{i}]", i)
                        for i, item in enumerate(data["annotations"]))
    _unique(images, lambda e: e.id, source, "images", "id")
    _unique(images, lambda e: e.file_name, source, "images", "file_name")
    _unique(categories, lambda e: e.id, source, "categories", "id")
    image_ids, category_ids = {e.id for e in images}, {e.id for e in categories}
    for a in annotations:
        if a.image_id not in image_ids:
            raise InputError(f"{source}: annotations[{a.index}] 'image_id': refers to image {a.image_id}, which is "
                             "not in 'images'")
        if a.category_id not in category_ids:
            raise InputError(f"{source}: annotations[{a.index}] 'category_id': refers to category {a.category_id}, "
                             "which is not in 'categories'")
    return CocoDocument(images, categories, annotations)
