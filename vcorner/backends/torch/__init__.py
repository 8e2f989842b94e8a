"""torch on a checkpoint (the FP32 reference, FP16 and CUDA graphs on a GPU): probe and rule (``rule.py``) and
runner (``runner.py``); nothing to make before it runs."""

from __future__ import annotations

from vcorner.backends.base import BackendSpec, ResolvedModel
from vcorner.backends.torch import rule
from vcorner.models.precision import Precision
from vcorner.runtime.base import Runner


def open_runner(resolved: ResolvedModel) -> Runner:
    """The torch runner of ``resolved``'s checkpoint (the network is loaded on entry)."""
    from vcorner.backends.torch.runner import TorchRunner

    return TorchRunner(resolved.graph, resolved.device, half=resolved.precision == Precision.fp16,
                       cuda_graphs=resolved.cuda_graphs, sha256=resolved.sha256)


SPEC = BackendSpec(rule.NAME, ("cpu", "cuda"), rule.probe, rule.choose, rule.resolve, open_runner)
