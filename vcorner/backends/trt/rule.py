"""Native TensorRT: where it can run here, and which engine it runs.

``--backend auto`` runs an ONNX model on TensorRT when TensorRT and cuda-python import, a CUDA GPU is visible
and the device is unset or CUDA. The engine is the export profile's (default ``gpu``: FP16), built from the FP32
graph or its FP16 variant, cached per GPU (:mod:`vcorner.models.engines`).
"""

from __future__ import annotations

from pathlib import Path

from vcorner.backends.base import ModelRequest, ResolvedModel, Step
from vcorner.backends.shared import cuda_index, onnx_model, profile_graph, wants_cuda
from vcorner.hardware.capabilities import Capabilities
from vcorner.hardware.cuda import INSTALL_HINT, GpuInfo
from vcorner.hardware.tensorrt import tensorrt_installed
from vcorner.io.records import InputError, MachineError
from vcorner.models.engines import engine_paths
from vcorner.models.modelfile import card_digest
from vcorner.models.profiles import DEFAULT_PROFILE, get_profile

NAME = "trt"


def probe(gpus: tuple[GpuInfo, ...]) -> tuple[str, ...]:
    """``("cuda",)`` when TensorRT and cuda-python import (the GPU itself is ``Capabilities.gpus``), else none."""
    return ("cuda",) if tensorrt_installed() else ()


def choose(model: Path, device: str | None, caps: Capabilities) -> str | None:
    """Why ``--backend auto`` runs ``model`` on TensorRT here, or None (no TensorRT, no GPU, or another device)."""
    if wants_cuda(device) and caps.devices(NAME) and caps.gpus:
        return "TensorRT, cuda-python and a CUDA GPU are here"
    return None


def resolve(request: ModelRequest, caps: Capabilities, why: str) -> ResolvedModel:
    """Native TensorRT: the engine of the request's profile built from the FP32 graph or its FP16 variant.

    Raises:
        MachineError: no TensorRT or cuda-python here. InputError: a checkpoint, or no such CUDA GPU.
    """
    model = Path(request.model)
    card, sha = onnx_model(model)
    if not caps.devices(NAME):
        raise MachineError(f"the TensorRT backend needs tensorrt and cuda-python and a CUDA GPU: {INSTALL_HINT}, "
                           "or use --backend ort")
    index = cuda_index(request.device)
    gpu = caps.gpu(index)
    if gpu is None:
        raise InputError(f"no CUDA GPU {index} visible here; the TensorRT backend needs one ({INSTALL_HINT}), "
                         "or use --backend ort")
    chosen = get_profile(request.profile or DEFAULT_PROFILE)
    graph, graph_sha, precision, pending = profile_graph(model, card, sha, chosen.precision)
    plan, _ = engine_paths(graph, chosen, gpu)
    return ResolvedModel(model, NAME, f"cuda:{index}", graph, precision, card, sha, graph_sha, card_digest(card),
                         f"{why}; profile {chosen.name} on {gpu.name}", chosen.name, engine=plan,
                         pending=(*pending, Step.engine))
