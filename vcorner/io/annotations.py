"""Read and write ``annotations.json`` (format ``vcorner-annotations/1``, docs/design.md section 1)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vcorner.io.atomic import write_text_atomic
from vcorner.io.records import ImageRecord, InputError, Vertebra
from vcorner.io.spacing import checked_spacing

FORMAT = "vcorner-annotations/1"


def _points(value: Any, shape: tuple[int | None, int], where: str) -> np.ndarray:
    """Parse a list of [x, y] into a finite float64 array of ``shape`` (None: any count >= 1)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected numbers, got {str(value)[:60]}") from None
    rows, cols = shape
    if array.ndim != 2 or array.shape[1] != cols or array.shape[0] != (rows or array.shape[0]) or not len(array):
        raise InputError(f"{where}: expected shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{where}: contains NaN or infinite coordinates")
    return array


def _vertebra(item: Any, where: str) -> Vertebra:
    if not isinstance(item, dict):
        raise InputError(f"{where}: expected an object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"{where}: missing vertebra 'name'")
    where = f"{where} ({name})"
    if "center" not in item:
        raise InputError(f"{where}: missing 'center'")
    center = _points([item["center"]], (1, 2), f"{where} center")[0]
    corners = _points(item["corners"], (4, 2), f"{where} corners") if item.get("corners") is not None else None
    boundary = item.get("boundary")
    boundary = _points(boundary, (None, 2), f"{where} boundary") if boundary else None
    if boundary is not None and len(boundary) < 3:
        raise InputError(f"{where} boundary: needs at least 3 points, got {len(boundary)}")
    return Vertebra(name=name, center=center, corners=corners, boundary=boundary)


def _spacing(value: Any, where: str) -> float | None:
    if value is None:
        return None
    return checked_spacing(value, f"{where}: pixel_spacing_mm")


def _image(item: Any, where: str) -> ImageRecord:
    if not isinstance(item, dict) or not isinstance(item.get("file"), str) or not item["file"]:
        raise InputError(f"{where}: each image needs a 'file' string")
    where = f"{where} ({item['file']})"
    vertebrae = item.get("vertebrae", [])
    if not isinstance(vertebrae, list):
        raise InputError(f"{where}: 'vertebrae' must be a list")
    parsed = tuple(_vertebra(v, f"{where} vertebra {i}") for i, v in enumerate(vertebrae))
    names = [v.name for v in parsed]
    if len(set(names)) != len(names):
        raise InputError(f"{where}: duplicated vertebra names {sorted({n for n in names if names.count(n) > 1})}")
    return ImageRecord(item["file"], parsed, _spacing(item.get("pixel_spacing_mm"), where))


def parse_annotations(data: Any, source: str = "annotations") -> list[ImageRecord]:
    """Validate a decoded ``annotations.json`` document and return its images."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a JSON object with 'format' and 'images'")
    if data.get("format") != FORMAT:
        raise InputError(f"{source}: 'format' must be {FORMAT!r}, got {data.get('format')!r}")
    images = data.get("images")
    if not isinstance(images, list):
        raise InputError(f"{source}: 'images' must be a list")
    records = [_image(item, f"{source}: image {i}") for i, item in enumerate(images)]
    files = [r.file for r in records]
    if len(set(files)) != len(files):
        raise InputError(f"{source}: image listed twice: {sorted({f for f in files if files.count(f) > 1})[0]}")
    return records


def read_annotations(path: Path) -> list[ImageRecord]:
    """Read and validate ``annotations.json``.

    Raises:
        InputError: one line naming the file, the image or vertebra, and the problem.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    return parse_annotations(data, str(path))


def _round(points: np.ndarray) -> list[list[float]]:
    return [[round(float(x), 3), round(float(y), 3)] for x, y in np.asarray(points).reshape(-1, 2)]


def _round_spacing(value: float) -> float:
    """A pixel spacing rounded to 6 decimals, or to 6 significant digits when finer (never to 0)."""
    return round(value, max(6, 5 - math.floor(math.log10(value))))


def annotations_to_dict(records: Sequence[ImageRecord]) -> dict[str, Any]:
    """The JSON document for ``records`` (coordinates rounded to 1/1000 pixel)."""
    images = []
    for record in records:
        vertebrae = []
        for v in record.vertebrae:
            item: dict[str, Any] = {"name": v.name, "center": _round(v.center)[0]}
            if v.corners is not None:
                item["corners"] = _round(v.corners)
            if v.boundary is not None:
                item["boundary"] = _round(v.boundary)
            vertebrae.append(item)
        image: dict[str, Any] = {"file": record.file}
        if record.pixel_spacing_mm is not None:
            image["pixel_spacing_mm"] = _round_spacing(record.pixel_spacing_mm)
        image["vertebrae"] = vertebrae
        images.append(image)
    return {"format": FORMAT, "images": images}


def annotations_text(records: Sequence[ImageRecord]) -> str:
    """The text of ``annotations.json`` for ``records``."""
    return json.dumps(annotations_to_dict(records), indent=1, allow_nan=False) + "\n"


def write_annotations(path: Path, records: Sequence[ImageRecord]) -> None:
    """Write ``records`` as ``annotations.json`` atomically."""
    write_text_atomic(Path(path), annotations_text(records))
