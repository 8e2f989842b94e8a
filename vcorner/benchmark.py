"""``vcorner benchmark``: patches/s per backend, precision and batch size, with accuracy deltas.

Each (backend, precision) that can run here maps every patch of a small fixed phantom set and is timed per
batch size; then the maps are compared with FP32 ONNX Runtime's and decoded (``stages.finish``) into corners
scored against ``annotations.json`` (mean P2P). Combinations that cannot run here come back as ``skipped``
rows with the reason. Rows carry the machine, library versions and date, for a JSON-lines file.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vcorner.benchmark_machine import (  # noqa: F401 (re-exported for the benchmark scripts)
    append_jsonl,
    busy_cores,
    cpu_info,
    default_results_path,
    gpu_names,
    library_versions,
    machine_info,
    stamp,
)
from vcorner.card import ModelCard, sha256_file
from vcorner.io.records import ImageRecord, InputError
from vcorner.runtime.base import Runner

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("ort", "torch", "trt")
PRECISIONS: tuple[str, ...] = ("fp32", "int8", "fp16")
PHANTOM_SEED = 20250501
"""Seed of the benchmark's phantom set (calibration for on-the-fly INT8 uses the next seed)."""
CALIBRATION_IMAGES = 4


class Skip(Exception):
    """A combination that cannot run here; the message is the reason."""


@dataclass(frozen=True)
class BenchmarkSettings:
    """What to measure.

    Attributes:
        model: ONNX file, ``.safetensors`` checkpoint or run folder (None: the shipped model).
        backends, precisions, batch_sizes: the grid; unavailable combinations are skipped.
        seconds: timing per variant and batch size, spread over ``rounds`` turns (at least one batch a turn).
        rounds: turns in which every variant is timed once per batch size, so that changing load from
            other work on the machine falls on all variants alike.
        images: phantom images for the accuracy columns.
        threads: ONNX Runtime intra-op threads (default: all cores).
        int8_model: a ready INT8 model (default: ``m.int8.onnx`` beside the model, else quantized here).
        seed: phantom set seed.
    """

    model: Path | None = None
    backends: tuple[str, ...] = BACKENDS
    precisions: tuple[str, ...] = PRECISIONS
    batch_sizes: tuple[int, ...] = (16, 64, 256)
    seconds: float = 3.0
    rounds: int = 3
    images: int = 4
    threads: int | None = None
    int8_model: Path | None = None
    seed: int = PHANTOM_SEED


@dataclass(frozen=True)
class ModelFiles:
    """The model under test: its ONNX form (None with the reason when there is none) and checkpoint."""

    named: Path
    sha256: str
    card: ModelCard
    onnx: Path | None
    checkpoint: Path | None
    no_onnx_reason: str = ""


@dataclass
class PhantomSet:
    """Prepared jobs of the benchmark images and their annotations."""

    jobs: list
    truth: list[ImageRecord]
    patches: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.patches = np.concatenate([job.patches for job in self.jobs])


@dataclass
class Variant:
    """One open (backend, precision): its runner, device and file, maps, and seconds per batch by batch size."""

    ident: dict[str, Any]
    runner: Runner
    fields: dict[str, Any]
    maps: np.ndarray
    times: dict[int, list[float]] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Accuracy:
    """A variant's maps and corners on the phantom set."""

    maps: np.ndarray
    predictions: dict[tuple[str, str, str], dict[str, str]]
    p2p_mean: float
    unit: str


def resolve_model(model: Path | None, scratch: Path) -> ModelFiles:
    """The ONNX and checkpoint forms of ``model`` (a checkpoint is exported to ONNX in ``scratch``).

    Raises:
        InputError: no such model, unreadable card, or a checkpoint without torch installed.
    """
    from vcorner.modelfile import default_model_path, read_model_card

    model = Path(model) if model is not None else default_model_path()
    if not model.exists():
        raise InputError(f"{model}: no such model file (pass --model ONNX or checkpoint)")
    if not (model.is_dir() or model.suffix == ".safetensors"):
        return ModelFiles(model, sha256_file(model), read_model_card(model), model, None)
    if importlib.util.find_spec("torch") is None:
        raise InputError(f"{model}: a checkpoint needs torch: pip install 'vcorner[train]'")
    from vcorner.training.checkpoint import read_card, resolve_checkpoint

    checkpoint = resolve_checkpoint(model)
    card, sha = read_card(checkpoint), sha256_file(checkpoint)
    try:
        from vcorner.export.onnx_export import export_checkpoint
    except ImportError as err:
        return ModelFiles(model, sha, card, None, checkpoint, f"exporting the checkpoint needs onnx ({err})")
    return ModelFiles(model, sha, card, export_checkpoint(checkpoint, scratch / "model.onnx"), checkpoint)


def random_model(recipe: str, out: Path, seed: int = 0) -> Path:
    """A randomly initialised ``recipe`` UNet exported to ONNX at ``out``, with a generic prior (needs torch).

    For speed measurements only: patches/s does not depend on the weights.
    """
    import torch

    from vcorner.config import DecodeConfig, GroundTruthConfig, SamplingConfig
    from vcorner.export.onnx_export import export_model
    from vcorner.model.unet import create_model
    from vcorner.prior import CornerPrior

    torch.manual_seed(seed)
    model = create_model(recipe).eval()
    means = np.array([[-0.4, -0.3], [0.4, -0.3], [-0.4, 0.3], [0.4, 0.3]])
    prior = CornerPrior({"*": means}, {"*": np.tile(0.01 * np.eye(2), (4, 1, 1))}, {"*": 1})
    card = ModelCard(model.constructor_args(), SamplingConfig(), GroundTruthConfig(), DecodeConfig(), prior,
                     {"weights": f"random {recipe} (seed {seed})"})
    return export_model(model, card, Path(out))


def phantom_set(folder: Path, card: ModelCard, images: int, seed: int) -> PhantomSet:
    """Write ``images`` phantoms at ``seed`` into ``folder`` and cut their patches as inference does."""
    from vcorner.io.annotations import read_annotations
    from vcorner.phantoms.dataset import synthesize_dataset
    from vcorner.pipeline.plan import PlannedImage
    from vcorner.pipeline.stages import prepare

    synthesize_dataset(folder, images, seed, workers=1)
    truth = read_annotations(folder / "annotations.json")
    return PhantomSet([prepare(PlannedImage(r, folder / r.file), card) for r in truth], truth)


def int8_model(files: ModelFiles, scratch: Path, settings: BenchmarkSettings) -> Path:
    """The INT8 model to time: given, found beside the model, or quantized now on calibration phantoms."""
    from vcorner.export.int8 import int8_path

    if settings.int8_model is not None:
        return Path(settings.int8_model)
    if int8_path(files.onnx).is_file():
        return int8_path(files.onnx)
    if importlib.util.find_spec("onnx") is None:
        raise Skip("quantizing needs onnx (pip install onnx) or pass an INT8 model")
    from vcorner.export.int8 import quantize_int8
    from vcorner.phantoms.dataset import synthesize_dataset

    calib = scratch / "calibration"
    synthesize_dataset(calib, CALIBRATION_IMAGES, settings.seed + 1, workers=1)
    return quantize_int8(files.onnx, scratch / "model.int8.onnx", calib)


def ort_runner(files: ModelFiles, precision: str, scratch: Path, settings: BenchmarkSettings) -> Runner:
    """An ONNX Runtime runner for ``precision``, or Skip."""
    if files.onnx is None:
        raise Skip(files.no_onnx_reason)
    from vcorner.runtime.onnxruntime_runner import OnnxRuntimeRunner, available_devices

    gpu = "cuda" if "cuda" in available_devices() else None
    if precision == "fp32":
        return OnnxRuntimeRunner(files.onnx, gpu or "cpu", settings.threads)
    if precision == "int8":
        return OnnxRuntimeRunner(int8_model(files, scratch, settings), "cpu", settings.threads)
    if gpu is None:
        raise Skip("FP16 needs a GPU and ONNX Runtime's GPU build (no usable CUDA execution provider here)")
    try:  # m.fp16.onnx beside the model, else converted into scratch (needs onnxconverter-common)
        from vcorner.export.fp16 import variant_for
    except ImportError as err:
        raise Skip(f"no FP16 export in this build ({err})") from None
    fp16 = variant_for(files.onnx, "fp16", scratch)
    if fp16 == files.onnx:
        raise Skip(f"no {files.onnx.stem}.fp16.onnx beside the model (vcorner export --fp16) and no converter here")
    return OnnxRuntimeRunner(fp16, gpu, settings.threads)


def torch_runner(files: ModelFiles, precision: str) -> Runner:
    """A torch eager runner for ``precision``, or Skip."""
    if precision == "int8":
        raise Skip("INT8 runs on ONNX Runtime only")
    if files.checkpoint is None:
        raise Skip("torch needs a .safetensors checkpoint; the model given is ONNX")
    import torch

    from vcorner.runtime.torch_runner import TorchRunner

    cuda = torch.cuda.is_available()
    if precision == "fp16" and not cuda:
        raise Skip("FP16 needs a CUDA GPU (none here)")
    # On a GPU: channels_last (the runner's CUDA default) and one CUDA graph per batch size.
    return TorchRunner(files.checkpoint, "cuda" if cuda else "cpu", half=precision == "fp16", cuda_graphs=cuda)


def trt_runner(files: ModelFiles, precision: str) -> Runner:
    """A native TensorRT runner (engine of the ``gpu`` or ``gpu-fp32`` export profile), or Skip."""
    if precision == "int8":
        raise Skip("INT8 runs on ONNX Runtime's CPU provider only")
    from vcorner.runtime.select import cuda_gpu_available, tensorrt_available

    if not tensorrt_available():
        raise Skip("TensorRT needs tensorrt and cuda-python (pip install 'vcorner[gpu]') and a GPU")
    if files.onnx is None or not cuda_gpu_available():
        raise Skip(files.no_onnx_reason or "TensorRT needs a GPU (none here)")
    try:
        from vcorner.runtime.tensorrt_runner import TensorRTRunner
    except ImportError as err:
        raise Skip(f"no TensorRT runner in this build ({err})") from None
    return TensorRTRunner(files.onnx, "gpu" if precision == "fp16" else "gpu-fp32")


def open_variant(files: ModelFiles, backend: str, precision: str, scratch: Path,
                 settings: BenchmarkSettings) -> Runner:
    """A not yet entered runner for (``backend``, ``precision``); raises Skip with the reason if impossible."""
    if backend == "trt":
        return trt_runner(files, precision)
    if backend == "torch":
        return torch_runner(files, precision)
    if backend == "ort":
        return ort_runner(files, precision, scratch, settings)
    raise Skip(f"unknown backend {backend!r}")


def infer_all(runner: Runner, patches: np.ndarray, batch: int) -> np.ndarray:
    """Maps of all ``patches`` (P, 1, N, N), in batches of ``batch``."""
    return np.concatenate([runner.infer(patches[i:i + batch]) for i in range(0, len(patches), batch)])


def decode_predictions(maps: np.ndarray, phantoms: PhantomSet, card: ModelCard) -> dict:
    """``corners.csv``-like rows keyed by (image, vertebra, corner), decoded from ``maps`` of every patch."""
    from vcorner.pipeline.outputs import CORNER_COLUMNS, corner_rows
    from vcorner.pipeline.stages import finish

    rows, offset = {}, 0
    for job in phantoms.jobs:
        job.maps = maps[offset:offset + len(job.patches)]
        offset += len(job.patches)
        for row in corner_rows(job.name, finish(job, card)[0]):
            rows[tuple(row[:3])] = dict(zip(CORNER_COLUMNS, row, strict=True))
    return rows


def evaluate(maps: np.ndarray, phantoms: PhantomSet, card: ModelCard) -> Accuracy:
    """Decoded corners and mean P2P of the maps of every phantom patch."""
    from vcorner.evaluation.metrics import match, table1_row

    predictions = decode_predictions(maps, phantoms, card)
    summary = table1_row(match(predictions, phantoms.truth))
    return Accuracy(maps, predictions, summary["p2p_mean"], summary["unit"])


def corner_shift(a: dict, b: dict) -> float:
    """Mean distance (px) between the corners two prediction sets share (NaN when none)."""
    pairs = np.asarray([[[float(p[k]["x"]), float(p[k]["y"])] for p in (a, b)] for k in set(a) & set(b)])
    return float(np.mean(np.linalg.norm(pairs[:, 0] - pairs[:, 1], axis=1))) if len(pairs) else float("nan")


def compare(result: Accuracy, reference: Accuracy | None) -> dict[str, Any]:
    """Accuracy columns of a row: mean P2P and its change, max |map difference|, corner shift."""
    out: dict[str, Any] = {"p2p_mean": round(result.p2p_mean, 4), "p2p_unit": result.unit}
    if reference is not None:
        out.update(max_abs_diff=float(np.max(np.abs(result.maps - reference.maps))),
                   p2p_delta=round(result.p2p_mean - reference.p2p_mean, 4),
                   corner_shift_px=round(corner_shift(result.predictions, reference.predictions), 4))
    return out


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


def reference_maps(files: ModelFiles, phantoms: PhantomSet, scratch: Path,
                   settings: BenchmarkSettings) -> np.ndarray | None:
    """FP32 ONNX Runtime maps of the phantom patches (the reference of every delta); None if it cannot run."""
    try:
        with ort_runner(files, "fp32", scratch, settings) as runner:
            return infer_all(runner, phantoms.patches, 64).astype(np.float32)
    except (Skip, InputError) as err:
        log.warning("no FP32 ONNX Runtime reference: %s", err)
        return None


def variant_fields(runner: Runner) -> dict[str, Any]:
    """Device and the file a runner ran (name and SHA-256: the INT8 file ``--backend auto`` would use)."""
    path = getattr(runner, "model", None) or getattr(runner, "checkpoint", None)
    loaded = getattr(runner, "loaded", None)  # TensorRT: the engine plan is the file that ran
    path = loaded.plan if loaded is not None else path
    device = getattr(runner, "device", "cpu")
    fields = {"device": f"cuda:{device}" if isinstance(device, int) else str(device)}
    if isinstance(path, Path) and path.is_file():
        fields.update(variant=path.name, variant_sha256=sha256_file(path))
    return fields


def run_benchmark(settings: BenchmarkSettings, on_step: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Measure every combination of ``settings``; one row per (backend, precision, batch) or per skipped pair.

    Rows hold: model, model_sha256, backend, precision, device, variant (file run), variant_sha256, batch,
    status (``ok``/``skipped``/``failed``), reason, patches_per_s, p50_ms, p95_ms, max_abs_diff (maps vs
    FP32 ORT), p2p_mean, p2p_delta, corner_shift_px, images, patches, seed, seconds, rounds, batches_timed,
    machine, versions, date.

    Raises:
        InputError: the model cannot be read.
    """
    step = on_step or (lambda message: None)
    common = {"images": settings.images, "seed": settings.seed, "seconds": settings.seconds,
              "rounds": settings.rounds, **stamp()}
    done: list[Variant | dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vcorner-bench-") as tmp, ExitStack() as stack:
        scratch = Path(tmp)
        files = resolve_model(settings.model, scratch)
        common.update(model=files.named.name, model_sha256=files.sha256)
        step(f"phantom set: {settings.images} image(s), seed {settings.seed}")
        phantoms = phantom_set(scratch / "phantoms", files.card, settings.images, settings.seed)
        common["patches"] = len(phantoms.patches)
        reference = reference_maps(files, phantoms, scratch, settings)
        for backend, precision in ((b, p) for b in settings.backends for p in settings.precisions):
            step(f"loading {backend} {precision}")
            ident = {"backend": backend, "precision": precision}
            try:
                runner = stack.enter_context(open_variant(files, backend, precision, scratch, settings))
                maps = infer_all(runner, phantoms.patches, 64).astype(np.float32)
                done.append(Variant(ident, runner, variant_fields(runner), maps))
            except Skip as why:
                done.append({**ident, "batch": None, "status": "skipped", "reason": str(why)})
            except Exception as err:  # a backend failing here must not stop the rest of the table
                log.warning("%s %s failed: %s", backend, precision, err)
                done.append({**ident, "batch": None, "status": "failed", "reason": describe(err)})
        step(f"timing in {settings.rounds} turn(s)")
        time_in_turns([v for v in done if isinstance(v, Variant)], phantoms.patches, settings)
    step("decoding corners")  # after all timing: numba's OpenMP workers slow torch down when they ran first
    ref = evaluate(reference, phantoms, files.card) if reference is not None else None
    rows = []
    for variant in done:
        if isinstance(variant, dict):
            rows.append({**variant, **common})
        elif variant.error is not None:
            rows.append({**variant.ident, "batch": None, "status": "failed", "reason": variant.error, **common})
        else:
            rows += variant_rows(variant, ref, phantoms, files.card, common)
    return rows


def variant_rows(variant: Variant, ref: Accuracy | None, phantoms: PhantomSet, card: ModelCard,
                 common: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per batch size of a timed variant, with its accuracy columns."""
    same = ref is not None and np.array_equal(variant.maps, ref.maps)  # FP32 ORT: decoded once
    columns = compare(ref if same else evaluate(variant.maps, phantoms, card), ref)
    return [{**variant.ident, **variant.fields, "batch": b, **rates(b, t), "status": "ok", **columns, **common}
            for b, t in variant.times.items()]

