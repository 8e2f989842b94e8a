"""Model files for inference: the ONNX graph's I/O names, its card (sidecar or metadata), the shipped model.

A model ``m.onnx`` travels with ``m.onnx.json``: its card plus the SHA-256 of the ONNX bytes, checked on load.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from vcorner.card import ModelCard, sha256_file
from vcorner.io.atomic import write_text_atomic
from vcorner.io.records import InputError

INPUT_NAME, OUTPUT_NAME = "patches", "maps"
CARD_METADATA_KEY = "vcorner_card"


def sidecar_path(model: Path) -> Path:
    """``m.onnx`` -> ``m.onnx.json``."""
    return Path(f"{model}.json")


def default_model_path() -> Path:
    """The default model shipped inside the package."""
    return Path(str(resources.files("vcorner.models").joinpath("default.onnx")))


def write_sidecar(model: Path, card: ModelCard) -> Path:
    """Write ``model``'s sidecar: its card and the SHA-256 of its bytes."""
    data = {"model": Path(model).name, "sha256": sha256_file(model), "card": card.to_dict()}
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
    return ModelCard.from_dict(data.get("card", {}), str(sidecar))
