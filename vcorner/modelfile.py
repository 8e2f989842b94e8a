"""Model files for inference: the ONNX graph's I/O names, its card (sidecar or metadata), the shipped model.

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

from vcorner.card import ModelCard, sha256_file
from vcorner.io.atomic import write_text_atomic
from vcorner.io.records import InputError

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
    model = Path(model)
    if not model.is_file():
        raise InputError(f"{model}: no such model file")
    sidecar = sidecar_path(model)
    if not sidecar.is_file():
        return ModelCard.from_dict(_metadata_card(model), str(model))
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{sidecar}: not valid JSON ({err})") from None
    if verify and data.get("sha256") != sha256_file(model):
        raise InputError(f"{model}: SHA-256 does not match its card {sidecar.name} (file changed or corrupt)")
    content = data.get("card", {})
    if verify and "card_sha256" not in data:
        log.warning("%s: the card has no integrity digest (written by an older vcorner); run vcorner tune or "
                    "vcorner export again to add one", sidecar)
    elif verify and data["card_sha256"] != card_digest(content):
        raise InputError(f"{sidecar}: the card's content does not match its SHA-256 (edited by hand?); rewrite it "
                         "with vcorner tune or vcorner export")
    return ModelCard.from_dict(content, str(sidecar))
