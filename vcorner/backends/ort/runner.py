"""ONNX Runtime backend: the CPU execution provider tuned for throughput; CUDA/TensorRT EPs when present."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from vcorner.hardware.cpu import available_cores
from vcorner.io.records import InputError
from vcorner.models.card import sha256_file
from vcorner.models.modelfile import INPUT_NAME, OUTPUT_NAME
from vcorner.models.profiles import DEFAULT_PROFILE, get_profile
from vcorner.runtime.base import Runner

log = logging.getLogger(__name__)

PROVIDER_OF = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def session_options(threads: int | None = None, spin: bool = False):
    """Session options: all graph optimizations, ``threads`` intra-op threads (default: every core this process
    may use), sequential execution.

    Without ``spin`` the intra-op threads sleep between operators instead of spinning: beside the batch's decoding
    and corner-search threads, spinning threads held the cores those need (2 cores, 2 threads, end to end: INT8
    67 -> 95 images/s, FP32 51 -> 58; ``benchmarks/thread_split.py``). Inference alone runs up to 20% faster
    spinning (FP32).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or available_cores()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return options


def default_ort_cache() -> Path:
    """Engine and timing caches of ONNX Runtime's TensorRT EP: ``~/.cache/vcorner/ort-trt``."""
    return Path.home() / ".cache" / "vcorner" / "ort-trt"


def trt_profile_shapes(patch_size: int | tuple[int, int], batch: tuple[int, int, int]) -> dict[str, str]:
    """TensorRT EP options fixing the optimization profile over the batch axis (min, opt, max patches)."""
    rows, columns = patch_size if isinstance(patch_size, tuple) else (patch_size, patch_size)
    return {f"trt_profile_{which}_shapes": f"{INPUT_NAME}:{b}x1x{rows}x{columns}"
            for which, b in zip(("min", "opt", "max"), batch, strict=True)}


def providers_for(device: str, cache_dir: Path | None = None, *, patch_size: int | None = None,
                  batch: tuple[int, int, int] | None = None, fp16: bool = False, device_id: int = 0) -> list:
    """Execution providers for ``device`` in {"cpu", "cuda", "tensorrt"}, best first, CPU last.

    TensorRT EP: engine and timing caches under ``cache_dir``; with ``patch_size`` and ``batch`` an explicit
    optimization profile over the batch axis (without one the EP builds for the first batch shape it sees
    and rebuilds the engine whenever a larger batch arrives). ``fp16`` (``trt_fp16_enable``) stays off by
    default: on an FP32 graph it lets TensorRT 10 run the normalization's reductions in FP16 too, and
    TensorRT 11 has no such flag; run the mixed-precision ``m.fp16.onnx`` instead, whose types TensorRT
    keeps. Option names as in ORT's ``tensorrt_execution_provider_info.cc`` and CUDA EP docs.
    """
    if device == "cpu":
        return ["CPUExecutionProvider"]
    cache = str(cache_dir or default_ort_cache())
    trt_options = {"device_id": device_id, "trt_fp16_enable": fp16, "trt_engine_cache_enable": True,
                   "trt_engine_cache_path": cache, "trt_timing_cache_enable": True, "trt_timing_cache_path": cache}
    if patch_size is not None and batch is not None:
        trt_options.update(trt_profile_shapes(patch_size, batch))
    trt = ("TensorrtExecutionProvider", trt_options)
    cuda = ("CUDAExecutionProvider", {"device_id": device_id, "cudnn_conv_algo_search": "EXHAUSTIVE"})
    chosen = [trt, cuda] if device == "tensorrt" else [cuda]
    return [*chosen, "CPUExecutionProvider"]


def split_device(device: str) -> tuple[str, int]:
    """(provider device, CUDA ordinal) of ``cpu``, ``cuda``, ``cuda:1``, ``tensorrt`` or ``tensorrt:1``.

    Raises:
        InputError: anything else.
    """
    kind, colon, index = device.partition(":")
    if kind not in PROVIDER_OF or (colon and (kind == "cpu" or not index.isdigit())):
        raise InputError(f"ONNX Runtime device must be cpu, cuda[:N] or tensorrt[:N], got {device!r}")
    return kind, int(index or 0)


class OnnxRuntimeRunner(Runner):
    """ONNX Runtime session over an ONNX model file.

    Args:
        model: path of the ``.onnx`` file.
        device: ``cpu``, ``cuda[:N]`` or ``tensorrt[:N]`` (execution provider and GPU).
        threads: intra-op threads (default: all cores).
        spin: let idle intra-op threads spin (faster inference alone; slower beside other work, see
            :func:`session_options`).
        profile: export profile whose batch range the TensorRT EP's engine covers (default ``gpu``).
        cpu_model: the graph to run instead if ONNX Runtime ends up on the CPU provider (the FP32 model
            beside an FP16 variant, which the CPU provider runs very slowly).
        patch_size: the card's patch side N, checked against the graph's input on load (None: unchecked).
        sha256: the model file's SHA-256 when already known (else hashed for :meth:`identity`).
        out_channels: maps per input the graph must return: 1 for the corner model, one per vertebra name for
            the centre detector.
    """

    name = "ort"

    def __init__(self, model: Path, device: str = "cpu", threads: int | None = None,
                 profile: str | None = None, cpu_model: Path | None = None,
                 patch_size: int | tuple[int, int] | None = None,
                 sha256: str | None = None, out_channels: int = 1, spin: bool = False) -> None:
        self.device, self.device_id = split_device(device)
        self.spin = spin
        self.out_channels = out_channels
        self.known_sha256 = sha256
        self.patch_size = patch_size
        self.model, self.threads, self.profile = Path(model), threads, profile
        self.cpu_model = Path(cpu_model) if cpu_model is not None else None
        self.session = None

    def providers(self) -> list:
        """The execution providers for this model and device."""
        if self.device != "tensorrt":
            return providers_for(self.device, device_id=self.device_id)

        if self.patch_size is None:
            raise InputError("ONNX Runtime's TensorRT provider needs the card's patch size (patch_size=...)")
        default_ort_cache().mkdir(parents=True, exist_ok=True)
        return providers_for(self.device, patch_size=self.patch_size,
                             batch=get_profile(self.profile or DEFAULT_PROFILE).batch, device_id=self.device_id)

    def activate(self) -> None:
        import onnxruntime as ort

        self.run_options = ort.RunOptions()
        self.session = self.open_session(self.providers())
        check_io(self.session, self.model, self.patch_size, self.out_channels)
        running = {provider: device for device, provider in PROVIDER_OF.items()}.get(self.session.get_providers()[0])
        if running != self.device:  # ORT falls back silently when a provider's libraries fail to load
            log.warning("ONNX Runtime could not start the %s provider and runs on %s instead", self.device, running)
        if running == "cpu" != self.device and self.cpu_model is not None and self.cpu_model != self.model:
            log.warning("running %s instead of %s on the CPU provider", self.cpu_model.name, self.model.name)
            self.model, self.known_sha256 = self.cpu_model, None
            self.session = self.open_session(providers_for("cpu"))
            check_io(self.session, self.model, self.patch_size, self.out_channels)
        self.name = f"ort-{running}" + ("-int8" if self.model.name.endswith(".int8.onnx") else "")
        self.on_gpu = running != "cpu"

    def open_session(self, providers: list):
        """An ONNX Runtime session of ``self.model`` on ``providers``.

        Raises:
            InputError: ONNX Runtime cannot load the model.
        """
        import onnxruntime as ort

        try:
            return ort.InferenceSession(str(self.model), session_options(self.threads, self.spin),
                                        providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types
            raise InputError(f"{self.model}: ONNX Runtime cannot load it ({str(err).splitlines()[0][:200]})") from None

    def identity(self) -> str:
        if self.known_sha256 is None:
            self.known_sha256 = sha256_file(self.model)
        return self.known_sha256

    def deactivate(self) -> None:
        self.session = None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)},
                                self.run_options)[0]

    def cancel(self) -> None:
        """Make the running ``session.run`` return early (ONNX Runtime's ``RunOptions.terminate``)."""
        self.run_options.terminate = True


def check_io(session, model: Path, patch_size: int | tuple[int, int] | None = None,
             out_channels: int = 1) -> None:
    """Raise InputError unless the graph maps ``patches`` (B, 1, N, N) to ``maps`` (B, out_channels, N, N), with
    N the card's ``patch_size`` when given; a ``patch_size`` of (h, w) (a centre detector's non-square view)
    expects (B, 1, h, w)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names = ([i.name for i in inputs], [o.name for o in outputs])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise InputError(f"{model}: expected input '{INPUT_NAME}' and output '{OUTPUT_NAME}', got {names}")
    shape = inputs[0].shape
    if isinstance(patch_size, tuple):
        if list(shape[1:]) != [1, *patch_size]:
            raise InputError(f"{model}: its card says {patch_size[0]}x{patch_size[1]} views but the graph takes "
                             f"{shape}: the card belongs to another model")
        patch_size = None
    elif len(shape) != 4 or shape[1] != 1 or not isinstance(shape[2], int) or shape[2] != shape[3]:
        raise InputError(f"{model}: input must be (batch, 1, N, N), got {shape}")
    out = outputs[0].shape
    expected = [out_channels, *shape[2:]]
    if len(out) != 4 or any(isinstance(o, int) and o != i for o, i in zip(out[1:], expected, strict=True)):
        raise InputError(f"{model}: output must be (batch, {out_channels}, {shape[2]}, {shape[3]}), got {out}")
    if patch_size is not None and shape[2] != patch_size:
        raise InputError(f"{model}: its card says {patch_size}x{patch_size} patches but the graph takes "
                         f"{shape[2]}x{shape[3]}: the card belongs to another model")
