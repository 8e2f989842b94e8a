"""TensorRT's module and one process-wide logger that forwards to :mod:`logging` (``vcorner.hardware.tensorrt``)."""

from __future__ import annotations

import functools
import importlib
import logging

from vcorner.hardware.cuda import INSTALL_HINT, has_cuda_python, has_module
from vcorner.io.records import MachineError

log = logging.getLogger(__name__)


def tensorrt_installed() -> bool:
    """Native TensorRT and cuda-python importable (whether a GPU is there is a separate question)."""
    return has_module("tensorrt") and has_cuda_python()


def require_gpu_stack() -> None:
    """Raise a one-line MachineError with the install hint unless ``tensorrt`` and ``cuda-python`` import."""
    missing = [name for name, present in (("tensorrt", has_module("tensorrt")), ("cuda-python", has_cuda_python()))
               if not present]
    if missing:
        raise MachineError(f"the TensorRT backend needs {' and '.join(missing)} and a CUDA GPU: {INSTALL_HINT}, "
                         "or use --backend ort")


def import_tensorrt():
    """The ``tensorrt`` module.

    Raises:
        MachineError: TensorRT is not installed (one line, with the install hint).
    """
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise MachineError(f"TensorRT is not installed here: {INSTALL_HINT} (on a machine with an NVIDIA GPU)"
                           ) from None


@functools.lru_cache(maxsize=1)
def trt_logger():
    """One TensorRT logger for the process (TensorRT wants a single one), forwarding to :mod:`logging`."""
    trt = import_tensorrt()
    severity = trt.ILogger.Severity
    levels = {severity.INTERNAL_ERROR: logging.CRITICAL, severity.ERROR: logging.ERROR,
              severity.WARNING: logging.WARNING, severity.INFO: logging.DEBUG, severity.VERBOSE: logging.DEBUG}

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, level, msg: str) -> None:
            log.log(levels.get(level, logging.DEBUG), "TensorRT: %s", msg)

    return Logger()
