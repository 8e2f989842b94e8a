"""Model files: the ONNX graph's I/O names, its card (sidecar or metadata), a checkpoint's card, the shipped model.

A model ``m.onnx`` travels with ``m.onnx.json``: its card, the SHA-256 of the ONNX bytes and the SHA-256 of
the card's own content (:func:`card_digest`), both checked on load, so the graph and its card are one
trusted unit: an edited decoding constant or prior is refused like a changed graph. ``vcorner tune`` and
``vcorner export`` write both digests.
"""

from __future__ import annotations

import hashlib
import json
import logging
from importlib import resources
from pathlib import Path

from vcorner.io.atomic import write_text_atomic
from vcorner.io.records import InputError
from vcorner.models.card import ModelCard, sha256_file
from vcorner.models.detector_card import DetectorCard

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "patches", "maps"
CARD_METADATA_KEY = "vcorner_card"


def sidecar_path(model: Path) -> Path:
    """``m.onnx`` -> ``m.onnx.json``."""
    return Path(f"{model}.json")


def default_model_path() -> Path:
    """The default model shipped inside the package."""
    return Path(str(resources.files("vcorner.models").joinpath("default.onnx")))


def card_digest(card: ModelCard | dict) -> str:
    """Hex SHA-256 of a card's content (canonical JSON: sorted keys, no whitespace)."""
    data = card.to_dict() if isinstance(card, ModelCard) else card
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_sidecar(model: Path, card: ModelCard) -> Path:
    """Write ``model``'s sidecar: its card, the SHA-256 of the model's bytes and that of the card."""
    content = card.to_dict()
    data = {"model": Path(model).name, "sha256": sha256_file(model), "card_sha256": card_digest(content),
            "card": content}
    path = sidecar_path(model)
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    return path


def _metadata_card(model: Path) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        meta = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"]).get_modelmeta()
    except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
        raise InputError(f"{model}: not a loadable ONNX model ({str(err).splitlines()[0][:200]})") from None
    if CARD_METADATA_KEY not in meta.custom_metadata_map:
        raise InputError(f"{model}: no model card (neither {sidecar_path(model).name} nor ONNX metadata)")
    return json.loads(meta.custom_metadata_map[CARD_METADATA_KEY])


def read_model_card(model: Path, verify: bool = True) -> ModelCard:
    """The card of an ONNX model: from its sidecar (checksum verified) or else from its metadata.

    Raises:
        InputError: missing file, checksum mismatch, or no card.
    """
    return read_card_and_digest(model, verify)[0]


def read_card_and_digest(model: Path, verify: bool = True, card_type: type = ModelCard) -> tuple[ModelCard, str | None]:
    """(card, SHA-256 of the model's bytes) of an ONNX model, hashing the file once; the digest is None when
    ``verify`` is False and the file was not hashed. ``card_type``: :class:`ModelCard` (a corner model) or
    :class:`~vcorner.models.detector_card.DetectorCard` (a centre detector); the other kind is refused.

    Raises:
        InputError: missing file, checksum mismatch, or no card.
    """
    model = Path(model)
    if not model.is_file():
        raise InputError(f"{model}: no such model file")
    sidecar = sidecar_path(model)
    if not sidecar.is_file():
        return card_type.from_dict(_metadata_card(model), str(model)), sha256_file(model) if verify else None
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{sidecar}: not valid JSON ({err})") from None
    digest = sha256_file(model) if verify else None
    if verify and data.get("sha256") != digest:
        raise InputError(f"{model}: SHA-256 does not match its card {sidecar.name} (file changed or corrupt)")
    content = data.get("card", {})
    if verify and "card_sha256" not in data:
        log.warning("%s: the card has no integrity digest (written by an older vcorner); run vcorner tune or "
                    "vcorner export again to add one", sidecar)
    elif verify and data["card_sha256"] != card_digest(content):
        raise InputError(f"{sidecar}: the card's content does not match its SHA-256 (edited by hand?); rewrite it "
                         "with vcorner tune or vcorner export")
    return card_type.from_dict(content, str(sidecar)), digest


CHECKPOINT_SUFFIXES = (".safetensors",)
CHECKPOINT_CARD_KEY = "vcorner"
"""Metadata key of the JSON card in a ``model.safetensors`` checkpoint."""


def is_checkpoint(model: Path) -> bool:
    """A torch checkpoint (run folder or ``.safetensors``) rather than an ONNX file."""
    return Path(model).is_dir() or Path(model).suffix in CHECKPOINT_SUFFIXES


def resolve_checkpoint(path: Path) -> Path:
    """A run directory resolves to its ``model.safetensors``; a file is returned as is.

    Raises:
        InputError: no such checkpoint, or not a ``.safetensors`` file (pickles are refused).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint (expected a run directory or a .safetensors file)")
    if path.suffix != ".safetensors":
        raise InputError(f"{path}: checkpoints are .safetensors files (pickled checkpoints are refused)")
    return path


def read_checkpoint_card(path: Path, card_type: type = ModelCard) -> ModelCard:
    """The model card (or with ``card_type``, the detector card) stored in a checkpoint's safetensors metadata
    (read without torch).

    Raises:
        InputError: no checkpoint, an unreadable header, no card, or safetensors not installed.
    """
    path = resolve_checkpoint(path)
    try:
        from safetensors import safe_open
    except ImportError:
        raise InputError(f"{path}: reading a checkpoint needs safetensors: pip install 'vcorner[train]'") from None
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise InputError(f"{path}: not a readable safetensors file ({err})") from None
    if CHECKPOINT_CARD_KEY not in metadata:
        raise InputError(f"{path}: has no vcorner model card in its metadata")
    return card_type.from_dict(json.loads(metadata[CHECKPOINT_CARD_KEY]), str(path))


def read_detector_card(model: Path, verify: bool = True) -> tuple[DetectorCard, str | None]:
    """(card, SHA-256) of a centre detector: an ONNX file with its sidecar, or a ``.safetensors`` checkpoint.

    Raises:
        InputError: missing file, checksum mismatch, or not a detector.
    """
    if is_checkpoint(model):
        path = resolve_checkpoint(model)
        return read_checkpoint_card(path, DetectorCard), sha256_file(path) if verify else None
    return read_card_and_digest(model, verify, DetectorCard)


def card_format(model: Path) -> str | None:
    """The ``format`` of a model file's card (sidecar, ONNX metadata or checkpoint metadata), unverified; None
    when it has none. Tells a corner model from a detector before either is loaded."""
    model = Path(model)
    try:
        if is_checkpoint(model):
            from safetensors import safe_open

            with safe_open(str(resolve_checkpoint(model)), framework="numpy") as handle:
                return json.loads((handle.metadata() or {}).get(CHECKPOINT_CARD_KEY, "{}")).get("format")
        sidecar = sidecar_path(model)
        data = json.loads(sidecar.read_text(encoding="utf-8"))["card"] if sidecar.is_file() else _metadata_card(model)
        return data.get("format")
    except (InputError, OSError, ValueError, KeyError, ImportError):
        return None


def default_detector_path() -> Path:
    """The default centre detector shipped inside the package."""
    return Path(str(resources.files("vcorner.models").joinpath("detector.onnx")))


def card_of(model: Path) -> ModelCard:
    """The card of an ONNX model or a checkpoint (no backend resolved: for ``vcorner baseline`` and tools)."""
    return read_checkpoint_card(model) if is_checkpoint(model) else read_model_card(model)
