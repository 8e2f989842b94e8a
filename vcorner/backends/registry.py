"""What will run: a model file, a backend and a device resolved once per run into one
:class:`~vcorner.backends.base.ResolvedModel`, made ready by the cache step, and opened as a runner, by iterating
over the registered backends (:data:`BACKENDS`); nothing here names one.

``vcorner batch`` (local and Ray), ``tune``, ``evaluate``, ``benchmark`` and the scripts of ``benchmarks/`` open
their runner this way, so the graph that runs is decided in one place, from the model file, the request and
:class:`~vcorner.hardware.capabilities.Capabilities` alone, never from the folder a command was started in.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vcorner.backends import openvino, ort, trt
from vcorner.backends import torch as torch_backend
from vcorner.backends.base import BackendSpec, ModelRequest, ResolvedModel, Step
from vcorner.hardware.capabilities import Capabilities, probe_machine
from vcorner.io.records import InputError
from vcorner.models.detector_card import DetectorCard
from vcorner.models.modelfile import default_model_path, is_checkpoint, read_detector_card
from vcorner.models.precision import TextEnum, cpu_precision
from vcorner.models.profiles import get_profile
from vcorner.runtime.base import Runner

BACKENDS: tuple[BackendSpec, ...] = (torch_backend.SPEC, trt.SPEC, openvino.SPEC, ort.SPEC)
"""Every backend, in the order ``--backend auto`` asks them: the first whose ``choose`` takes the model runs it."""

Backend = TextEnum("Backend", [("auto", "auto")] + [(spec.name, spec.name) for spec in BACKENDS], module=__name__)
"""``--backend``: ``auto`` (the first of :data:`BACKENDS` that takes the model) or a registered backend's name."""

DEVICE_KINDS = tuple(dict.fromkeys(kind for spec in BACKENDS for kind in spec.device_kinds))
"""Every ``--device`` kind some backend runs on (``cpu``; the others take ``:N``)."""


def spec_of(name: str) -> BackendSpec:
    """The registered backend called ``name``.

    Raises:
        InputError: no backend has that name.
    """
    found = next((spec for spec in BACKENDS if spec.name == name), None)
    if found is None:
        raise InputError(f"no backend {name!r}; the backends are {', '.join(s.name for s in BACKENDS)}")
    return found


def probe() -> Capabilities:
    """This machine's capabilities: its CPU, cores and GPUs, and what each backend can use here (a fraction of a
    second: imports onnxruntime, asks cuda-python if installed)."""
    machine = probe_machine()
    return replace(machine, runtimes={spec.name: spec.probe(machine.gpus) for spec in BACKENDS})


def check_device(device: str | None) -> None:
    """InputError unless ``device`` is None, a CUDA ordinal ``N``, ``cpu`` or another kind of
    :data:`DEVICE_KINDS` with an optional ``:N`` (``cuda[:N]``, ``tensorrt[:N]``).

    Called before any work, so a mistyped device never converts or writes anything.
    """
    if device is None or device.isdigit():
        return
    kind, colon, index = device.partition(":")
    if kind not in DEVICE_KINDS or (colon and (kind == "cpu" or not index.isdigit())):
        kinds = ", ".join(k if k == "cpu" else f"{k}[:N]" for k in DEVICE_KINDS)
        raise InputError(f"--device must be {kinds} or N, got {device!r}")


def choose_backend(model: Path, backend: str, device: str | None, caps: Capabilities,
                   precision: str = "auto") -> tuple[BackendSpec, str]:
    """(the backend that runs ``model``, why) for ``backend``, which may be ``auto``; under ``auto`` a backend
    whose ``auto_precisions`` leave out ``precision`` is not asked."""
    if backend != Backend.auto:
        return spec_of(backend), f"--backend {backend}"
    for spec in BACKENDS:
        if spec.auto_precisions is not None and precision not in spec.auto_precisions:
            continue
        why = spec.choose(model, device, caps)
        if why is not None:
            return spec, why
    raise InputError(f"{model}: no backend here runs it")


def resolve_model(model: Path | None = None, backend: str = Backend.auto, device: str | None = None,
                  threads: int | None = None, profile: str | None = None,
                  caps: Capabilities | None = None, precision: str = "auto") -> ResolvedModel:
    """Resolve ``model`` (default: the shipped model) for ``backend`` and ``device`` on a machine with ``caps``
    (default: :func:`probe`); nothing is converted (a file still to make is named in ``pending``).

    ``profile`` names the export profile of GPU runs (default ``gpu``: FP16): the TensorRT engine's batch range
    and precision, the graph ONNX Runtime's GPU providers run, and, given with the torch backend on a CUDA
    device, torch's FP16 and CUDA graphs (without it torch stays the FP32 reference). ``precision`` is the CPU
    backends' (:class:`vcorner.models.precision.CpuPrecision`: ONNX Runtime's graph, OpenVINO's precision).

    Raises:
        InputError: bad device or precision, unknown model file or profile, failed checksum, or a backend that
            cannot run this model here. MachineError: a backend whose package is missing here.
    """
    check_device(device)
    request = ModelRequest(model, Backend(backend), device, threads, profile, cpu_precision(precision))
    if profile is not None:
        get_profile(profile)
    model = Path(model) if model is not None else default_model_path()
    caps = caps or probe()
    spec, why = choose_backend(model, request.backend, device, caps, request.precision)
    resolved = spec.resolve(replace(request, model=model), caps, why)
    return replace(resolved, backend=Backend(spec.name))


def materialize(resolved: ResolvedModel, steps: tuple[str, ...] = tuple(Step)) -> ResolvedModel:
    """``resolved`` with what its backend still has to make made, in the backend's order (a no-op when nothing
    is pending); ``steps`` limits which (a Ray driver without the workers' GPU makes the FP16 graph, each actor
    its engine).

    Raises:
        InputError: a step fails on the user's files (TensorRT cannot build the engine).
    """
    for step, make in spec_of(resolved.backend).steps.items():
        if step in resolved.pending and step in steps:
            resolved = make(resolved)
    return resolved


def open_runner(resolved: ResolvedModel) -> Runner:
    """The (not yet entered) runner of ``resolved``.

    Raises:
        InputError: ``resolved`` still has graphs or engines to make (run the cache step, :func:`materialize`, or
            ``vcorner export``).
    """
    if resolved.pending:
        raise InputError(f"{resolved.named}: {' and '.join(resolved.pending)} not made yet for {resolved.describe()}; "
                         "run vcorner export MODEL --fp16 --engine, or vcorner batch, whose cache step makes them")
    return spec_of(resolved.backend).open(resolved)


def open_detector(model: Path, device: str = "cpu", threads: int | None = 1,
                  backend: str = "ort") -> tuple[Runner, DetectorCard]:
    """The (not yet entered) runner of a centre detector on ``backend``'s CPU (``ort`` or ``ov``), and its verified
    card.

    ``threads`` defaults to 1: the detector runs inside the batch's loader thread, beside the corner model's
    inference, which has the cores.

    Raises:
        InputError: missing file, checksum mismatch, not a detector, not an ONNX file, a device other than the
            CPU, or a backend that does not run detectors. MachineError: the backend is not installed here.
    """
    card, digest = read_detector_card(model)
    if is_checkpoint(model):
        raise InputError(f"{model}: export the detector to ONNX first (vcorner export {model} --out detector.onnx)")
    if device != "cpu":
        raise InputError(f"the centre detector runs on the CPU, not {device}")
    spec = spec_of(backend)
    if spec.detector is None:
        raise InputError(f"--backend {backend} does not run the centre detector; "
                         f"{', '.join(s.name for s in BACKENDS if s.detector)} do")
    size = card.input_side if card.input_shape[0] == card.input_shape[1] else card.input_shape
    return spec.detector(Path(model), size, len(card.names), digest, threads), card
