"""OpenVINO on the CPU: where it can run here, whether ``--backend auto`` gives it a model, and which graph it runs.

``--backend auto`` runs an ONNX model on OpenVINO only where recorded rows of this CPU show an OpenVINO precision
faster than ONNX Runtime's graph and the corners within the limit (:mod:`vcorner.models.ov_evidence`); where the
accuracy is recorded but no timing of this CPU, the cache step times it (``Step.ov_check``,
:func:`vcorner.backends.openvino.cache.check_ov`). FP32 and BF16 run the ONNX model as given (BF16 through
``INFERENCE_PRECISION_HINT``), INT8 its QDQ variant ``m.int8.onnx``.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import replace
from pathlib import Path

from vcorner.backends.base import ModelRequest, ResolvedModel, Step
from vcorner.backends.shared import onnx_model
from vcorner.hardware.capabilities import Capabilities
from vcorner.hardware.cpu import inference_threads
from vcorner.hardware.cuda import GpuInfo
from vcorner.io.records import InputError, MachineError
from vcorner.models.card import sha256_file
from vcorner.models.evidence import evidence_files, read_rows
from vcorner.models.modelfile import card_digest, is_checkpoint
from vcorner.models.ov_evidence import OvDecision, ov_decision
from vcorner.models.precision import CpuPrecision, Precision
from vcorner.models.variants import int8_path

NAME = "ov"
INSTALL = "pip install 'vcorner[openvino]'"
COST = {"fp32": "fp32", "bf16": "int8", "int8": "int8"}
"""The ONNX Runtime graph whose per-patch cost (:data:`vcorner.hardware.cpu.PATCH_MS`) sizes OpenVINO's thread
share: BF16 ran about as fast as ONNX Runtime INT8 on this 2-core AMD EPYC
(``benchmarks/results/openvino_check.md``)."""


def probe(gpus: tuple[GpuInfo, ...]) -> tuple[str, ...]:
    """``("cpu",)`` when ``openvino`` is installed, else none; finds the package without importing it (importing
    it and asking its CPU plugin takes about 0.9 s on this CPU: :func:`cpu_precisions` does that when needed)."""
    return ("cpu",) if importlib.util.find_spec("openvino") is not None else ()


@functools.lru_cache(maxsize=1)
def cpu_precisions() -> tuple[str, ...]:
    """The precisions OpenVINO's CPU plugin offers here, from its ``OPTIMIZATION_CAPABILITIES`` (``FP32``;
    ``BF16`` and ``INT8`` where the CPU has them); none without a CPU device.

    Raises:
        MachineError: OpenVINO is not installed (one line naming the install command).
    """
    from vcorner.backends.openvino.runner import import_openvino

    core = import_openvino().Core()
    if "CPU" not in core.available_devices:
        return ()
    found = set(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return tuple(p for p, cap in (("bf16", "BF16"), ("int8", "INT8"), ("fp32", "FP32")) if cap in found)


def decide(model: Path, caps: Capabilities) -> OvDecision:
    """:func:`vcorner.models.ov_evidence.ov_decision` for ``model`` on this CPU (OpenVINO's plugin is asked for
    its precisions only when a row of OpenVINO for this model exists)."""
    sha = sha256_file(model)
    int8 = int8_path(model)
    int8_sha = sha256_file(int8) if int8.is_file() else None
    files = evidence_files(model)
    if not any(r.get("backend") == NAME and r.get("model_sha256") == sha for f in files for r in read_rows(f)):
        return OvDecision(None, "no OpenVINO row for this model")
    offered = tuple(p for p in cpu_precisions() if p != "int8" or int8_sha is not None)
    return ov_decision(files, sha, int8_sha, caps.cpu, caps.cores, caps.cpu_flags, offered)


def choose(model: Path, device: str | None, caps: Capabilities) -> str | None:
    """Why ``--backend auto`` runs ``model`` on OpenVINO here (evidence shows it wins, or a self-check is due), or
    None: no OpenVINO, not on the CPU (a GPU provider of ONNX Runtime comes first), a checkpoint, or no evidence."""
    if not caps.devices(NAME) or device not in (None, "cpu") or is_checkpoint(model) or not Path(model).is_file():
        return None
    if device is None and caps.devices("ort")[:1] not in ((), ("cpu",)):
        return None
    decision = decide(model, caps)
    if decision.precision is not None:
        return decision.reason
    return decision.reason if decision.check else None


def graph_of(model: Path, sha: str, precision: str) -> tuple[Path, str]:
    """(graph, SHA-256) OpenVINO runs for ``precision``: the model, or its INT8 variant.

    Raises:
        InputError: int8 without ``m.int8.onnx`` beside the model.
    """
    if precision != "int8":
        return model, sha
    found = int8_path(model)
    if not found.is_file():
        raise InputError(f"--precision int8: no {found.name} beside {model.name} (vcorner export MODEL --int8 "
                         "--calib DATA writes it)")
    return found, sha256_file(found)


def check_here(precision: str, caps: Capabilities) -> None:
    """Refuse OpenVINO where it is not installed, and a precision its CPU plugin does not offer here.

    Raises:
        MachineError: no OpenVINO (naming the install command), or bf16 / int8 the CPU lacks (by name).
    """
    if not caps.devices(NAME):
        raise MachineError(f"--backend ov needs OpenVINO: {INSTALL}")
    offered = cpu_precisions()
    if precision not in offered:
        raise MachineError(f"OpenVINO on this CPU offers {', '.join(offered) or 'nothing'} "
                           f"(OPTIMIZATION_CAPABILITIES), not --precision {precision}: run another precision")


def resolve(request: ModelRequest, caps: Capabilities, why: str) -> ResolvedModel:
    """OpenVINO on the CPU in ``request.precision``; ``auto`` runs what the evidence picks (fp32 where it picks
    none, or with a self-check still pending: ``pending=(ov_check,)``).

    Raises:
        MachineError: OpenVINO missing, or a precision this CPU lacks. InputError: a checkpoint, a device other
            than the CPU, or int8 without the INT8 variant.
    """
    model = Path(request.model)
    card, sha = onnx_model(model)
    if request.device not in (None, "cpu"):
        raise InputError(f"--backend ov runs on the CPU, not {request.device}")
    precision, pending = CpuPrecision(request.precision), ()
    if precision == CpuPrecision.auto:
        decision = decide(model, caps) if request.backend == "auto" else None
        precision = CpuPrecision(decision.precision or "fp32") if decision else CpuPrecision.fp32
        pending = (Step.ov_check,) if decision and decision.check else ()
        why = f"{why}; OpenVINO {precision}" + ("; self-check pending" if pending else "")
    else:
        why = f"{why}; --precision {precision}"
    check_here(precision, caps)
    graph, graph_sha = graph_of(model, sha, precision)
    resolved = ResolvedModel(model, NAME, "cpu", graph, Precision(precision), card, sha, graph_sha,
                             card_digest(card), f"{why} on the CPU", threads=request.threads, pending=pending,
                             runner_casts=precision == CpuPrecision.bf16)
    return resolved if pending else with_threads(resolved, caps.cores)


def with_threads(resolved: ResolvedModel, cores: int) -> ResolvedModel:
    """``resolved`` with its inference share of ``cores`` (:func:`vcorner.hardware.cpu.inference_threads`) unless
    ``--threads`` gave one; a self-check still pending leaves ``threads`` as the user gave it, so that ONNX Runtime
    can take the model over."""
    if resolved.threads is not None:
        return resolved
    threads = inference_threads(COST[resolved.precision], resolved.card.sampling.patches_per_vertebra, cores)
    return replace(resolved, threads=threads,
                   reason=f"{resolved.reason}; {threads} inference thread(s) of {cores} core(s)")
