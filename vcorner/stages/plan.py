"""What a batch has to do: the images of ``centers.csv`` resolved safely inside DIR."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from vcorner.geometry.sequence import checked_record
from vcorner.io.centers import load_centers
from vcorner.io.formats import is_image_path
from vcorner.io.paths import safe_path, walk_files
from vcorner.io.records import ImageRecord, InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedImage:
    """One image to process: its record (centres) and its path, guaranteed to lie inside DIR."""

    record: ImageRecord
    path: Path


@dataclass(frozen=True)
class Plan:
    """Images to run, images refused before any work (name -> reason), images in DIR without centres, and
    vertebrae left out of images that still run ((image, vertebra) -> reason)."""

    images: list[PlannedImage]
    refused: dict[str, str]
    unlisted: list[str]
    refused_vertebrae: dict[tuple[str, str], str] = field(default_factory=dict)


def make_plan(image_dir: Path, centers_csv: Path) -> Plan:
    """Read ``centers.csv`` and resolve each image inside ``image_dir``.

    Raises:
        InputError: DIR missing, or a structurally broken CSV.
    """
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise InputError(f"{image_dir}: {'not a directory' if image_dir.exists() else 'no such directory'}")
    table = load_centers(centers_csv)
    images, refused, refused_vertebrae = [], dict(table.problems), {}
    for listed_record in table.records:
        try:
            path = safe_path(image_dir, listed_record.file)
            record, left_out = checked_record(listed_record)
        except InputError as err:
            refused[listed_record.file] = str(err)
            continue
        refused_vertebrae.update({(record.file, name): reason for name, reason in left_out.items()})
        images.append(PlannedImage(record, path))
    listed = {p.path for p in images} | {(image_dir / name).resolve() for name in refused}

    found, _ = walk_files(image_dir)
    unlisted = sorted(p.relative_to(image_dir).as_posix() for p in found
                      if is_image_path(p) and p.resolve() not in listed)
    if unlisted:
        log.warning("%d image(s) in %s have no centres in %s and are skipped (e.g. %s)",
                    len(unlisted), image_dir, centers_csv, unlisted[0])
    if refused_vertebrae:
        log.warning("%d vertebra(e) left out for bad centres (listed in errors.csv), e.g. %s",
                    len(refused_vertebrae), next(iter(refused_vertebrae.values())))
    return Plan(images, refused, unlisted, refused_vertebrae)


def plan_folder(image_dir: Path, exclude: Path | None = None) -> Plan:
    """Every image under ``image_dir`` (sorted, subfolders included), without centres: the detector finds them.
    Files under ``exclude`` (an OUT inside DIR, with its overlays) and under any folder vcorner wrote (an
    earlier batch's OUT, marked by its ``run.json``) are left out, with a warning naming them.

    Raises:
        InputError: DIR missing or holding no image.
    """
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise InputError(f"{image_dir}: {'not a directory' if image_dir.exists() else 'no such directory'}")
    found, skipped = walk_files(image_dir, exclude)
    names = sorted(p.relative_to(image_dir).as_posix() for p in found if is_image_path(p))
    earlier = [p for p in skipped if exclude is None or p.resolve() != Path(exclude).resolve()]
    if earlier:
        log.warning("%d folder(s) written by an earlier vcorner batch are not read as radiographs: %s",
                    len(earlier), ", ".join(str(p) for p in earlier))
    if not names:
        outputs = " (it is a vcorner output folder: its overlays are not radiographs)" if earlier[:1] == [
            image_dir] else ""
        raise InputError(f"{image_dir}: no images (PNG, JPEG, TIFF, DICOM) in it{outputs}")
    return Plan([PlannedImage(ImageRecord(name), safe_path(image_dir, name)) for name in names], {}, [])
