"""ONNX Runtime: where it can run here, and which graph it runs.

``--backend auto`` leaves every ONNX model no other backend took to ONNX Runtime, on its best device. On the CPU
it runs the graph of ``--precision``: the model as given, its INT8 variant, or (``auto``) the INT8 variant where
recorded evidence shows it wins (:mod:`vcorner.models.evidence`); on a GPU provider the FP16 variant of an FP16
export profile.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vcorner.backends.base import ModelRequest, ResolvedModel, Step
from vcorner.backends.shared import onnx_model, profile_graph, wants_cuda
from vcorner.hardware.capabilities import Capabilities
from vcorner.hardware.cpu import inference_threads
from vcorner.hardware.cuda import GpuInfo, driver_lists_gpu, has_module
from vcorner.io.records import InputError
from vcorner.models.card import ModelCard, sha256_file
from vcorner.models.evidence import evidence_files, int8_decision
from vcorner.models.modelfile import card_digest
from vcorner.models.precision import CpuPrecision, Precision
from vcorner.models.profiles import DEFAULT_PROFILE, get_profile
from vcorner.models.variants import card_precision, int8_path

log = logging.getLogger(__name__)

NAME = "ort"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def ort_devices(providers: set[str], gpu_visible: bool, tensorrt: bool) -> tuple[str, ...]:
    """ORT devices usable here, best first, from the providers compiled into the installed wheel.

    ``ort.get_available_providers()`` lists what the wheel was built with, not what can run: onnxruntime-gpu on a
    machine without a GPU lists both GPU providers. They are offered only when a GPU is visible, and the TensorRT
    one only when TensorRT itself is installed.
    """
    if not (providers & set(GPU_PROVIDERS)) or not gpu_visible:
        return ("cpu",)
    usable = {"tensorrt": GPU_PROVIDERS[0] in providers and tensorrt, "cuda": GPU_PROVIDERS[1] in providers}
    return (*[d for d, ok in usable.items() if ok], "cpu")


def probe(gpus: tuple[GpuInfo, ...]) -> tuple[str, ...]:
    """ONNX Runtime's devices here (imports onnxruntime, a fraction of a second)."""
    import onnxruntime as ort

    return ort_devices(set(ort.get_available_providers()), bool(gpus) or driver_lists_gpu(), has_module("tensorrt"))


def choose(model: Path, device: str | None, caps: Capabilities) -> str:
    """Why ``--backend auto`` runs ``model`` here: ONNX Runtime takes every model the backends before it left."""
    return "ONNX Runtime" + (" (no TensorRT with a GPU here)" if wants_cuda(device) else "")


def devices(caps: Capabilities) -> tuple[str, ...]:
    """ONNX Runtime's devices in ``caps``, best first; its CPU provider always (onnxruntime is a dependency of
    vcorner), also on a machine described without probing it."""
    return caps.devices(NAME) or ("cpu",)


def resolve(request: ModelRequest, caps: Capabilities, why: str) -> ResolvedModel:
    """ONNX Runtime: on the CPU the graph of ``request.precision`` (:func:`cpu_graph`; ``auto`` with
    ``--backend ort`` named runs the model as given); on a GPU provider the FP16 variant for an FP16 profile.

    On the CPU, unless ``threads`` is given, inference gets its share of the cores
    (:func:`vcorner.hardware.cpu.inference_threads`: on 2 cores with the shipped sampling 1 thread for INT8, 2
    for FP32) and the batch's decoding and corner-search threads the rest.

    Raises:
        InputError: a checkpoint, ``--precision int8`` off the CPU, no INT8 variant for it, or bf16.
    """
    model, threads = Path(request.model), request.threads
    card, sha = onnx_model(model)
    precision = CpuPrecision(request.precision)
    if precision == CpuPrecision.bf16:
        raise InputError("--precision bf16 runs on OpenVINO (--backend ov), not ONNX Runtime")
    if precision == CpuPrecision.auto and request.backend != "auto":
        precision = CpuPrecision.fp32  # --backend ort names the graph as given
    device = request.device or devices(caps)[0]
    device = f"cuda:{device}" if device.isdigit() else device
    if device == "cpu" or precision == CpuPrecision.int8:
        if device != "cpu":
            raise InputError(f"--precision int8 runs on ONNX Runtime's CPU provider, not {device}")
        graph, graph_sha, chosen, reason, pending = cpu_graph(model, card, sha, precision, caps)
        if threads is None:
            threads = inference_threads(chosen, card.sampling.patches_per_vertebra, caps.cores)
            reason += f"; {threads} inference thread(s) of {caps.cores} core(s)"
        return ResolvedModel(model, NAME, "cpu", graph, chosen, card, sha, graph_sha, card_digest(card),
                             f"{why} on the CPU; {reason}", threads=threads, pending=pending)
    profile = get_profile(request.profile or DEFAULT_PROFILE)
    graph, graph_sha, runs, pending = profile_graph(model, card, sha, profile.precision)
    return ResolvedModel(model, NAME, device, graph, runs, card, sha, graph_sha, card_digest(card),
                         f"{why} on {device}; profile {profile.name}", profile.name, threads, cpu_graph=model,
                         pending=pending)


def cpu_graph(model: Path, card: ModelCard, sha: str, precision: CpuPrecision,
              caps: Capabilities) -> tuple[Path, str, Precision, str, tuple[Step, ...]]:
    """(graph, its SHA-256, precision, reason, pending) of ONNX Runtime on this CPU for ``precision``; a CPU with
    VNNI or AMX but no benchmark gets a self-check in the cache step (``pending=(int8_check,)``)."""
    candidate = int8_path(model)
    if precision == CpuPrecision.fp32 or (precision == CpuPrecision.auto and not candidate.is_file()):
        why = "--precision fp32" if precision == CpuPrecision.fp32 else "no INT8 variant beside the model"
        return model, sha, card_precision(card), why, ()
    if not candidate.is_file():
        raise InputError(f"--precision int8: no {candidate.name} beside {model.name} (vcorner export MODEL --int8 "
                         "--calib DATA writes it)")
    candidate_sha = sha256_file(candidate)
    if precision == CpuPrecision.int8:
        return candidate, candidate_sha, Precision.int8, "--precision int8", ()
    decision = int8_decision(evidence_files(model), sha, candidate_sha, caps.cpu, caps.cores, caps.cpu_flags)
    log.info("INT8 variant %s: %s", candidate.name, decision.reason)
    if decision.use_int8:
        return candidate, candidate_sha, Precision.int8, decision.reason, ()
    return model, sha, card_precision(card), decision.reason, (Step.int8_check,) if decision.check else ()


