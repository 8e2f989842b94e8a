"""A simulated GPU stack for CPU tests: stand-ins for ``tensorrt`` and cuda-python's ``cuda.bindings.runtime``.

"Device" memory is host memory; every copy is bounds-checked against live allocations; a stream records
work while it is being captured and CUDA graphs replay the recorded work; an "engine" runs its ONNX model
with ONNX Runtime on whatever the execution context's input address holds. This lets the TensorRT runner's
buffers, padding, chunking, graph capture and clean-up, the engine cache and the CLI run end to end
without a GPU. Classes, methods and arguments carry the real APIs' names: ``tests/test_tensorrt_simulated.py``
checks the CUDA half against the real cuda-python bindings (names and argument counts) and the TensorRT half
against the names bound by the real TensorRT 11 Python module. The real stack is tested by
``tests/test_tensorrt.py`` on a GPU machine.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorStreamCaptureUnsupported = 900


class MemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class CaptureMode(enum.IntEnum):
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1


@dataclass
class Stream:
    """A stream handle (``int(stream)`` is its address, as for ``cudaStream_t``)."""

    handle: int
    capture: list | None = None
    pending: list = field(default_factory=list)

    def __int__(self) -> int:
        return self.handle


@dataclass
class Props:
    name: bytes
    major: int
    minor: int


@dataclass
class FakeCuda:
    """State of the simulated device, exposed as a ``cuda.bindings.runtime`` module by :meth:`module`."""

    gpu: Props = field(default_factory=lambda: Props(b"Simulated GPU", 9, 0))
    memory: dict[int, ctypes.Array] = field(default_factory=dict)
    pinned: set[int] = field(default_factory=set)
    streams: dict[int, Stream] = field(default_factory=dict)
    graphs: dict[int, list] = field(default_factory=dict)
    executables: dict[int, list] = field(default_factory=dict)
    launches: int = 0
    capture_fails: bool = False
    """Make ``cudaStreamBeginCapture`` fail, as on a stream or driver that cannot capture."""

    def alloc(self, nbytes: int, pinned: bool) -> tuple:
        buffer = (ctypes.c_char * int(nbytes))()
        address = ctypes.addressof(buffer)
        self.memory[address] = buffer
        if pinned:
            self.pinned.add(address)
        return CudaError.cudaSuccess, address

    def free(self, address: int, pinned: bool) -> tuple:
        if address not in self.memory or (address in self.pinned) != pinned:
            return (CudaError.cudaErrorInvalidValue,)
        del self.memory[address]
        self.pinned.discard(address)
        return (CudaError.cudaSuccess,)

    def check(self, address: int, nbytes: int) -> None:
        """Fail unless [address, address + nbytes) lies inside one live allocation."""
        for start, buffer in self.memory.items():
            if start <= address and address + nbytes <= start + len(buffer):
                return
        raise AssertionError(f"out-of-bounds or freed memory: {nbytes} bytes at {address:#x}")

    def enqueue(self, stream: Stream | int, work) -> None:
        """Queue ``work`` on ``stream`` (it runs at the next synchronize, as the GPU would run it some time
        later), or record it while ``stream`` is being captured."""
        stream = self.streams[int(stream)]
        (stream.capture if stream.capture is not None else stream.pending).append(work)

    def synchronize(self, stream) -> tuple:
        """Run the stream's queued work in order."""
        stream = self.streams[int(stream)]
        if stream.capture is not None:
            return (CudaError.cudaErrorStreamCaptureUnsupported,)  # no synchronizing a capturing stream
        while stream.pending:
            stream.pending.pop(0)()
        return (CudaError.cudaSuccess,)

    def capturing(self, stream) -> bool:
        return self.streams[int(stream)].capture is not None

    def memcpy_async(self, dst: int, src: int, count: int, kind: MemcpyKind, stream) -> tuple:
        to_device = kind == MemcpyKind.cudaMemcpyHostToDevice
        if (dst in self.pinned) == to_device or (src in self.pinned) != to_device:
            return (CudaError.cudaErrorInvalidValue,)  # direction does not match the buffers

        def work() -> None:
            self.check(dst, count)
            self.check(src, count)
            ctypes.memmove(dst, src, count)

        self.enqueue(stream, work)
        return (CudaError.cudaSuccess,)

    def stream_create(self, flags: int) -> tuple:
        stream = Stream(0x1000 + len(self.streams))
        self.streams[stream.handle] = stream
        return CudaError.cudaSuccess, stream

    def begin_capture(self, stream, mode: CaptureMode) -> tuple:
        if self.capture_fails:
            return (CudaError.cudaErrorStreamCaptureUnsupported,)
        if self.streams[int(stream)].pending:
            return (CudaError.cudaErrorInvalidValue,)  # earlier work would leak into the graph
        self.streams[int(stream)].capture = []
        return (CudaError.cudaSuccess,)

    def end_capture(self, stream) -> tuple:
        stream = self.streams[int(stream)]
        handle = 0x2000 + len(self.graphs) + len(self.executables)
        self.graphs[handle], stream.capture = stream.capture, None
        return CudaError.cudaSuccess, handle

    def instantiate(self, graph: int, flags: int) -> tuple:
        handle = 0x3000 + graph
        self.executables[handle] = list(self.graphs[graph])
        return CudaError.cudaSuccess, handle

    def launch(self, executable: int, stream) -> tuple:
        self.launches += 1
        for work in self.executables[executable]:
            self.enqueue(stream, work)
        return (CudaError.cudaSuccess,)

    def module(self) -> types.ModuleType:
        """This device as a ``cuda.bindings.runtime`` stand-in (only the calls vcorner makes)."""
        ok = (CudaError.cudaSuccess,)
        functions = {
            "cudaGetDeviceCount": lambda: (CudaError.cudaSuccess, 1),
            "cudaGetDeviceProperties": lambda device: (CudaError.cudaSuccess, self.gpu),
            "cudaSetDevice": lambda device: ok,
            "cudaGetErrorName": lambda error: (CudaError.cudaSuccess, CudaError(error).name.encode()),
            "cudaMallocHost": lambda size: self.alloc(size, pinned=True),
            "cudaMalloc": lambda size: self.alloc(size, pinned=False),
            "cudaFreeHost": lambda ptr: self.free(ptr, pinned=True),
            "cudaFree": lambda devPtr: self.free(devPtr, pinned=False),
            "cudaStreamCreateWithFlags": self.stream_create,
            "cudaStreamSynchronize": self.synchronize,
            "cudaStreamDestroy": lambda stream: ok if self.streams.pop(int(stream), None) else
            (CudaError.cudaErrorInvalidValue,),
            "cudaMemcpyAsync": self.memcpy_async,
            "cudaStreamBeginCapture": self.begin_capture,
            "cudaStreamEndCapture": self.end_capture,
            "cudaGraphInstantiateWithFlags": self.instantiate,
            "cudaGraphLaunch": self.launch,
            "cudaGraphDestroy": lambda graph: ok if self.graphs.pop(graph, None) is not None else
            (CudaError.cudaErrorInvalidValue,),
            "cudaGraphExecDestroy": lambda graphExec: ok if self.executables.pop(graphExec, None) is not None else
            (CudaError.cudaErrorInvalidValue,),
        }
        module = types.ModuleType("cuda.bindings.runtime")
        module.__dict__.update(functions, cudaError_t=CudaError, cudaMemcpyKind=MemcpyKind,
                               cudaStreamCaptureMode=CaptureMode, cudaStreamNonBlocking=1)
        return module

    @property
    def live(self) -> int:
        """Allocations, streams, graphs and graph executables not yet released."""
        return len(self.memory) + len(self.streams) + len(self.graphs) + len(self.executables)


# ---------------------------------------------------------------- tensorrt


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 5


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


@dataclass
class ITensor:
    name: str
    shape: tuple


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags, self.inputs, self.onnx = flags, [], None

    def get_input(self, index: int) -> ITensor:
        return self.inputs[index]


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        self.network, self.errors = network, []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> str:
        return self.errors[index]

    def parse_from_file(self, path: str) -> bool:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as err:
            self.errors.append(f"ModelImporter: {err}")
            return False
        tensor = session.get_inputs()[0]
        self.network.inputs.append(ITensor(tensor.name, tuple(d if isinstance(d, int) else -1 for d in tensor.shape)))
        self.network.onnx = path
        return True


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, list] = {}

    def set_shape(self, name: str, min, opt, max) -> None:  # noqa: A002 (TensorRT's argument names)
        self.shapes[name] = [list(min), list(opt), list(max)]


class ITimingCache:
    def __init__(self, data: bytes) -> None:
        if data and not data.startswith(b"fake-timing:"):
            raise RuntimeError("timing cache is corrupt")
        self.builds = int(data.split(b":")[1]) if data else 0

    def serialize(self) -> bytes:
        return b"fake-timing:%d" % self.builds


class IBuilderConfig:
    def __init__(self) -> None:
        self.pools: dict[MemoryPoolType, int] = {}
        self.profiles: list[IOptimizationProfile] = []
        self.timing_cache: ITimingCache | None = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        self.pools[pool] = pool_size

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        return ITimingCache(bytes(serialized_timing_cache))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self.timing_cache = cache
        return True


class ICudaEngine:
    """A deserialized plan: runs its ONNX file with ONNX Runtime on the CPU."""

    def __init__(self, plan: dict, cuda: FakeCuda) -> None:
        import onnxruntime as ort

        self.plan, self.cuda = plan, cuda
        self.session = ort.InferenceSession(plan["onnx"], providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name

    @property
    def num_io_tensors(self) -> int:
        return 2

    def get_tensor_name(self, index: int) -> str:
        return (self.input, self.output)[index]

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType.FLOAT

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list:
        return [tuple(s) for s in self.plan["shapes"][name]]

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext(self)


class IExecutionContext:
    """Enforces TensorRT's rule for CUDA graphs: after a shape change, one enqueue outside a capture first."""

    def __init__(self, engine: ICudaEngine) -> None:
        self.engine, self.addresses, self.shape = engine, {}, None
        self.executed: list[int] = []
        self.shape_settled = False
        self.refuse_capture = False
        """Fail every enqueue made while a stream is captured (a TensorRT error inside a capture)."""

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self.addresses[name] = int(memory)
        return True

    def set_input_shape(self, name: str, shape) -> bool:
        low, _, high = self.engine.plan["shapes"][name]
        if len(shape) != len(low) or not all(a <= s <= b for a, s, b in zip(low, shape, high, strict=True)):
            return False
        self.shape_settled = self.shape_settled and tuple(shape) == self.shape
        self.shape = tuple(shape)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        if not isinstance(stream_handle, int) or self.shape is None:
            return False
        if self.engine.cuda.capturing(stream_handle) and (self.refuse_capture or not self.shape_settled):
            return False  # TensorRT: capturing right after a shape change fails
        self.shape_settled = True
        shape, source = self.shape, self.addresses[self.engine.input]
        target, cuda = self.addresses[self.engine.output], self.engine.cuda
        nbytes = int(np.prod(shape)) * 4

        def work() -> None:
            cuda.check(source, nbytes)
            cuda.check(target, nbytes)
            assert source not in cuda.pinned and target not in cuda.pinned, "engine given host memory"
            patches = np.frombuffer((ctypes.c_char * nbytes).from_address(source), np.float32).reshape(shape)
            maps = self.engine.session.run(None, {self.engine.input: patches.copy()})[0]
            ctypes.memmove(target, np.ascontiguousarray(maps, np.float32).ctypes.data, nbytes)
            self.executed.append(shape[0])

        cuda.enqueue(stream_handle, work)
        return True


@dataclass
class FakeTensorRT:
    """State of the simulated TensorRT install, exposed as a ``tensorrt`` module by :meth:`module`."""

    cuda: FakeCuda
    version: str = "10.14.1"
    builds: list[dict] = field(default_factory=list)
    contexts: list[IExecutionContext] = field(default_factory=list)

    def build(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
        """A plan (JSON) recording what the builder was given; None for an unusable configuration."""
        if not network.flags & (1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED) or len(config.profiles) != 1:
            return None
        shapes = config.profiles[0].shapes
        if set(shapes) != {network.get_input(0).name}:
            return None
        shapes[ICudaEngine({"onnx": network.onnx}, self.cuda).output] = next(iter(shapes.values()))
        if config.timing_cache is not None:
            config.timing_cache.builds += 1
        record = {"onnx": network.onnx, "shapes": shapes, "tensorrt": self.version,
                  "gpu": self.cuda.gpu.name.decode(), "workspace": config.pools.get(MemoryPoolType.WORKSPACE)}
        self.builds.append(record)
        return json.dumps(record).encode()

    def deserialize(self, data: bytes):
        """An engine, or None for a plan from another TensorRT version or GPU, or not a plan at all."""
        try:
            plan = json.loads(bytes(data))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        if plan.get("tensorrt") != self.version or plan.get("gpu") != self.cuda.gpu.name.decode():
            return None
        engine = ICudaEngine(plan, self.cuda)
        create = engine.create_execution_context
        engine.create_execution_context = lambda: self.contexts.append(create()) or self.contexts[-1]
        return engine

    def module(self) -> types.ModuleType:
        fake = self

        class Builder:
            def __init__(self, logger: ILogger) -> None:
                self.logger = logger

            def create_network(self, flags: int = 0) -> INetworkDefinition:
                return INetworkDefinition(flags)

            def create_builder_config(self) -> IBuilderConfig:
                return IBuilderConfig()

            def create_optimization_profile(self) -> IOptimizationProfile:
                return IOptimizationProfile()

            def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
                self.logger.log(Severity.INFO, "simulated build")
                return fake.build(network, config)

        class Runtime:
            def __init__(self, logger: ILogger) -> None:
                self.logger = logger

            def deserialize_cuda_engine(self, serialized_engine: bytes):
                return fake.deserialize(serialized_engine)

        module = types.ModuleType("tensorrt")
        module.__dict__.update(__version__=self.version, Builder=Builder, Runtime=Runtime, OnnxParser=OnnxParser,
                               ILogger=ILogger, DataType=DataType, MemoryPoolType=MemoryPoolType,
                               NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag)
        return module


def install(monkeypatch) -> tuple[FakeCuda, FakeTensorRT]:
    """Make ``import tensorrt`` and ``from cuda.bindings import runtime`` return the simulated stack."""
    from vcorner.hardware import tensorrt as hardware_tensorrt

    cuda = FakeCuda()
    trt = FakeTensorRT(cuda)
    runtime = cuda.module()
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = runtime
    package = types.ModuleType("cuda")
    package.bindings = bindings
    modules = {"tensorrt": trt.module(), "cuda": package, "cuda.bindings": bindings, "cuda.bindings.runtime": runtime}
    for name, module in modules.items():
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, module)
    hardware_tensorrt.trt_logger.cache_clear()  # its logger subclasses the ILogger of the module imported first
    return cuda, trt


def set_version(trt: FakeTensorRT, version: str) -> None:
    """Simulate a TensorRT upgrade."""
    trt.version = version
    sys.modules["tensorrt"].__version__ = version


def plan_record(path: Path) -> dict:
    """The build record inside a simulated plan file."""
    return json.loads(Path(path).read_bytes())
