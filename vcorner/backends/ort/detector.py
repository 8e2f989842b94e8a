"""The centre detector's runner on ONNX Runtime (:func:`vcorner.backends.registry.open_detector` reads the card)."""

from __future__ import annotations

from pathlib import Path

from vcorner.backends.ort.runner import OnnxRuntimeRunner


def detector_runner(model: Path, size: int | tuple[int, int], maps: int, sha256: str,
                    threads: int | None) -> OnnxRuntimeRunner:
    """ONNX Runtime's CPU runner of a centre detector's graph of input side ``size`` returning ``maps`` maps."""
    return OnnxRuntimeRunner(Path(model), "cpu", threads, patch_size=size, sha256=sha256, out_channels=maps)
