"""OpenVINO's cache step: the self-check on a CPU where OpenVINO's accuracy is recorded but no timing of this CPU.

It times ONNX Runtime (FP32, and the INT8 variant where it exists) and each OpenVINO precision worth timing in
interleaved rounds (every graph once a round, so that other load on a shared machine falls on all alike),
records the rows in the user's results file (``source: self-check``, accuracy borrowed from the recorded
benchmark, as the INT8 self-check does: :mod:`vcorner.export.int8_check`), and decides from them
(:func:`vcorner.models.ov_evidence.ov_wins`). Where OpenVINO loses, ONNX Runtime's rule resolves the model again
(its own INT8 self-check included), so the run is what ``auto`` ran before OpenVINO was installed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from vcorner.backends.base import ModelRequest, ResolvedModel, Step
from vcorner.backends.openvino.rule import cpu_precisions, decide, graph_of, with_threads
from vcorner.backends.shared import done
from vcorner.export.int8_check import session
from vcorner.hardware.capabilities import Capabilities
from vcorner.hardware.cpu import cpu_info
from vcorner.models.card import sha256_file
from vcorner.models.evidence import accuracy_delta, append_rows, evidence_files, read_rows, user_results_path
from vcorner.models.modelfile import INPUT_NAME, OUTPUT_NAME
from vcorner.models.ov_evidence import OvDecision, ov_accuracy, ov_wins
from vcorner.models.precision import CpuPrecision, Precision
from vcorner.models.variants import int8_path

log = logging.getLogger(__name__)

CHECK_BATCH = 64
ROUNDS = 5
SECONDS = 0.3
"""Timing per graph and round (five rounds: about 1.5 s per graph)."""


def interleaved_rates(calls: dict[str, Callable[[], Any]], patches: int, rounds: int = ROUNDS,
                      seconds: float = SECONDS) -> dict[str, list[float]]:
    """Patches/s of each call (one batch of ``patches`` per call) in each of ``rounds`` rounds, every call timed
    once a round for at least ``seconds`` (one call at least), after one warm-up call each."""
    for call in calls.values():
        call()
    rates: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            began, count = time.perf_counter(), 0
            while count == 0 or time.perf_counter() - began < seconds:
                call()
                count += 1
            rates[name].append(count * patches / (time.perf_counter() - began))
    return rates


def self_check(model: Path, patch_size: int, candidates: tuple[str, ...],
               accuracy: dict[tuple[str, str], float | None]) -> list[dict[str, Any]]:
    """Rows of ``vcorner benchmark``'s format timing ONNX Runtime FP32 (and INT8 where ``m.int8.onnx`` exists)
    and OpenVINO in each of ``candidates`` on random standardized (64, 1, N, N) patches (speed does not depend on
    the content), all on every core; ``accuracy`` maps (backend, precision) to the recorded mean P2P change."""
    from vcorner.backends.openvino.runner import OpenVinoRunner

    feed = np.random.default_rng(0).standard_normal((CHECK_BATCH, 1, patch_size, patch_size)).astype(np.float32)
    int8 = int8_path(model)
    graphs = {("ort", "fp32"): model, **({("ort", "int8"): int8} if int8.is_file() else {}),
              **{("ov", p): int8 if p == "int8" else model for p in candidates}}
    calls: dict[str, Callable[[], Any]] = {}
    runners = []
    for (backend, precision), path in graphs.items():
        if backend == "ort":
            run = session(path, None)
            calls[f"{backend}/{precision}"] = lambda s=run: s.run([OUTPUT_NAME], {INPUT_NAME: feed})
        else:
            runner = OpenVinoRunner(path, precision, patch_size=patch_size).__enter__()
            runners.append(runner)
            calls[f"{backend}/{precision}"] = lambda r=runner: r.infer(feed)
    try:
        rates = interleaved_rates(calls, CHECK_BATCH, ROUNDS, SECONDS)
    finally:
        for runner in runners:
            runner.__exit__(None, None, None)
    cpu, flags = cpu_info()
    common = {"model": model.name, "model_sha256": sha256_file(model), "device": "cpu", "batch": CHECK_BATCH,
              "status": "ok", "source": "self-check", "check": "openvino", "rounds": ROUNDS,
              "machine": {"cpu": cpu, "cores": os.cpu_count(), "cpu_flags": flags,
                          "ov_capabilities": list(cpu_precisions())},
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return [{**common, "backend": backend, "precision": precision, "variant": path.name,
             "variant_sha256": sha256_file(path), "patches_per_s": round(float(np.median(rates[name])), 1),
             "rates": [round(r, 1) for r in rates[name]], "p2p_delta": accuracy.get((backend, precision))}
            for (backend, precision), path in graphs.items() for name in [f"{backend}/{precision}"]]


def recorded_accuracy(model: Path, sha: str, candidates: tuple[str, ...]) -> dict[tuple[str, str], float | None]:
    """(backend, precision) -> mean P2P change against FP32 ONNX Runtime recorded by a benchmark of ``model``."""
    rows = [r for path in evidence_files(model) for r in read_rows(path)]
    int8 = int8_path(model)
    int8_sha = sha256_file(int8) if int8.is_file() else None
    found: dict[tuple[str, str], float | None] = {("ort", "fp32"): 0.0}
    if int8_sha is not None:
        found[("ort", "int8")] = accuracy_delta(rows, sha, int8_sha)
    found.update({("ov", p): ov_accuracy(rows, sha, p, int8_sha) for p in candidates})
    return found


def this_machine() -> Capabilities:
    """This machine's capabilities (:func:`vcorner.backends.registry.probe`)."""
    from vcorner.backends.registry import probe

    return probe()


def check_ov(resolved: ResolvedModel) -> ResolvedModel:
    """The cache step :attr:`Step.ov_check`: time OpenVINO against ONNX Runtime here (:func:`self_check`), record
    the rows in the user's results file, and run OpenVINO in the precision that wins, else what ONNX Runtime's
    rule runs (one log line with the numbers)."""
    caps = this_machine()
    decision = decide(resolved.named, caps)
    if decision.check:
        began = time.perf_counter()
        rows = self_check(resolved.named, resolved.card.sampling.patch_size, decision.candidates,
                          recorded_accuracy(resolved.named, resolved.sha256, decision.candidates))
        append_rows(user_results_path(), rows)
        int8 = int8_path(resolved.named)
        decision = ov_wins(rows, resolved.sha256, sha256_file(int8) if int8.is_file() else None, decision.candidates)
        log.warning("OpenVINO self-check on this CPU (%.1f s, recorded in %s): %s", time.perf_counter() - began,
                    user_results_path(), decision.reason)
    return apply(resolved, decision, caps)


def apply(resolved: ResolvedModel, decision: OvDecision, caps: Capabilities) -> ResolvedModel:
    """``resolved`` running OpenVINO in the decision's precision, or (none) ONNX Runtime's resolution of the same
    request, its own cache steps made; the reason says why."""
    from vcorner.backends import ort
    from vcorner.backends.registry import Backend

    pending = done(resolved, Step.ov_check)
    if decision.precision is not None:
        graph, graph_sha = graph_of(resolved.named, resolved.sha256, decision.precision)
        chosen = replace(resolved, graph=graph, graph_sha256=graph_sha, precision=Precision(decision.precision),
                         runner_casts=decision.precision == "bf16", pending=pending,
                         reason=f"{resolved.reason.replace('; self-check pending', '')}; self-check: {decision.reason}")
        return with_threads(chosen, caps.cores)
    request = ModelRequest(resolved.named, "auto", "cpu", resolved.threads, None, CpuPrecision.auto)
    fallback = ort.rule.resolve(request, caps, f"ONNX Runtime (OpenVINO self-check: {decision.reason})")
    for step, make in ort.SPEC.steps.items():
        if step in fallback.pending:
            fallback = make(fallback)
    return replace(fallback, backend=Backend(fallback.backend))
