"""``OUT/run.json``: what produced the corners already in OUT, so that a resumed run redoes what changed.

It records the model's SHA-256 and, per image, a digest of the centres (and pixel spacing) the corners were
found from. A resumed run refuses a different model (one line: use ``--no-resume`` or another ``--out``),
and redoes an image whose centres changed or whose requested ``--json``/``--vis`` file is missing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from vcorner.card import sha256_file
from vcorner.io.atomic import write_text_atomic
from vcorner.io.records import ImageRecord, InputError

MANIFEST = "run.json"
FORMAT = "vcorner-run/1"


def model_identity(model: Path) -> str:
    """SHA-256 of a model file; for a run folder, of its ``.safetensors`` checkpoints' digests."""
    model = Path(model)
    if model.is_file():
        return sha256_file(model)
    digests = [sha256_file(p) for p in sorted(model.glob("*.safetensors"))]
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def centers_digest(record: ImageRecord) -> str:
    """16 hex digits identifying an image's vertebra names, centres (px) and pixel spacing (mm)."""
    data = [record.pixel_spacing_mm, [[v.name, float(v.center[0]), float(v.center[1])] for v in record.vertebrae]]
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """``OUT/run.json``, or None when missing or unreadable (corners from before manifests are trusted)."""
    try:
        data = json.loads((Path(out_dir) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def write_manifest(out_dir: Path, model_sha256: str | None, records: list[ImageRecord]) -> None:
    """Record the model and every planned image's centres digest (atomically)."""
    data = {"format": FORMAT, "model_sha256": model_sha256,
            "centers": {r.file: centers_digest(r) for r in records}}
    write_text_atomic(Path(out_dir) / MANIFEST, json.dumps(data, indent=1) + "\n")


def check_same_model(manifest: dict[str, Any] | None, model_sha256: str | None, out_dir: Path) -> None:
    """Raise a one-line InputError when OUT's corners came from another model.

    Raises:
        InputError: the manifest names a different model.
    """
    old = (manifest or {}).get("model_sha256")
    if old and model_sha256 and old != model_sha256:
        raise InputError(f"{out_dir} holds corners from another model (SHA-256 {old[:12]}, this one "
                         f"{model_sha256[:12]}): pass --no-resume to redo them, or choose another --out")


def changed_centers(manifest: dict[str, Any] | None, records: list[ImageRecord]) -> set[str]:
    """Images whose centres differ from those their kept corners were found from."""
    old = (manifest or {}).get("centers") or {}
    return {r.file for r in records if r.file in old and old[r.file] != centers_digest(r)}


def missing_extras(out_dir: Path, images: list[str], write_json: bool, vis: bool) -> set[str]:
    """Images lacking a requested ``json/<image>.json`` or ``vis/<image>`` overlay."""
    from vcorner.pipeline.overlay import overlay_name

    out_dir = Path(out_dir)
    return {image for image in images
            if (write_json and not (out_dir / "json" / f"{image}.json").is_file())
            or (vis and not (out_dir / "vis" / overlay_name(image)).is_file())}
