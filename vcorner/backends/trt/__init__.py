"""Native TensorRT on a CUDA GPU: probe and rule (``rule.py``), engine build (``cache.py``), runner
(``runner.py``). ``tensorrt`` and ``cuda-python`` (the ``gpu`` extra) are imported only inside the runner and the
build."""

from __future__ import annotations

from vcorner.backends.base import BackendSpec, ResolvedModel, Step
from vcorner.backends.shared import make_fp16
from vcorner.backends.trt import rule
from vcorner.backends.trt.cache import build_engine
from vcorner.runtime.base import Runner


def open_runner(resolved: ResolvedModel) -> Runner:
    """The TensorRT runner of ``resolved``'s plan (the engine is deserialized on entry)."""
    from vcorner.backends.trt.runner import TensorRTRunner

    return TensorRTRunner(resolved.engine, resolved.cuda_index)


SPEC = BackendSpec(rule.NAME, ("cuda",), rule.probe, rule.choose, rule.resolve, open_runner,
                   {Step.fp16: make_fp16, Step.engine: build_engine})
