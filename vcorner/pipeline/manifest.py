"""``OUT/run.json``: what produced the corners already in OUT, so that a resumed run redoes what changed.

It records the model that ran (:meth:`vcorner.runtime.base.Runner.identity`: the SHA-256 of the graph or
checkpoint actually run, so an INT8 or FP16 variant is another model) and, per image, a digest of the
centres (and pixel spacing) the corners were found from. A resumed run refuses a different model (one line:
use ``--no-resume`` or another ``--out``), and redoes an image whose centres changed or whose requested
``--json``/``--vis`` file is missing. It also records the digest of the model card the corners were decoded
with (:func:`vcorner.models.modelfile.card_digest`): after ``vcorner tune`` rewrites the card, every image is redone.
Images of earlier runs that this run does not plan keep their entries (OUT holds the union of its runs).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from vcorner.io.atomic import write_text_atomic
from vcorner.io.paths import RUN_FORMAT, RUN_MARKER
from vcorner.io.records import ImageRecord, InputError
from vcorner.pipeline.overlay import overlay_name

MANIFEST = RUN_MARKER
FORMAT = RUN_FORMAT


def centers_digest(record: ImageRecord) -> str:
    """16 hex digits identifying an image's vertebra names, centres (px), pixel spacing (mm) and view (only when
    it is not ``as_is``, so that the digests of earlier runs stay valid)."""
    data = [record.pixel_spacing_mm, [[v.name, float(v.center[0]), float(v.center[1])] for v in record.vertebrae]]
    if record.view != "as_is":
        data.append(record.view)
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """``OUT/run.json``, or None when missing or unreadable (corners from before manifests are trusted)."""
    try:
        data = json.loads((Path(out_dir) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def write_manifest(out_dir: Path, model_id: str | None, records: list[ImageRecord], card_id: str | None = None,
                   previous: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
    """Record the model and, per planned image, its centres digest, the card it is decoded with and its row
    count (atomically), keeping the entries of ``previous`` images that this run does not plan; ``extra``
    adds fields (e.g. warnings)."""
    old = previous or {}
    listed = [r for r in records if r.vertebrae]  # images still to detect get theirs in record_detected
    centers = {**(old.get("centers") or {}), **{r.file: centers_digest(r) for r in listed}}
    old_cards = old.get("cards") or dict.fromkeys(old.get("centers") or {}, old.get("card"))
    cards = {**old_cards, **dict.fromkeys((r.file for r in records), card_id)}
    rows = {**(old.get("rows") or {}), **{r.file: 4 * len(r.vertebrae) for r in listed}}
    data = {**(extra or {}), "format": FORMAT, "model": model_id, "card": card_id, "centers": centers,
            "cards": cards, "rows": rows}  # an extra note never replaces what resuming checks
    write_text_atomic(Path(out_dir) / MANIFEST, json.dumps(data, indent=1, allow_nan=False) + "\n")


def changed_cards(manifest: dict[str, Any] | None, images: list[str], card_id: str | None) -> set[str]:
    """Images whose kept corners were decoded with another card than ``card_id`` (both known)."""
    old = manifest or {}
    cards = old.get("cards") or {}
    return {image for image in images
            if card_id and (cards.get(image) or old.get("card")) and (cards.get(image) or old.get("card")) != card_id}


def known_rows(manifest: dict[str, Any] | None) -> dict[str, int]:
    """Rows each image of an earlier run should have (4 per vertebra), as recorded."""
    return {k: int(v) for k, v in ((manifest or {}).get("rows") or {}).items()}


def check_same_model(manifest: dict[str, Any] | None, model_id: str | None, out_dir: Path) -> None:
    """Raise a one-line InputError when OUT's corners came from another model.

    Raises:
        InputError: the manifest names a different model.
    """
    old = (manifest or {}).get("model")
    if old and model_id and old != model_id:
        raise InputError(f"{out_dir} holds corners from another model or precision ({old[:12]}, this run "
                         f"{model_id[:12]}): pass --no-resume to redo them, or choose another --out")


def changed_centers(manifest: dict[str, Any] | None, records: list[ImageRecord]) -> set[str]:
    """Images whose centres differ from those their kept corners were found from."""
    old = (manifest or {}).get("centers") or {}
    return {r.file for r in records if r.file in old and old[r.file] != centers_digest(r)}


def missing_extras(out_dir: Path, images: list[str], write_json: bool, vis: bool) -> set[str]:
    """Images lacking a requested ``json/<image>.json`` or ``vis/<image>`` overlay."""

    out_dir = Path(out_dir)
    return {image for image in images
            if (write_json and not _is_file(out_dir / "json" / f"{image}.json"))
            or (vis and not _is_file(out_dir / "vis" / overlay_name(image)))}


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for a name the file system refuses (too long: that image fails when written)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def record_detected(out_dir: Path, records: list[ImageRecord]) -> None:
    """Add the centres digest and row count of images whose centres the detector found in this run (``records``:
    their centres after the sequence checks, which the corners came from)."""
    data = read_manifest(out_dir)
    if data is None or not records:
        return
    for record in records:
        data.setdefault("centers", {})[record.file] = centers_digest(record)
        data.setdefault("rows", {})[record.file] = 4 * len(record.vertebrae)
    write_text_atomic(Path(out_dir) / MANIFEST, json.dumps(data, indent=1, allow_nan=False) + "\n")


def check_same_detector(manifest: dict[str, Any] | None, detector_id: str | None, out_dir: Path) -> None:
    """Raise a one-line InputError when OUT's detected centres came from another detector (or view finder:
    ``detector_id`` is then the detector's SHA-256, ``+``, the finder's, and ``+`` the second namer's;
    ``pipeline/detection.DetectorChoice``).

    Raises:
        InputError: the manifest names a different detector.
    """
    recorded = (manifest or {}).get("detector") or {}
    old = recorded.get("sha256")
    finder = recorded.get("view_finder")
    finder = finder.get("sha256") if isinstance(finder, dict) else None
    second = recorded.get("second_namer")
    second = second.get("sha256") if isinstance(second, dict) else None
    old = "+".join(p for p in (old, finder, second) if p) if old else old
    if old and detector_id and old != detector_id:
        raise InputError(f"{out_dir} holds centres found by another detector ({old[:12]}, this run "
                         f"{detector_id[:12]}): pass --no-resume to detect them again, or choose another --out")


def update_manifest(out_dir: Path, fields: dict[str, Any]) -> None:
    """Add ``fields`` to ``OUT/run.json`` (atomically); nothing when OUT has no manifest."""
    data = read_manifest(out_dir)
    if data is not None:
        data.update(fields)
        write_text_atomic(Path(out_dir) / MANIFEST, json.dumps(data, indent=1, allow_nan=False) + "\n")
