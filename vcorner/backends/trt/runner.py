"""Native TensorRT backend: a cached strongly typed engine, cuda-python buffers, CUDA graphs per batch size.

Buffers follow TensorRT's ``samples/python/common_runtime.py``: page-locked host memory
(``cudaMallocHost``) and device memory (``cudaMalloc``) sized for the profile's largest batch, async copies
and ``execute_async_v3`` on one non-blocking stream. A batch size seen twice is captured once into a CUDA
graph (copy in, execute, copy out) and replayed from then on; batches above the profile's ``batch_max``
are split into chunks of that size. All graphs share one execution context, whose input shape is set to the
graph's batch before each launch (the pattern of NVIDIA's TensorRT-Edge-LLM ``EngineExecutor``: one context,
graphs keyed by binding state); one context per graph would multiply activation memory by the graph count.
The runner only loads a plan that was built on this machine for this TensorRT (its sidecar says so:
:func:`vcorner.models.engines.plan_problem`); building is ``vcorner export --engine`` or the batch's cache step
(:func:`vcorner.export.tensorrt_build.ensure_engine`). Needs the ``gpu`` extra (``tensorrt``, ``cuda-python``)
and a GPU.
"""

from __future__ import annotations

import ctypes
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from vcorner.hardware.cuda import cuda_call, cudart, current_gpu
from vcorner.hardware.tensorrt import import_tensorrt, require_gpu_stack, trt_logger
from vcorner.io.records import InputError, MachineError
from vcorner.models.engines import plan_problem, read_engine_sidecar
from vcorner.models.modelfile import INPUT_NAME, OUTPUT_NAME
from vcorner.runtime.base import Runner

log = logging.getLogger(__name__)

MAX_GRAPHS = 8
"""CUDA graphs kept per runner (one per batch size; the batch pipeline uses one size plus a remainder)."""


def pinned_array(count: int) -> tuple[int, np.ndarray]:
    """(pointer, float32 view) of ``count`` floats of page-locked host memory (free with ``cudaFreeHost``)."""
    pointer = cuda_call(cudart().cudaMallocHost(count * 4))
    view = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), (count,))
    return pointer, view


class TensorRTRunner(Runner):
    """A cached TensorRT engine plan, run with cuda-python buffers and CUDA graphs.

    Args:
        plan: the ``m.<profile>.<sm>.plan`` file with its ``.json`` sidecar
            (:func:`vcorner.export.tensorrt_build.ensure_engine` makes both).
        device: CUDA device ordinal.
        cuda_graphs: capture a CUDA graph per repeated batch size.

    Shapes:
        ``infer``: (B, 1, N, N) float32 patches -> (B, 1, N, N) float32 maps, any B >= 1.
    """

    name = "trt"
    on_gpu = True

    def __init__(self, plan: Path, device: int = 0, cuda_graphs: bool = True) -> None:
        self.plan, self.device, self.cuda_graphs = Path(plan), device, cuda_graphs
        self.engine = self.runtime = None
        self.context = self.stream = None
        self.host: dict[str, tuple[int, np.ndarray]] = {}
        self.dev: dict[str, int] = {}
        self.graphs: dict[int, object] = {}
        self.seen: Counter[int] = Counter()
        self.shape_batch = 0
        self.key: dict = {}

    def activate(self) -> None:
        require_gpu_stack()
        trt = import_tensorrt()
        gpu = current_gpu(self.device)
        problem = plan_problem(self.plan, trt.__version__, gpu)
        if problem is not None:
            raise MachineError(f"{self.plan}: {problem}; build it with vcorner export MODEL --engine (or run vcorner "
                             "batch --backend trt, whose cache step builds it)")
        cuda_call(cudart().cudaSetDevice(self.device))
        self.key = (read_engine_sidecar(Path(f"{self.plan}.json")) or {}).get("key") or {}
        self.runtime = trt.Runtime(trt_logger())
        try:
            self.engine = self.runtime.deserialize_cuda_engine(self.plan.read_bytes())
        except Exception as err:  # some TensorRT versions raise instead of returning None
            log.warning("%s: %s", self.plan.name, str(err).splitlines()[0][:200])
        if self.engine is None:
            raise MachineError(f"{self.plan}: TensorRT cannot load this plan; rebuild it with vcorner export MODEL "
                             "--engine")
        engine = self.engine
        check_engine_io(engine, self.plan)
        low, _, high = (tuple(s) for s in engine.get_tensor_profile_shape(INPUT_NAME, 0))
        self.patch, self.min_batch, self.max_chunk = int(high[-1]), int(low[0]), int(high[0])
        self.context = engine.create_execution_context()
        runtime = cudart()
        self.stream = cuda_call(runtime.cudaStreamCreateWithFlags(runtime.cudaStreamNonBlocking))
        count = self.max_chunk * self.patch * self.patch
        for name in (INPUT_NAME, OUTPUT_NAME):
            self.host[name] = pinned_array(count)
            self.dev[name] = cuda_call(runtime.cudaMalloc(count * 4))
            self.context.set_tensor_address(name, int(self.dev[name]))
        self.name = f"trt-{(self.key.get('profile') or {}).get('precision', 'fp32')}"
        log.info("TensorRT engine %s on %s (sm %s), batches %d..%d", self.plan.name, gpu.name,
                 gpu.compute_capability, self.min_batch, self.max_chunk)

    def identity(self) -> str | None:
        """SHA-256 of the ONNX graph the engine was built from (recorded in the plan's sidecar)."""
        return self.key.get("onnx_sha256")

    def deactivate(self) -> None:
        if self.engine is None:
            return
        runtime = cudart()
        if self.stream is not None:
            cuda_call(runtime.cudaStreamSynchronize(self.stream))
        for graph in self.graphs.values():
            cuda_call(runtime.cudaGraphExecDestroy(graph))
        for pointer in self.dev.values():
            cuda_call(runtime.cudaFree(pointer))
        for pointer, _ in self.host.values():
            cuda_call(runtime.cudaFreeHost(pointer))
        if self.stream is not None:
            cuda_call(runtime.cudaStreamDestroy(self.stream))
        self.graphs, self.dev, self.host, self.seen = {}, {}, {}, Counter()
        self.context = self.stream = None  # the context goes before the engine and the runtime
        self.engine = self.runtime = None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1:] != (1, self.patch, self.patch):
            raise InputError(f"TensorRT engine expects (B, 1, {self.patch}, {self.patch}) patches, got {batch.shape}")
        out = np.empty_like(batch)
        for start in range(0, len(batch), self.max_chunk):
            chunk = batch[start:start + self.max_chunk]
            out[start:start + len(chunk)] = self.run_chunk(chunk)
        return out

    def run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        """Maps of at most ``max_chunk`` patches (padded with zeros up to the profile's ``batch_min``)."""
        b, size = len(chunk), self.patch * self.patch
        run = max(b, self.min_batch)
        host_in, host_out = self.host[INPUT_NAME][1], self.host[OUTPUT_NAME][1]
        host_in[:b * size] = chunk.reshape(-1)
        host_in[b * size:run * size] = 0.0
        graph = self.graph_for(run)
        if graph is not None:
            cuda_call(cudart().cudaGraphLaunch(graph, self.stream))
        else:
            self.set_batch(run)
            self.enqueue(run)
        cuda_call(cudart().cudaStreamSynchronize(self.stream))
        return host_out[:b * size].reshape(b, 1, self.patch, self.patch).copy()

    def set_batch(self, batch: int) -> None:
        """Set the context's input shape to ``batch`` patches (only when it changes)."""
        if batch != self.shape_batch:
            if not self.context.set_input_shape(INPUT_NAME, (batch, 1, self.patch, self.patch)):
                raise InputError(f"TensorRT rejected batch {batch} (profile {self.min_batch}..{self.max_chunk})")
            self.shape_batch = batch

    def enqueue(self, batch: int) -> None:
        """Queue copy-in, execution and copy-out of ``batch`` patches on the stream."""
        runtime, nbytes = cudart(), batch * self.patch * self.patch * 4
        kind = runtime.cudaMemcpyKind
        cuda_call(runtime.cudaMemcpyAsync(self.dev[INPUT_NAME], self.host[INPUT_NAME][0], nbytes,
                                          kind.cudaMemcpyHostToDevice, self.stream))
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        cuda_call(runtime.cudaMemcpyAsync(self.host[OUTPUT_NAME][0], self.dev[OUTPUT_NAME], nbytes,
                                          kind.cudaMemcpyDeviceToHost, self.stream))

    def graph_for(self, batch: int):
        """The CUDA graph for ``batch`` (captured the second time the size is seen), or None."""
        if not self.cuda_graphs:
            return None
        if batch in self.graphs:
            self.set_batch(batch)
            return self.graphs[batch]
        self.seen[batch] += 1
        if self.seen[batch] < 2 or len(self.graphs) >= MAX_GRAPHS:
            return None
        try:
            self.graphs[batch] = self.capture(batch)
        except RuntimeError as err:
            log.warning("CUDA graph capture failed (%s); running without graphs", err)
            self.cuda_graphs = False
            return None
        return self.graphs[batch]

    def capture(self, batch: int):
        """Capture copy-in, execute, copy-out of ``batch`` patches into an instantiated CUDA graph."""
        runtime = cudart()
        self.set_batch(batch)
        self.enqueue(batch)  # TensorRT needs one enqueue after a shape change before capturing
        cuda_call(runtime.cudaStreamSynchronize(self.stream))
        cuda_call(runtime.cudaStreamBeginCapture(self.stream,
                                                 runtime.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
        try:
            self.enqueue(batch)
        except BaseException:  # end the capture and drop its partial graph, then report
            cuda_call(runtime.cudaGraphDestroy(cuda_call(runtime.cudaStreamEndCapture(self.stream))))
            raise
        graph = cuda_call(runtime.cudaStreamEndCapture(self.stream))
        try:
            return cuda_call(runtime.cudaGraphInstantiateWithFlags(graph, 0))
        finally:
            cuda_call(runtime.cudaGraphDestroy(graph))


def check_engine_io(engine, source: Path) -> None:
    """Raise InputError unless the engine maps float32 ``patches`` (B, 1, N, N) to float32 ``maps``."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    if sorted(names) != sorted([INPUT_NAME, OUTPUT_NAME]):
        raise InputError(f"{source}: engine tensors {names}, expected '{INPUT_NAME}' and '{OUTPUT_NAME}'")
    trt = import_tensorrt()
    for name in names:
        if engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
            raise InputError(f"{source}: engine tensor '{name}' is {engine.get_tensor_dtype(name)}, expected FP32 I/O")
