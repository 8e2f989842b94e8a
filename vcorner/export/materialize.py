"""The cache step: make what a :class:`~vcorner.models.resolve.ResolvedModel` still lacks, before a runner opens.

An FP16 graph for an FP16 GPU profile (converted into the engine folder when not shipped or exported beside the
model) and the TensorRT plan of the profile on this GPU (built when missing or stale). ``vcorner batch`` runs it
on the driver once per run; runners themselves never convert anything.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from vcorner.export.fp16 import fp16_variant
from vcorner.export.tensorrt_build import ensure_engine
from vcorner.models.card import sha256_file
from vcorner.models.engines import engine_dir
from vcorner.models.profiles import DEFAULT_PROFILE, get_profile
from vcorner.models.resolve import Backend, ResolvedModel

log = logging.getLogger(__name__)


def materialize(resolved: ResolvedModel, steps: tuple[str, ...] = ("fp16", "engine")) -> ResolvedModel:
    """``resolved`` with its pending FP16 graph and TensorRT plan made (a no-op when nothing is pending);
    ``steps`` limits which (a Ray driver without the workers' GPU makes the FP16 graph, each actor its engine).

    Without an FP16 converter the FP32 graph runs instead, with a warning (the precision says so).

    Raises:
        InputError: TensorRT cannot build the engine.
    """
    if "fp16" in resolved.pending and "fp16" in steps:
        graph = fp16_variant(resolved.named, engine_dir(resolved.named))
        precision = "fp16" if graph != resolved.named else "fp32"
        reason = resolved.reason + ("" if precision == "fp16" else "; no FP16 converter here: the FP32 graph")
        resolved = replace(resolved, graph=graph, precision=precision, graph_sha256=sha256_file(graph),
                           reason=reason, pending=tuple(p for p in resolved.pending if p != "fp16"))
    if "engine" in resolved.pending and "engine" in steps and resolved.backend == Backend.trt:
        build = ensure_engine(resolved.graph, get_profile(resolved.profile or DEFAULT_PROFILE),
                              device=resolved.cuda_index)
        resolved = replace(resolved, engine=build.plan, pending=tuple(p for p in resolved.pending if p != "engine"))
    return resolved
