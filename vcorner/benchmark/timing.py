"""Timing: seconds per batch, patches/s and latency percentiles, all variants timed in interleaved turns; the CPU
time of the per-image stages."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from vcorner.benchmark.settings import BenchmarkSettings
from vcorner.benchmark.variants import Variant
from vcorner.models.card import ModelCard
from vcorner.postprocess.kernels import use_serial_kernels
from vcorner.runtime.base import Runner
from vcorner.stages.finish import finish
from vcorner.stages.plan import PlannedImage
from vcorner.stages.prepare import prepare


def time_batches(runner: Runner, batch: np.ndarray, seconds: float, min_batches: int = 3) -> list[float]:
    """Seconds per call of ``runner.infer(batch)``: at least ``min_batches`` calls and ``seconds`` in all."""
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < min_batches or time.perf_counter() - began < seconds:
        start = time.perf_counter()
        runner.infer(batch)
        times.append(time.perf_counter() - start)
    return times


def cycled(patches: np.ndarray, batch: int) -> np.ndarray:
    """A batch of ``batch`` patches taken in turn from ``patches``."""
    return np.ascontiguousarray(patches[np.arange(batch) % len(patches)])


def rates(batch: int, times: list[float]) -> dict[str, Any]:
    """patches/s and p50/p95 ms per batch from the seconds of each call."""
    seconds = np.asarray(times)
    return {"patches_per_s": round(batch * len(seconds) / float(seconds.sum()), 1),
            "p50_ms": round(1e3 * float(np.percentile(seconds, 50)), 3),
            "p95_ms": round(1e3 * float(np.percentile(seconds, 95)), 3), "batches_timed": len(seconds)}


def speed(runner: Runner, patches: np.ndarray, batch: int, seconds: float) -> dict[str, Any]:
    """patches/s and p50/p95 ms of one runner at ``batch``, after a warm-up call."""
    feed = cycled(patches, batch)
    runner.infer(feed)
    return rates(batch, time_batches(runner, feed, seconds))


def time_in_turns(variants: list[Variant], patches: np.ndarray, settings: BenchmarkSettings) -> None:
    """Time every variant at every batch size, ``settings.rounds`` turns of ``seconds / rounds`` each.

    A variant that fails (say, out of GPU memory at a large batch) keeps its error and drops out.
    """
    feeds = {b: cycled(patches, b) for b in settings.batch_sizes}
    turns = max(settings.rounds, 1)
    for turn in range(turns):
        for variant in (v for v in variants if v.error is None):
            try:
                for batch, feed in feeds.items():
                    if turn == 0:
                        variant.runner.infer(feed)  # warm-up: allocations, CUDA graphs, engine profiles
                    times = time_batches(variant.runner, feed, settings.seconds / turns, min_batches=1)
                    variant.times.setdefault(batch, []).extend(times)
            except Exception as err:  # report it in the table, time the others
                variant.error = describe(err)


def describe(err: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters)."""
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"


def stage_seconds(items: list[PlannedImage], card: ModelCard) -> tuple[float, float]:
    """CPU seconds per image (of every thread, OpenCV's included) of ``prepare`` and of ``finish``, run one image
    at a time with the batch finishers' single-threaded kernels (maps: random numbers; the corner search costs
    about the same on any map)."""
    rng = np.random.default_rng(0)
    prepared = finished = 0.0
    use_serial_kernels()
    try:
        for item in items:
            began = time.process_time()
            job = prepare(item, card)
            prepared += time.process_time() - began
            job.maps[:] = rng.random(job.maps.shape, dtype=np.float32)
            began = time.process_time()
            finish(job, card)
            finished += time.process_time() - began
    finally:
        use_serial_kernels(False)
    return prepared / len(items), finished / len(items)
