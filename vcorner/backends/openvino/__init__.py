"""OpenVINO on the CPU (optional extra ``pip install 'vcorner[openvino]'``): probe and rule (``rule.py``), the
self-check that lets ``--backend auto`` choose it (``cache.py``), runner (``runner.py``, also the centre
detector's). ``openvino`` is imported only inside the runner and :func:`rule.cpu_precisions`."""

from __future__ import annotations

from pathlib import Path

from vcorner.backends.base import BackendSpec, ResolvedModel, Step
from vcorner.backends.openvino import rule
from vcorner.backends.openvino.cache import check_ov
from vcorner.runtime.base import Runner


def open_runner(resolved: ResolvedModel) -> Runner:
    """The OpenVINO runner of ``resolved`` (the graph is read and compiled on entry)."""
    from vcorner.backends.openvino.runner import OpenVinoRunner

    return OpenVinoRunner(resolved.graph, str(resolved.precision), resolved.threads,
                          patch_size=resolved.card.sampling.patch_size, sha256=resolved.graph_sha256)


def open_detector(model: Path, size: int | tuple[int, int], maps: int, sha256: str, threads: int | None) -> Runner:
    """OpenVINO's FP32 runner of a centre detector's graph (LATENCY hint: it runs one film at a time)."""
    from vcorner.backends.openvino.runner import OpenVinoRunner

    return OpenVinoRunner(model, "fp32", threads, hint="LATENCY", patch_size=size, sha256=sha256, out_channels=maps)


SPEC = BackendSpec(rule.NAME, ("cpu",), rule.probe, rule.choose, rule.resolve, open_runner,
                   {Step.ov_check: check_ov}, open_detector, auto_precisions=("auto",))
