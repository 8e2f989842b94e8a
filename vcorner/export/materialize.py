"""The cache step: make what a :class:`~vcorner.models.resolve.ResolvedModel` still lacks, before a runner opens.

The INT8 self-check on a CPU without recorded evidence (:mod:`vcorner.export.int8_check`); an FP16 graph for an
FP16 GPU profile (converted into the engine folder when not shipped or exported beside the model); the
TensorRT plan of the profile on this GPU (built when missing or stale). ``vcorner batch`` runs it on the driver
once per run; runners themselves never convert anything.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from vcorner.export.fp16 import fp16_variant
from vcorner.export.int8_check import self_check
from vcorner.export.tensorrt_build import ensure_engine
from vcorner.models.card import sha256_file
from vcorner.models.engines import engine_dir
from vcorner.models.evidence import accuracy_delta, append_rows, evidence_files, int8_wins, read_rows, user_results_path
from vcorner.models.profiles import DEFAULT_PROFILE, get_profile
from vcorner.models.resolve import Backend, ResolvedModel
from vcorner.models.variants import int8_path

log = logging.getLogger(__name__)


def materialize(resolved: ResolvedModel, steps: tuple[str, ...] = ("fp16", "engine", "int8_check")) -> ResolvedModel:
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
    if "int8_check" in resolved.pending and "int8_check" in steps:
        resolved = check_int8(resolved)
    if "engine" in resolved.pending and "engine" in steps and resolved.backend == Backend.trt:
        build = ensure_engine(resolved.graph, get_profile(resolved.profile or DEFAULT_PROFILE),
                              device=resolved.cuda_index)
        resolved = replace(resolved, engine=build.plan, pending=tuple(p for p in resolved.pending if p != "engine"))
    return resolved


def check_int8(resolved: ResolvedModel) -> ResolvedModel:
    """Time the INT8 variant against FP32 here (:func:`vcorner.export.int8_check.self_check`), record the rows in
    the user's results file, and run whichever wins (one log line with the numbers)."""
    int8 = int8_path(resolved.named)
    int8_sha = sha256_file(int8)
    delta = accuracy_delta([r for path in evidence_files(resolved.named) for r in read_rows(path)], resolved.sha256,
                           int8_sha)
    began = time.perf_counter()
    rows = self_check(resolved.named, int8, resolved.card.sampling.patch_size, delta, resolved.threads)
    append_rows(user_results_path(), rows)
    decision = int8_wins(rows, resolved.sha256, int8_sha256=int8_sha)
    log.warning("INT8 self-check on this CPU (%.1f s, recorded in %s): %s", time.perf_counter() - began,
                user_results_path(), decision.reason)
    pending = tuple(p for p in resolved.pending if p != "int8_check")
    reason = f"{resolved.reason}; self-check: {decision.reason}"
    if not decision.use_int8:
        return replace(resolved, reason=reason, pending=pending)
    return replace(resolved, graph=int8, graph_sha256=int8_sha, precision="int8", reason=reason, pending=pending)
