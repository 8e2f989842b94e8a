"""The small protocol every backend folder fills, and the values that travel between its parts.

A backend (``vcorner/backends/<name>/``) is one :class:`BackendSpec`: what it can use here (``probe``), whether
``--backend auto`` picks it for a model (``choose``), what it would run (``resolve`` -> :class:`ResolvedModel`),
the files it may still need made (``steps``: the cache step, run by
:func:`vcorner.backends.registry.materialize`) and its runner (``open``). The registry
(:mod:`vcorner.backends.registry`) iterates over the specs; no code outside a backend's folder names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vcorner.hardware.capabilities import Capabilities
from vcorner.hardware.cuda import GpuInfo
from vcorner.models.card import ModelCard
from vcorner.models.precision import CpuPrecision, Precision, TextEnum
from vcorner.runtime.base import Runner


class Step(TextEnum):
    """What the cache step may still have to make before a runner opens (``ResolvedModel.pending``)."""

    fp16 = "fp16"
    """Convert the FP16 graph of an FP16 GPU profile (:func:`vcorner.export.fp16.fp16_variant`)."""
    engine = "engine"
    """Build the TensorRT plan of the profile on this GPU (:func:`vcorner.export.tensorrt_build.ensure_engine`)."""
    int8_check = "int8_check"
    """Time the INT8 variant on this CPU, then choose (:func:`vcorner.export.int8_check.self_check`)."""
    ov_check = "ov_check"
    """Time OpenVINO against ONNX Runtime on this CPU, then choose
    (:func:`vcorner.backends.openvino.cache.check_ov`)."""


@dataclass(frozen=True)
class ResolvedModel:
    """One run's model: which file runs, on which backend and device, in which precision, and why.

    Attributes:
        named: the model the user named (default: the shipped one).
        backend: the backend's name (``ort``, ``trt``, ``torch``, ``ov``; never ``auto``), a
            :data:`vcorner.backends.registry.Backend` member once resolved.
        device: ``cpu``, ``cuda:N`` or ``tensorrt:N`` (ONNX Runtime's TensorRT provider).
        graph: the file the runner loads: the ONNX model, its INT8 or FP16 variant, or the checkpoint.
        precision: what runs.
        card: the model card (decoding constants, prior, patch sampling).
        sha256: SHA-256 of ``named`` (of a run folder's ``model.safetensors``).
        graph_sha256: SHA-256 of ``graph``; None while ``pending`` says it is still to be made.
        card_digest: SHA-256 of the card's content (:func:`vcorner.models.modelfile.card_digest`).
        reason: one line: why this backend and graph.
        profile: export profile name of GPU runs (batch range and precision), None for CPU runs.
        threads: inference threads (ONNX Runtime intra-op, OpenVINO ``INFERENCE_NUM_THREADS``; None: all cores).
        cpu_graph: ONNX Runtime GPU runs: the graph to run instead if the CPU provider ends up running it.
        engine: TensorRT: the plan file (:mod:`vcorner.models.engines`).
        cuda_graphs: torch on CUDA: replay CUDA graphs (with ``profile`` given).
        pending: what the cache step must still make (:class:`Step`).
        runner_casts: the runner casts ``graph`` to ``precision`` as it loads it (torch's FP16 path on an FP32
            checkpoint), so the file's SHA-256 alone does not say what runs.
    """

    named: Path
    backend: str
    device: str
    graph: Path
    precision: Precision
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
    pending: tuple[Step, ...] = ()
    runner_casts: bool = False

    @property
    def identity(self) -> str | None:
        """What runs, for ``OUT/run.json``: the graph's SHA-256, with ``+fp16`` where the file does not say it
        (:attr:`runner_casts`)."""
        if self.graph_sha256 is None:
            return None
        return self.graph_sha256 + (f"+{self.precision}" if self.runner_casts else "")

    @property
    def cuda_index(self) -> int:
        """CUDA ordinal of the device (0 for ``cpu``)."""
        return int(self.device.partition(":")[2] or 0)

    def describe(self) -> str:
        """One line for logs and ``-v``: backend, device, file, precision and the reason."""
        return f"{self.backend} on {self.device}: {self.graph.name} ({self.precision}); {self.reason}"


@dataclass(frozen=True)
class ModelRequest:
    """What a command asked for (``--model``, ``--backend``, ``--device``, ``--threads``, ``--profile``,
    ``--precision``), before it is resolved on a machine (the driver's, or for Ray a worker's)."""

    model: Path | None = None
    backend: str = "auto"
    device: str | None = None
    threads: int | None = None
    profile: str | None = None
    precision: CpuPrecision | str = CpuPrecision.auto

    def resolve(self, caps: Capabilities | None = None) -> ResolvedModel:
        """:func:`vcorner.backends.registry.resolve_model` of this request on a machine with ``caps`` (default:
        this one)."""
        from vcorner.backends.registry import resolve_model

        return resolve_model(self.model, self.backend, self.device, self.threads, self.profile, caps, self.precision)


@dataclass(frozen=True)
class BackendSpec:
    """One inference backend, as its folder defines it.

    Attributes:
        name: the ``--backend`` value and :attr:`ResolvedModel.backend`.
        device_kinds: the ``--device`` kinds it runs on (``cpu``; ``cuda``, ``tensorrt`` take ``:N``).
        probe: CUDA GPUs seen here -> the devices it can use here, best first (empty: it cannot run here);
            fast, imports no heavy module.
        choose: (model file, ``--device``, capabilities) -> why ``--backend auto`` runs the model on it, or None
            when it leaves the model to the next backend of :data:`vcorner.backends.registry.BACKENDS`.
        resolve: (request with a concrete model path and precision, capabilities, why) -> what will run; never
            converts anything (a file still to make is a :class:`Step` in ``pending``).
        steps: the cache steps it may leave pending, each with the function that makes it, in the order
            they run.
        open: a resolved model with nothing pending -> its (not yet entered) runner.
        detector: (detector graph, card's input side or (h, w), maps per input, SHA-256, threads) -> its (not yet
            entered) runner; None: it does not run the centre detector.
        auto_precisions: the ``--precision`` values with which ``--backend auto`` may give it a model (None: any);
            OpenVINO takes only ``auto``, so ``--precision fp32|int8`` keeps naming ONNX Runtime's graphs.
    """

    name: str
    device_kinds: tuple[str, ...]
    probe: Callable[[tuple[GpuInfo, ...]], tuple[str, ...]]
    choose: Callable[[Path, str | None, Capabilities], str | None]
    resolve: Callable[[ModelRequest, Capabilities, str], ResolvedModel]
    open: Callable[[ResolvedModel], Runner]
    steps: Mapping[Step, Callable[[ResolvedModel], ResolvedModel]] = field(default_factory=dict)
    detector: Callable[[Path, int | tuple[int, int], int, str, int | None], Runner] | None = None
    auto_precisions: tuple[str, ...] | None = None
