"""The INT8 self-check: a few seconds timing a model's INT8 variant against FP32 on this CPU, recorded as evidence.

Run by the cache step (:func:`vcorner.backends.materialize`) where no benchmark of this CPU model and core count
exists but the CPU has VNNI or AMX and the INT8 variant's accuracy is recorded (:mod:`vcorner.models.evidence`).
The rows go to the user's results file like ``vcorner benchmark`` rows (``source: self-check``, the accuracy
borrowed from the recorded benchmark), so the next run here decides from them without timing again; rows of
another model, INT8 file or CPU never apply.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from vcorner.hardware.cpu import cpu_info
from vcorner.models.card import sha256_file
from vcorner.models.modelfile import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

CHECK_BATCH = 64
CHECK_SECONDS = 1.0
"""Timing per graph and turn (three turns, alternating, so that other load falls on both alike)."""


def session(model: Path, threads: int | None):
    """An ONNX Runtime CPU session with the batch's settings."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or (os.cpu_count() or 1)
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def patches_per_s(run, feed: dict[str, np.ndarray], seconds: float) -> float:
    """Patches/s of ``run(feed)`` over at least ``seconds`` (one batch at least)."""
    began, count = time.perf_counter(), 0
    while count == 0 or time.perf_counter() - began < seconds:
        run(feed)
        count += 1
    return count * len(feed[INPUT_NAME]) / (time.perf_counter() - began)


def self_check(model: Path, int8: Path, patch_size: int, p2p_delta: float, threads: int | None = None,
               seconds: float = CHECK_SECONDS) -> list[dict[str, Any]]:
    """(FP32, INT8) rows timing ``model`` and ``int8`` on random standardized (64, 1, N, N) patches (speed does
    not depend on the content), in the format of ``vcorner benchmark`` rows."""
    rng = np.random.default_rng(0)
    feed = {INPUT_NAME: rng.standard_normal((CHECK_BATCH, 1, patch_size, patch_size)).astype(np.float32)}
    runs = {name: session(path, threads) for name, path in (("fp32", model), ("int8", int8))}
    calls = {name: (lambda f, s=s: s.run([OUTPUT_NAME], f)) for name, s in runs.items()}
    for call in calls.values():
        call(feed)  # warm-up: kernels chosen, buffers allocated
    rates: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(3):
        for name, call in calls.items():
            rates[name].append(patches_per_s(call, feed, seconds / 3))
    cpu, flags = cpu_info()
    common = {"model": Path(model).name, "model_sha256": sha256_file(model), "backend": "ort", "device": "cpu",
              "batch": CHECK_BATCH, "status": "ok", "source": "self-check", "threads": threads,
              "machine": {"cpu": cpu, "cores": os.cpu_count(), "cpu_flags": flags},
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return [{**common, "precision": name, "variant": Path(path).name, "variant_sha256": sha256_file(path),
             "patches_per_s": round(float(np.median(rates[name])), 1),
             "p2p_delta": p2p_delta if name == "int8" else 0.0}
            for name, path in (("fp32", model), ("int8", int8))]
