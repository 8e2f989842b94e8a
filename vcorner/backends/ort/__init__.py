"""ONNX Runtime (CPU, CUDA and TensorRT execution providers): probe and rule (``rule.py``), INT8 self-check
(``cache.py``), runner (``runner.py``) and the centre detector's runner (``detector.py``)."""

from __future__ import annotations

from vcorner.backends.base import BackendSpec, ResolvedModel, Step
from vcorner.backends.ort import rule
from vcorner.backends.ort.cache import check_int8
from vcorner.backends.ort.detector import detector_runner
from vcorner.backends.shared import make_fp16
from vcorner.runtime.base import Runner


def open_runner(resolved: ResolvedModel) -> Runner:
    """The ONNX Runtime runner of ``resolved`` (its session is created on entry)."""
    from vcorner.backends.ort.runner import OnnxRuntimeRunner

    return OnnxRuntimeRunner(resolved.graph, resolved.device, resolved.threads, resolved.profile,
                             cpu_model=resolved.cpu_graph, patch_size=resolved.card.sampling.patch_size,
                             sha256=resolved.graph_sha256)


SPEC = BackendSpec(rule.NAME, ("cpu", "cuda", "tensorrt"), rule.probe, rule.choose, rule.resolve, open_runner,
                   {Step.fp16: make_fp16, Step.int8_check: check_int8}, detector_runner)
