"""OpenVINO backend (CPU): the same ONNX graphs as ONNX Runtime, in FP32, BF16 or on the INT8 (QDQ) graph.

``openvino`` is an optional extra (``pip install 'vcorner[openvino]'``) and is imported only here.
``benchmarks/openvino_check.py`` measures it against ONNX Runtime (``benchmarks/results/openvino_check.md``).
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from vcorner.backends.ort.runner import check_io
from vcorner.hardware.cpu import available_cores
from vcorner.io.records import InputError, MachineError
from vcorner.models.card import sha256_file
from vcorner.models.modelfile import INPUT_NAME, OUTPUT_NAME
from vcorner.runtime.base import Runner

INSTALL = "pip install 'vcorner[openvino]'"
PRECISIONS = ("fp32", "bf16", "int8")
HINTS = ("LATENCY", "THROUGHPUT")
DEFAULT_HINT = "THROUGHPUT"
"""``PERFORMANCE_HINT`` unless told: THROUGHPUT, the batch split across the plugin's streams (one thread each
here) through an ``AsyncInferQueue``. On the shared, loaded 2-core AMD EPYC of
``benchmarks/results/openvino_check.md`` (batches of 64 patches, rows timed in turns, two runs of 5 rounds) it
ran 1.25-1.41x and 1.11-1.95x as fast as LATENCY (one request holding both threads) for INT8 in every round,
FP32 1.15-1.48x and 0.92-1.26x, BF16 1.08-1.26x and 0.84-1.30x; on one thread the two are the same."""
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
"""OpenVINO's ``INFERENCE_PRECISION_HINT`` per vcorner precision. FP32 is asked for explicitly: on a CPU with
AVX-512 BF16 the CPU plugin's own default is bf16. INT8 runs the QDQ graph's quantized operators in int8 and
everything else in f32, as ONNX Runtime does."""


def import_openvino():
    """The ``openvino`` module.

    Raises:
        MachineError: it is not installed (one line naming the install command).
    """
    try:
        import openvino
    except ImportError:
        raise MachineError(f"OpenVINO is not installed: {INSTALL}") from None
    return openvino


def check_precision(precision: str, capabilities: list[str] | tuple[str, ...]) -> None:
    """Refuse a ``precision`` that is not one of :data:`PRECISIONS`, or bf16 on a CPU whose OpenVINO
    ``OPTIMIZATION_CAPABILITIES`` do not list BF16.

    Raises:
        InputError: unknown precision.
        MachineError: bf16 without BF16 on this CPU.
    """
    if precision not in PRECISIONS:
        raise InputError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and "BF16" not in capabilities:
        raise MachineError("this CPU has no BF16 (OpenVINO's CPU capabilities: "
                           f"{', '.join(capabilities) or 'none'}): run --precision fp32 or int8")


def is_quantized(model) -> bool:
    """Whether an OpenVINO model read from ONNX holds quantization (QDQ pairs become ``FakeQuantize``)."""
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())


def check_graph(model, path: Path, precision: str) -> None:
    """Refuse a precision the graph does not carry: int8 needs the QDQ graph (``m.int8.onnx``), fp32 and bf16 a
    float graph (on a QDQ graph they would still run its quantized operators in int8).

    Raises:
        InputError: the mismatch, in one line.
    """
    quantized = is_quantized(model)
    if precision == "int8" and not quantized:
        raise InputError(f"{path}: precision int8 needs the quantized graph (m.int8.onnx, vcorner export --int8); "
                         "this one has no quantization")
    if precision != "int8" and quantized:
        raise InputError(f"{path}: a quantized (QDQ) graph runs as int8, not {precision}: pass the float graph")


def io_view(model) -> SimpleNamespace:
    """An ONNX Runtime-like view of an OpenVINO model's inputs and outputs (name, shape with None for a dynamic
    dimension), so that :func:`check_io` checks both backends alike."""
    def port(p) -> SimpleNamespace:
        shape = [d.get_length() if d.is_static else None for d in p.get_partial_shape()]
        return SimpleNamespace(name=p.get_any_name(), shape=shape)
    inputs, outputs = [port(p) for p in model.inputs], [port(p) for p in model.outputs]
    return SimpleNamespace(get_inputs=lambda: inputs, get_outputs=lambda: outputs)


def split_batch(batch: np.ndarray, parts: int) -> list[np.ndarray]:
    """``batch`` (B, ...) cut into at most ``parts`` consecutive non-empty chunks of nearly equal size."""
    size = math.ceil(len(batch) / max(1, parts))
    return [batch[i:i + size] for i in range(0, len(batch), size)]


class OpenVinoRunner(Runner):
    """OpenVINO's CPU plugin over an ONNX graph (the corner model or the centre detector).

    Args:
        model: path of the ``.onnx`` file (the QDQ ``m.int8.onnx`` for ``int8``).
        precision: ``fp32``, ``bf16`` (``INFERENCE_PRECISION_HINT``; needs BF16 in the CPU's capabilities) or
            ``int8``.
        threads: ``INFERENCE_NUM_THREADS`` (default: every core this process may use).
        hint: ``PERFORMANCE_HINT``, LATENCY (one request) or THROUGHPUT (the batch split across the plugin's
            streams through an ``AsyncInferQueue``); default :data:`DEFAULT_HINT`, LATENCY with a fixed batch.
        batch: None keeps the batch axis dynamic; a number (LATENCY only) reshapes the graph to that batch,
            pads smaller batches to it and takes at most that many patches at once (``max_batch``).
        patch_size: the card's patch side N (or a detector's (h, w)), checked against the graph on load.
        sha256: the model file's SHA-256 when already known (else hashed for :meth:`identity`).
        out_channels: maps per input the graph must return (1 for the corner model, one per vertebra name for
            the centre detector).

    Raises:
        MachineError: OpenVINO is not installed, or bf16 on a CPU without BF16 (at construction).
        InputError: an unknown precision or hint (at construction); a graph OpenVINO cannot read, of the wrong
            inputs, or of another precision (at ``__enter__``).
    """

    def __init__(self, model: Path, precision: str = "fp32", threads: int | None = None,
                 hint: str | None = None, batch: int | None = None,
                 patch_size: int | tuple[int, int] | None = None, sha256: str | None = None,
                 out_channels: int = 1) -> None:
        self.ov = import_openvino()
        self.core = self.ov.Core()
        check_precision(precision, self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        hint = hint or ("LATENCY" if batch is not None else DEFAULT_HINT)
        if hint not in HINTS:
            raise InputError(f"OpenVINO PERFORMANCE_HINT must be one of {', '.join(HINTS)}, got {hint!r}")
        if batch is not None and (batch < 1 or hint == "THROUGHPUT"):
            raise InputError(f"OpenVINO batch {batch}: a fixed batch must be at least 1 and runs with the LATENCY "
                             "hint (THROUGHPUT splits each batch across its streams)")
        self.model, self.precision, self.hint = Path(model), precision, hint
        self.threads = threads or available_cores()
        self.fixed_batch, self.patch_size, self.out_channels = batch, patch_size, out_channels
        self.known_sha256 = sha256
        self.max_batch = batch or Runner.max_batch
        self.name = f"ov-cpu-{precision}"
        self.compiled = self.queue = self.request = None
        self.cancelled = False

    def config(self) -> dict[str, str]:
        """Properties given to ``compile_model`` (names as in OpenVINO's CPU device documentation)."""
        return {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[self.precision], "PERFORMANCE_HINT": self.hint,
                "INFERENCE_NUM_THREADS": str(self.threads)}

    def read(self):
        """The graph as an OpenVINO model, checked, with the batch axis reshaped when fixed.

        Raises:
            InputError: OpenVINO cannot read it, or it is not a graph of this precision and card.
        """
        try:
            model = self.core.read_model(str(self.model))
        except Exception as err:  # OpenVINO raises RuntimeError subclasses of its own
            first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
            raise InputError(f"{self.model}: OpenVINO cannot read it ({first[:200]})") from None
        check_io(io_view(model), self.model, self.patch_size, self.out_channels)
        check_graph(model, self.model, self.precision)
        if self.fixed_batch is not None:
            shape = model.input(INPUT_NAME).get_partial_shape()
            shape[0] = self.fixed_batch
            model.reshape({INPUT_NAME: shape})
        return model

    def activate(self) -> None:
        self.compiled = self.core.compile_model(self.read(), "CPU", self.config())
        self.cancelled = False
        if self.hint == "THROUGHPUT":
            self.queue = self.ov.AsyncInferQueue(self.compiled)
        else:
            self.request = self.compiled.create_infer_request()

    def deactivate(self) -> None:
        self.compiled = self.queue = self.request = None

    def identity(self) -> str:
        """The graph's SHA-256, with ``+bf16`` when it runs in BF16 (FP32 and INT8 are fixed by the file)."""
        if self.known_sha256 is None:
            self.known_sha256 = sha256_file(self.model)
        return self.known_sha256 + ("+bf16" if self.precision == "bf16" else "")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.fixed_batch is not None and len(batch) != self.fixed_batch:
            if len(batch) > self.fixed_batch:
                raise InputError(f"{len(batch)} patches in one batch; this OpenVINO runner takes {self.fixed_batch}")
            padded = np.zeros((self.fixed_batch, *batch.shape[1:]), np.float32)
            padded[:len(batch)] = batch
            return self.run(padded)[:len(batch)]
        return self.run(batch)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Maps of one (B, 1, N, N) batch of the shape the compiled graph takes."""
        if self.queue is None:
            return self.request.infer({INPUT_NAME: batch}, share_inputs=True)[OUTPUT_NAME].copy()
        chunks = split_batch(batch, len(self.queue))
        out: list[np.ndarray | None] = [None] * len(chunks)

        def done(request, index: int) -> None:
            out[index] = request.get_output_tensor(0).data.copy()

        self.queue.set_callback(done)
        for index, chunk in enumerate(chunks):
            self.queue.start_async({INPUT_NAME: chunk}, index)
        self.queue.wait_all()
        if self.cancelled or any(o is None for o in out):
            raise MachineError("OpenVINO inference was cancelled")
        return np.concatenate(out)

    def cancel(self) -> None:
        """Make the running inference return early (``InferRequest.cancel`` on every request)."""
        self.cancelled = True
        if self.request is not None:
            self.request.cancel()
        if self.queue is not None:
            for index in range(len(self.queue)):
                self.queue[index].cancel()
