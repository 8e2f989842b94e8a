"""What will run: a model file, a backend and a device resolved once per run into one :class:`ResolvedModel`.

``vcorner batch`` (local and every Ray actor), ``tune``, ``evaluate``, ``benchmark`` and the scripts of
``benchmarks/`` open their runner from this value (:func:`vcorner.runtime.open.open_runner`), so the graph
that runs is decided in one place, from the model file, the request and :class:`~vcorner.hardware.
capabilities.Capabilities` alone, never from the folder a command was started in. Nothing is converted here:
a graph or engine still to be made is named in ``pending`` and made by the cache step
(:func:`vcorner.export.materialize.materialize`) or ``vcorner export``.

``--backend auto``: torch for a checkpoint; native TensorRT when TensorRT and cuda-python import, a CUDA GPU is
visible and the device is unset or CUDA; otherwise ONNX Runtime on its best device, with the INT8 variant on
the CPU where recorded evidence shows it wins (:mod:`vcorner.models.evidence`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from vcorner.hardware.capabilities import Capabilities, probe
from vcorner.hardware.cpu import inference_threads
from vcorner.hardware.cuda import INSTALL_HINT, has_module, torch_cuda_available
from vcorner.io.records import InputError, MachineError
from vcorner.models.card import ModelCard, sha256_file
from vcorner.models.engines import engine_dir, engine_paths
from vcorner.models.evidence import evidence_files, int8_decision
from vcorner.models.modelfile import (
    card_digest,
    default_model_path,
    is_checkpoint,
    read_card_and_digest,
    read_checkpoint_card,
    read_model_card,
    resolve_checkpoint,
)
from vcorner.models.profiles import DEFAULT_PROFILE, get_profile
from vcorner.models.variants import card_precision, find_fp16, fp16_path, int8_path

log = logging.getLogger(__name__)


class Backend(str, Enum):
    """Inference backends (``auto`` picks the best available for the model file)."""

    auto = "auto"
    ort = "ort"
    trt = "trt"
    torch = "torch"


@dataclass(frozen=True)
class ResolvedModel:
    """One run's model: which file runs, on which backend and device, in which precision, and why.

    Attributes:
        named: the model the user named (default: the shipped one).
        backend: ``ort``, ``trt`` or ``torch`` (never ``auto``).
        device: ``cpu``, ``cuda:N`` or ``tensorrt:N`` (ONNX Runtime's TensorRT provider).
        graph: the file the runner loads: the ONNX model, its INT8 or FP16 variant, or the checkpoint.
        precision: ``fp32``, ``fp16`` or ``int8``.
        card: the model card (decoding constants, prior, patch sampling).
        sha256: SHA-256 of ``named`` (of a run folder's ``model.safetensors``).
        graph_sha256: SHA-256 of ``graph``; None while ``pending`` says it is still to be made.
        card_digest: SHA-256 of the card's content (:func:`vcorner.models.modelfile.card_digest`).
        reason: one line: why this backend and graph.
        profile: export profile name of GPU runs (batch range and precision), None for CPU runs.
        threads: ONNX Runtime intra-op threads (None: all cores).
        cpu_graph: ONNX Runtime GPU runs: the graph to run instead if the CPU provider ends up running it.
        engine: TensorRT: the plan file (:mod:`vcorner.models.engines`).
        cuda_graphs: torch on CUDA: replay CUDA graphs (with ``profile`` given).
        pending: what the cache step must still do: ``fp16`` (make the FP16 graph), ``engine`` (build the TensorRT
            plan), ``int8_check`` (time the INT8 variant on this CPU, then choose).
    """

    named: Path
    backend: Backend
    device: str
    graph: Path
    precision: str
    card: ModelCard
    sha256: str
    graph_sha256: str | None
    card_digest: str
    reason: str
    profile: str | None = None
    threads: int | None = None
    cpu_graph: Path | None = None
    engine: Path | None = None
    cuda_graphs: bool = False
    pending: tuple[str, ...] = ()

    @property
    def identity(self) -> str | None:
        """What runs, for ``OUT/run.json``: the graph's SHA-256, with ``+fp16`` where the file does not say it
        (torch's FP16 path on an FP32 checkpoint)."""
        if self.graph_sha256 is None:
            return None
        return self.graph_sha256 + ("+fp16" if self.backend == Backend.torch and self.precision == "fp16" else "")

    @property
    def cuda_index(self) -> int:
        """CUDA ordinal of the device (0 for ``cpu``)."""
        return int(self.device.partition(":")[2] or 0)

    def describe(self) -> str:
        """One line for logs and ``-v``: backend, device, file, precision and the reason."""
        return f"{self.backend.value} on {self.device}: {self.graph.name} ({self.precision}); {self.reason}"


@dataclass(frozen=True)
class ModelRequest:
    """What a command asked for (``--model``, ``--backend``, ``--device``, ``--threads``, ``--profile``), before it
    is resolved on a machine (the driver's, or for Ray a worker's)."""

    model: Path | None = None
    backend: Backend = Backend.auto
    device: str | None = None
    threads: int | None = None
    profile: str | None = None
    precision: str = "auto"

    def resolve(self, caps: Capabilities | None = None) -> ResolvedModel:
        """:func:`resolve_model` of this request on a machine with ``caps`` (default: this one)."""
        return resolve_model(self.model, self.backend, self.device, self.threads, self.profile, caps, self.precision)


def cuda_index(device: str | None) -> int:
    """CUDA ordinal of ``device`` (``None``, ``cuda`` -> 0; ``cuda:1``, ``1`` -> 1).

    Raises:
        InputError: anything else.
    """
    text = (device or "0").removeprefix("cuda").lstrip(":") or "0"
    if not text.isdigit():
        raise InputError(f"TensorRT runs on a CUDA device (cuda, cuda:N or N), got {device!r}")
    return int(text)


def check_device(device: str | None) -> None:
    """InputError unless ``device`` is None, ``cpu``, ``cuda[:N]``, ``tensorrt[:N]`` or a CUDA ordinal ``N``.

    Called before any work, so a mistyped device never converts or writes anything.
    """
    if device is None or device.isdigit():
        return
    kind, colon, index = device.partition(":")
    if kind not in ("cpu", "cuda", "tensorrt") or (colon and (kind == "cpu" or not index.isdigit())):
        raise InputError(f"--device must be cpu, cuda[:N], tensorrt[:N] or N, got {device!r}")


def choose_backend(model: Path, backend: Backend, device: str | None, caps: Capabilities) -> tuple[Backend, str]:
    """(concrete backend, why) for ``model`` when ``backend`` may be ``auto``."""
    if backend != Backend.auto:
        return backend, f"--backend {backend.value}"
    if is_checkpoint(model):
        return Backend.torch, "a checkpoint runs on torch"
    cuda_device = device is None or device.startswith("cuda") or device.isdigit()
    if cuda_device and caps.tensorrt and caps.gpus:
        return Backend.trt, "TensorRT, cuda-python and a CUDA GPU are here"
    return Backend.ort, "ONNX Runtime" + (" (no TensorRT with a GPU here)" if cuda_device else "")


CPU_PRECISIONS = ("auto", "fp32", "int8")
"""``--precision`` of ONNX Runtime on the CPU: ``auto`` runs the INT8 variant where it wins (below)."""


def resolve_model(model: Path | None = None, backend: Backend = Backend.auto, device: str | None = None,
                  threads: int | None = None, profile: str | None = None,
                  caps: Capabilities | None = None, precision: str = "auto") -> ResolvedModel:
    """Resolve ``model`` (default: the shipped model) for ``backend`` and ``device`` on a machine with ``caps``
    (default: :func:`vcorner.hardware.capabilities.probe`).

    ``profile`` names the export profile of GPU runs (default ``gpu``: FP16): the TensorRT engine's batch range
    and precision, the graph ONNX Runtime's GPU providers run, and, given with the torch backend on a CUDA
    device, torch's FP16 and CUDA graphs (without it torch stays the FP32 reference).

    ``precision`` (ONNX Runtime on the CPU): ``fp32`` the model as given, ``int8`` its ``m.int8.onnx``, ``auto``
    the INT8 variant where :func:`vcorner.models.evidence.int8_decision` says it wins; a CPU with VNNI or AMX
    but no benchmark gets a self-check in the cache step (``pending=("int8_check",)``).

    Raises:
        InputError: bad device or precision, unknown model file or profile, failed checksum, or a backend that
            cannot run this model here.
    """
    check_device(device)
    if precision not in CPU_PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(CPU_PRECISIONS)}, got {precision!r}")
    if profile is not None:
        get_profile(profile)
    model = Path(model) if model is not None else default_model_path()
    caps = caps or probe()
    chosen, why = choose_backend(model, Backend(backend), device, caps)
    if chosen == Backend.torch:
        return _torch(model, device, profile, why)
    if is_checkpoint(model):
        raise InputError(f"{model}: a checkpoint; export it first (vcorner export {model}) or use --backend torch")
    card, sha = read_card_and_digest(model)
    if chosen == Backend.trt:
        return _tensorrt(model, card, sha, device, profile, caps, why)
    if precision == "auto" and Backend(backend) != Backend.auto:
        precision = "fp32"  # --backend ort names the graph as given
    return _onnxruntime(model, card, sha, precision, device, threads, profile, caps, why)


def _torch(model: Path, device: str | None, profile: str | None, why: str) -> ResolvedModel:
    """torch on a checkpoint: the FP32 eager reference, or with ``profile`` on CUDA its FP16/CUDA-graph path."""
    if not is_checkpoint(model):
        raise InputError(f"{model}: the torch backend runs a .safetensors checkpoint or run folder")
    if not has_module("torch"):
        raise MachineError("the torch backend needs torch: pip install 'vcorner[train]'")
    checkpoint = resolve_checkpoint(model)
    card = read_checkpoint_card(checkpoint)
    device = device or ("cuda" if torch_cuda_available() else "cpu")
    device = f"cuda:{device}" if device.isdigit() else device
    fast = profile is not None and device.startswith("cuda")  # else the FP32 eager reference
    half = fast and get_profile(profile).precision == "fp16"
    sha = sha256_file(checkpoint)
    return ResolvedModel(model, Backend.torch, device, checkpoint, "fp16" if half else "fp32", card, sha, sha,
                         card_digest(card), why + (f", profile {profile}" if fast else ", eager FP32 reference"),
                         profile, cuda_graphs=fast)


def _tensorrt(model: Path, card: ModelCard, sha: str, device: str | None, profile: str | None,
              caps: Capabilities, why: str) -> ResolvedModel:
    """Native TensorRT: the engine of ``profile`` built from the FP32 graph or its FP16 variant."""
    if not caps.tensorrt:
        raise MachineError(f"the TensorRT backend needs tensorrt and cuda-python and a CUDA GPU: {INSTALL_HINT}, "
                         "or use --backend ort")
    index = cuda_index(device)
    gpu = caps.gpu(index)
    if gpu is None:
        raise InputError(f"no CUDA GPU {index} visible here; the TensorRT backend needs one ({INSTALL_HINT}), "
                         "or use --backend ort")
    chosen = get_profile(profile or DEFAULT_PROFILE)
    graph, graph_sha, precision, pending = _profile_graph(model, card, sha, chosen.precision)
    pending = (*pending, "engine")
    plan, _ = engine_paths(graph, chosen, gpu)
    return ResolvedModel(model, Backend.trt, f"cuda:{index}", graph, precision, card, sha, graph_sha,
                         card_digest(card), f"{why}; profile {chosen.name} on {gpu.name}", chosen.name,
                         engine=plan, pending=pending)


def _onnxruntime(model: Path, card: ModelCard, sha: str, precision: str, device: str | None, threads: int | None,
                 profile: str | None, caps: Capabilities, why: str) -> ResolvedModel:
    """ONNX Runtime: on the CPU the graph of ``precision`` (:func:`_cpu_graph`); on a GPU provider the FP16
    variant for an FP16 profile.

    On the CPU, unless ``threads`` is given, inference gets its share of the cores
    (:func:`vcorner.hardware.cpu.inference_threads`: on 2 cores with the shipped sampling 1 thread for INT8, 2
    for FP32) and the batch's
    decoding and corner-search threads the rest.
    """
    device = device or caps.ort_devices[0]
    device = f"cuda:{device}" if device.isdigit() else device
    if device == "cpu" or precision == "int8":
        if device != "cpu":
            raise InputError(f"--precision int8 runs on ONNX Runtime's CPU provider, not {device}")
        graph, graph_sha, chosen, reason, pending = _cpu_graph(model, card, sha, precision, caps)
        if threads is None:
            threads = inference_threads(chosen, card.sampling.patches_per_vertebra, caps.cores)
            reason += f"; {threads} inference thread(s) of {caps.cores} core(s)"
        return ResolvedModel(model, Backend.ort, "cpu", graph, chosen, card, sha, graph_sha, card_digest(card),
                             f"{why} on the CPU; {reason}", threads=threads, pending=pending)
    chosen = get_profile(profile or DEFAULT_PROFILE)
    graph, graph_sha, precision, pending = _profile_graph(model, card, sha, chosen.precision)
    return ResolvedModel(model, Backend.ort, device, graph, precision, card, sha, graph_sha, card_digest(card),
                         f"{why} on {device}; profile {chosen.name}", chosen.name, threads, cpu_graph=model,
                         pending=pending)


def _profile_graph(model: Path, card: ModelCard, sha: str,
                   wanted: str) -> tuple[Path, str | None, str, tuple[str, ...]]:
    """(graph, its SHA-256 or None while still to make, precision, pending) of a GPU profile's ``wanted`` precision:
    the model itself, or its FP16 variant (found beside it or in the engine folder, else ``pending=("fp16",)``)."""
    precision = card_precision(card)
    if wanted != "fp16" or precision == "fp16":
        return model, sha, precision, ()
    found = find_fp16(model, sha, engine_dir(model))
    if found is None:
        return engine_dir(model) / fp16_path(model).name, None, "fp16", ("fp16",)
    return found, sha256_file(found), "fp16", ()


def _cpu_graph(model: Path, card: ModelCard, sha: str, precision: str,
               caps: Capabilities) -> tuple[Path, str, str, str, tuple[str, ...]]:
    """(graph, its SHA-256, precision, reason, pending) of ONNX Runtime on this CPU for ``precision``."""
    candidate = int8_path(model)
    if precision == "fp32" or (precision == "auto" and not candidate.is_file()):
        why = "--precision fp32" if precision == "fp32" else "no INT8 variant beside the model"
        return model, sha, card_precision(card), why, ()
    if not candidate.is_file():
        raise InputError(f"--precision int8: no {candidate.name} beside {model.name} (vcorner export MODEL --int8 "
                         "--calib DATA writes it)")
    candidate_sha = sha256_file(candidate)
    if precision == "int8":
        return candidate, candidate_sha, "int8", "--precision int8", ()
    decision = int8_decision(evidence_files(model), sha, candidate_sha, caps.cpu, caps.cores, caps.cpu_flags)
    log.info("INT8 variant %s: %s", candidate.name, decision.reason)
    if decision.use_int8:
        return candidate, candidate_sha, "int8", decision.reason, ()
    return model, sha, card_precision(card), decision.reason, ("int8_check",) if decision.check else ()


def card_of(model: Path) -> ModelCard:
    """The card of an ONNX model or a checkpoint (no backend resolved: for ``vcorner baseline`` and tools)."""
    return read_checkpoint_card(model) if is_checkpoint(model) else read_model_card(model)
