"""torch on a checkpoint: the FP32 eager reference, or with an export profile on CUDA its FP16 and CUDA-graph
path. ``--backend auto`` runs every checkpoint (``.safetensors`` or a run folder) here."""

from __future__ import annotations

from pathlib import Path

from vcorner.backends.base import ModelRequest, ResolvedModel
from vcorner.hardware.capabilities import Capabilities
from vcorner.hardware.cuda import GpuInfo, has_module, torch_cuda_available
from vcorner.io.records import InputError, MachineError
from vcorner.models.card import sha256_file
from vcorner.models.modelfile import card_digest, is_checkpoint, read_checkpoint_card, resolve_checkpoint
from vcorner.models.precision import Precision
from vcorner.models.profiles import get_profile

NAME = "torch"


def probe(gpus: tuple[GpuInfo, ...]) -> tuple[str, ...]:
    """``("cpu",)`` when torch is importable (not imported: whether it sees CUDA is asked when it runs)."""
    return ("cpu",) if has_module("torch") else ()


def choose(model: Path, device: str | None, caps: Capabilities) -> str | None:
    """Why ``--backend auto`` runs ``model`` on torch: it is a checkpoint; None for an ONNX model."""
    return "a checkpoint runs on torch" if is_checkpoint(model) else None


def resolve(request: ModelRequest, caps: Capabilities, why: str) -> ResolvedModel:
    """torch on a checkpoint: the FP32 eager reference, or with ``profile`` on CUDA its FP16/CUDA-graph path.

    Raises:
        InputError: an ONNX model. MachineError: torch is not installed.
    """
    model, profile = Path(request.model), request.profile
    if not is_checkpoint(model):
        raise InputError(f"{model}: the torch backend runs a .safetensors checkpoint or run folder")
    if not has_module("torch"):
        raise MachineError("the torch backend needs torch: pip install 'vcorner[train]'")
    checkpoint = resolve_checkpoint(model)
    card = read_checkpoint_card(checkpoint)
    device = request.device or ("cuda" if torch_cuda_available() else "cpu")
    device = f"cuda:{device}" if device.isdigit() else device
    fast = profile is not None and device.startswith("cuda")  # else the FP32 eager reference
    half = fast and get_profile(profile).precision == Precision.fp16
    sha = sha256_file(checkpoint)
    return ResolvedModel(model, NAME, device, checkpoint, Precision.fp16 if half else Precision.fp32, card, sha, sha,
                         card_digest(card), why + (f", profile {profile}" if fast else ", eager FP32 reference"),
                         profile, cuda_graphs=fast, runner_casts=half)
