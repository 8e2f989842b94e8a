"""ONNX Runtime's own cache step: the INT8 self-check on a CPU without recorded evidence."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from vcorner.backends.base import ResolvedModel, Step
from vcorner.backends.shared import done
from vcorner.export.int8_check import self_check
from vcorner.models.card import sha256_file
from vcorner.models.evidence import accuracy_delta, append_rows, evidence_files, int8_wins, read_rows, user_results_path
from vcorner.models.precision import Precision
from vcorner.models.variants import int8_path

log = logging.getLogger(__name__)


def check_int8(resolved: ResolvedModel) -> ResolvedModel:
    """The cache step :attr:`Step.int8_check`: time the INT8 variant against FP32 here
    (:func:`vcorner.export.int8_check.self_check`), record the rows in the user's results file, and run whichever
    wins (one log line with the numbers)."""
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
    pending = done(resolved, Step.int8_check)
    reason = f"{resolved.reason}; self-check: {decision.reason}"
    if not decision.use_int8:
        return replace(resolved, reason=reason, pending=pending)
    return replace(resolved, graph=int8, graph_sha256=int8_sha, precision=Precision.int8, reason=reason,
                   pending=pending)
