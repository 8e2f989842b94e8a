"""``vcorner benchmark``: patches/s per backend, precision and batch size, with accuracy deltas.

For every (backend, precision) that can run here, the model maps all patches of a small fixed phantom set
(written with :func:`vcorner.phantoms.dataset.synthesize_dataset` at a fixed seed, cut by
:func:`vcorner.pipeline.stages.prepare`, decoded by :func:`vcorner.pipeline.stages.finish`): the maps are
compared with FP32 ONNX Runtime's, and the corners with ``annotations.json`` (mean P2P, :mod:`vcorner.
evaluation.metrics`). Then each batch size is timed on those patches for a few seconds. Combinations that
cannot run here come back as ``skipped`` rows with the reason. Every row carries the machine, library
versions and date, ready to append to a JSON-lines file.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from vcorner.card import ModelCard, sha256_file
from vcorner.io.records import ImageRecord, InputError
from vcorner.runtime.base import Runner

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("ort", "torch", "trt")
PRECISIONS: tuple[str, ...] = ("fp32", "int8", "fp16")
PHANTOM_SEED = 20250501
"""Seed of the benchmark's phantom set (calibration for on-the-fly INT8 uses the next seed)."""
CALIBRATION_IMAGES = 4
LIBRARIES = ("vcorner", "numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "torch", "numba",
             "opencv-python-headless", "tensorrt")
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


class Skip(Exception):
    """A combination that cannot run here; the message is the reason."""


@dataclass(frozen=True)
class BenchmarkSettings:
    """What to measure.

    Attributes:
        model: ONNX file, ``.safetensors`` checkpoint or run folder (None: the shipped model).
        backends, precisions, batch_sizes: the grid; unavailable combinations are skipped.
        seconds: timing per batch size (at least 3 batches run).
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


@dataclass(frozen=True)
class Measured:
    """What timing a variant gave: its device and file, one timing per batch size, and its maps."""

    fields: dict[str, Any]
    timings: list[dict[str, Any]]
    maps: np.ndarray


@dataclass(frozen=True)
class Accuracy:
    """A variant's maps and corners on the phantom set."""

    maps: np.ndarray
    predictions: dict[tuple[str, str, str], dict[str, str]]
    p2p_mean: float
    unit: str


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, list[str]]:
    """CPU model name and which of ``CPU_FLAGS`` it reports (``platform``'s guess and [] without /proc)."""
    try:
        lines = cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return platform.processor() or platform.machine(), []
    fields = dict(line.split(":", 1) for line in reversed(lines) if ":" in line)  # the first CPU wins
    fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return fields.get("model name") or platform.machine(), [f for f in CPU_FLAGS if f in flags]


def gpu_names() -> list[str]:
    """GPU names from nvidia-smi when present, else from torch.cuda when torch is installed; [] without."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20, check=True).stdout
            return [line.strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def machine_info() -> dict[str, Any]:
    """CPU model, cores, CPU flags, GPUs, OS, and the 1-minute load average (other work on the machine)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cpu, flags = cpu_info()
    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_flags": flags, "gpu": gpu_names(),
            "platform": platform.platform(), "load_1m": None if load is None else round(load, 2)}


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide the numbers (Python included)."""
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def stamp() -> dict[str, Any]:
    """Machine, versions and UTC date, to merge into every recorded row."""
    return {"machine": machine_info(), "versions": library_versions(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def append_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Append ``rows`` as JSON lines to ``path`` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def default_results_path(cwd: Path | None = None) -> Path:
    """``benchmarks/results/benchmark.jsonl`` of the vcorner repo around ``cwd``, else ``cwd/benchmark.jsonl``."""
    cwd = Path(cwd or Path.cwd()).resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "benchmarks").is_dir() and (folder / "vcorner").is_dir() and (folder / "pyproject.toml").is_file():
            return folder / "benchmarks" / "results" / "benchmark.jsonl"
    return cwd / "benchmark.jsonl"


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
    import onnxruntime as ort

    from vcorner.runtime.onnxruntime_runner import OnnxRuntimeRunner

    gpu = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else None
    if precision == "fp32":
        return OnnxRuntimeRunner(files.onnx, gpu or "cpu", settings.threads)
    if precision == "int8":
        return OnnxRuntimeRunner(int8_model(files, scratch, settings), "cpu", settings.threads)
    if gpu is None:
        raise Skip("FP16 needs a GPU (ONNX Runtime has no CUDA execution provider here)")
    fp16 = files.onnx.with_name(f"{files.onnx.stem}.fp16.onnx")
    if not fp16.is_file():
        raise Skip(f"no FP16 ONNX beside the model ({fp16.name}: vcorner export --fp16)")
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
    return TorchRunner(files.checkpoint, "cuda" if cuda else "cpu", half=precision == "fp16")


def open_variant(files: ModelFiles, backend: str, precision: str, scratch: Path,
                 settings: BenchmarkSettings) -> Runner:
    """A not yet entered runner for (``backend``, ``precision``); raises Skip with the reason if impossible."""
    if backend == "trt":
        if not all(importlib.util.find_spec(m) for m in ("tensorrt", "cuda")):
            raise Skip("TensorRT needs tensorrt and cuda-python (pip install 'vcorner[gpu]') and a GPU")
        raise Skip("the native TensorRT runner is not part of this build")
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
    """Mean distance (px) between the corners two prediction sets share."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return float("nan")
    xy = [[float(p[k]["x"]), float(p[k]["y"])] for k in keys for p in (a, b)]
    pairs = np.asarray(xy).reshape(len(keys), 2, 2)
    return float(np.mean(np.linalg.norm(pairs[:, 0] - pairs[:, 1], axis=1)))


def compare(result: Accuracy, reference: Accuracy | None) -> dict[str, Any]:
    """Accuracy columns of a row: mean P2P and its change, max |map difference|, corner shift."""
    out: dict[str, Any] = {"p2p_mean": round(result.p2p_mean, 4), "p2p_unit": result.unit}
    if reference is not None:
        out.update(max_abs_diff=float(np.max(np.abs(result.maps - reference.maps))),
                   p2p_delta=round(result.p2p_mean - reference.p2p_mean, 4),
                   corner_shift_px=round(corner_shift(result.predictions, reference.predictions), 4))
    return out


def time_batches(runner: Runner, batch: np.ndarray, seconds: float, min_batches: int = 3) -> np.ndarray:
    """Seconds per call of ``runner.infer(batch)`` over ``seconds`` (after one warm-up call)."""
    runner.infer(batch)
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < min_batches or time.perf_counter() - began < seconds:
        start = time.perf_counter()
        runner.infer(batch)
        times.append(time.perf_counter() - start)
    return np.asarray(times)


def speed(runner: Runner, patches: np.ndarray, batch: int, seconds: float) -> dict[str, Any]:
    """patches/s and p50/p95 ms per batch of ``batch`` patches cycled from ``patches``."""
    feed = np.ascontiguousarray(patches[np.arange(batch) % len(patches)])
    times = time_batches(runner, feed, seconds)
    return {"patches_per_s": round(batch * len(times) / float(times.sum()), 1),
            "p50_ms": round(1e3 * float(np.percentile(times, 50)), 3),
            "p95_ms": round(1e3 * float(np.percentile(times, 95)), 3), "batches_timed": len(times)}


def measure_variant(runner: Runner, phantoms: PhantomSet, settings: BenchmarkSettings) -> Measured:
    """Maps of every phantom patch, then speed per batch size, of an entered runner (nothing decoded yet)."""
    maps = infer_all(runner, phantoms.patches, 64).astype(np.float32)
    timings = [{"batch": b, **speed(runner, phantoms.patches, b, settings.seconds)} for b in settings.batch_sizes]
    return Measured(variant_fields(runner), timings, maps)


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
    fields = {"device": getattr(runner, "device", "cpu")}
    if isinstance(path, Path) and path.is_file():
        fields.update(variant=path.name, variant_sha256=sha256_file(path))
    return fields


def one_line(err: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters)."""
    text = str(err).splitlines()[0][:200] if str(err) else ""
    return f"{type(err).__name__}: {text}"


def run_benchmark(settings: BenchmarkSettings, on_step: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Measure every combination of ``settings``; one row per (backend, precision, batch) or per skipped pair.

    Rows hold: model, model_sha256, backend, precision, device, variant (file run), variant_sha256, batch,
    status (``ok``/``skipped``/``failed``), reason, patches_per_s, p50_ms, p95_ms, max_abs_diff (maps vs
    FP32 ORT), p2p_mean, p2p_delta, corner_shift_px, images, patches, seed, seconds, machine, versions, date.

    Raises:
        InputError: the model cannot be read.
    """
    step = on_step or (lambda message: None)
    common = {"images": settings.images, "seed": settings.seed, "seconds": settings.seconds, **stamp()}
    done: list[tuple[dict[str, Any], Measured | dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="vcorner-bench-") as tmp:
        scratch = Path(tmp)
        files = resolve_model(settings.model, scratch)
        common.update(model=files.named.name, model_sha256=files.sha256)
        step(f"phantom set: {settings.images} image(s), seed {settings.seed}")
        phantoms = phantom_set(scratch / "phantoms", files.card, settings.images, settings.seed)
        common["patches"] = len(phantoms.patches)
        reference = reference_maps(files, phantoms, scratch, settings)
        for backend, precision in ((b, p) for b in settings.backends for p in settings.precisions):
            step(f"{backend} {precision}")
            ident = {"backend": backend, "precision": precision}
            try:
                with open_variant(files, backend, precision, scratch, settings) as runner:
                    done.append((ident, measure_variant(runner, phantoms, settings)))
            except Skip as why:
                done.append((ident, {"batch": None, "status": "skipped", "reason": str(why)}))
            except Exception as err:  # a backend failing here must not stop the rest of the table
                log.warning("%s %s failed: %s", backend, precision, err)
                done.append((ident, {"batch": None, "status": "failed", "reason": one_line(err)}))
    step("decoding corners")  # after all timing: numba's OpenMP workers slow torch down when they ran first
    ref = evaluate(reference, phantoms, files.card) if reference is not None else None
    rows = []
    for ident, result in done:
        if isinstance(result, dict):
            rows.append({**ident, **result, **common})
            continue
        same = ref is not None and np.array_equal(result.maps, ref.maps)  # FP32 ORT: decoded once
        columns = compare(ref if same else evaluate(result.maps, phantoms, files.card), ref)
        rows += [{**ident, **result.fields, **t, "status": "ok", **columns, **common} for t in result.timings]
    return rows
