"""Inference backends, one folder each (``ort/``, ``trt/``, ``torch/``, ``openvino/``): its probe, its resolution
rule, its cache
steps and its runner behind :class:`~vcorner.backends.base.BackendSpec`; and the resolution that iterates over
them (:mod:`vcorner.backends.registry`).

    from vcorner.backends import ModelRequest, materialize, open_runner
    runner = open_runner(materialize(ModelRequest(model).resolve()))
"""

from vcorner.backends.base import BackendSpec, ModelRequest, ResolvedModel, Step
from vcorner.backends.registry import (
    BACKENDS,
    Backend,
    check_device,
    materialize,
    open_detector,
    open_runner,
    probe,
    resolve_model,
    spec_of,
)
from vcorner.backends.shared import cuda_index

__all__ = ["BACKENDS", "Backend", "BackendSpec", "ModelRequest", "ResolvedModel", "Step", "check_device",
           "cuda_index", "materialize", "open_detector", "open_runner", "probe", "resolve_model", "spec_of"]
