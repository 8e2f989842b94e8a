"""``vcorner convert SRC DST``: COCO keypoints <-> annotations.json, and corners.csv -> COCO."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vcorner.cli.common import stderr, user_errors
from vcorner.io.claims import claim_files
from vcorner.io.records import InputError


def _kind(path: Path) -> tuple[str, object]:
    """('corners', text) for a corners.csv, ('vcorner', data) for annotations.json, ('coco', data) for COCO."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text (expected a JSON file or a corners.csv)") from None
    if path.suffix.lower() == ".csv":
        return "corners", text
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, dict) and str(data.get("format", "")).startswith("vcorner-annotations"):
        return "vcorner", data
    return "coco", data


def _sizes(files: list[str], images: Path | None, unreadable: str) -> dict[str, tuple[int, int] | None]:
    """Image sizes from their headers under ``images``, with a warning (``unreadable``: what follows) for
    files that cannot be read."""
    from vcorner.io.images import image_size

    if images is None:
        return {}
    sizes = {f: image_size(images / f) for f in files if ".." not in Path(f).parts}
    missing = [f for f, s in sizes.items() if s is None]
    if missing:
        stderr.print(f"[yellow]warning:[/] {len(missing)} image(s) not readable under {images} (e.g. {missing[0]}): "
                     f"{unreadable}", highlight=False, soft_wrap=True)
    return sizes


def _converted(src: Path, images: Path | None) -> tuple[str, str]:
    """The text to write for SRC, and a one-line summary of it."""
    from vcorner.io.annotations import annotations_text, parse_annotations
    from vcorner.io.coco import check_image_sizes, corners_csv_records, document_records, records_to_coco
    from vcorner.io.coco_parse import parse_coco

    kind, data = _kind(src)
    if kind == "coco":
        document = parse_coco(data, str(src))
        files = [image.file_name for image in document.images]
        check_image_sizes(document.images, _sizes(files, images, "their width and height not checked"), str(src))
        records = document_records(document, str(src))
        vertebrae = sum(len(r.vertebrae) for r in records)
        return annotations_text(records), f"{len(records)} image(s), {vertebrae} vertebrae -> annotations.json"
    scores = None
    if kind == "vcorner":
        records = parse_annotations(data, str(src))
        folder = images or src.parent
    else:
        records, scores = corners_csv_records(str(data), str(src))
        folder = images or _run_images(src.parent)
    sizes = _sizes([r.file for r in records], folder, "width and height written as 0")
    document = records_to_coco(records, sizes, scores)
    what = f"{len(document['images'])} image(s), {len(document['annotations'])} vertebrae -> COCO keypoints"
    return json.dumps(document, indent=1, allow_nan=False) + "\n", what


def convert(
    src: Annotated[Path, typer.Argument(help="annotations.json, a COCO keypoints JSON, or a corners.csv.")],
    dst: Annotated[Path, typer.Argument(help="The file to write: COCO JSON, or annotations.json from COCO.")],
    images: Annotated[Path | None, typer.Option(
        help="Images folder, for the width and height COCO records (default: SRC's folder for annotations.json, "
             "the run's images for a corners.csv); from COCO, the recorded sizes are checked against it.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an existing DST (the earlier file is moved into previous-<time>/ beside it).",
    )] = False,
) -> None:
    """Convert between vcorner's annotations.json and COCO keypoints (one category per vertebra, the four
    corners as keypoints), or write a batch's corners.csv as COCO with scores (for CVAT, FiftyOne...).
    DST is never SRC, and an existing DST is replaced only with --force (and kept in previous-<time>/)."""
    from vcorner.io.atomic import write_text_atomic

    with user_errors():
        text, what = _converted(src, images)
        kept = claim_files([dst], inputs=[src], force=force)
        write_text_atomic(dst, text)
    if kept is not None:
        stderr.print(f"the earlier {dst.name} was moved into {kept}", highlight=False, soft_wrap=True)
    stderr.print(f"{what}: {dst}", highlight=False, soft_wrap=True)


def _run_images(out: Path) -> Path | None:
    """The images folder a batch recorded in OUT/run.json, if any."""
    from vcorner.pipeline.manifest import read_manifest

    folder = (read_manifest(out) or {}).get("images")
    return Path(folder) if folder else None
