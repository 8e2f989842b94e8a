"""The runner interface every backend implements (after Polygraphy's ``BaseRunner``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType

import numpy as np


class Runner(ABC):
    """Runs the patch network on batches; use as a context manager.

    ``infer`` takes (B, 1, N, N) float32 standardized patches and returns (B, 1, N, N) float32 maps that
    each sum to 1. Batches of any size up to ``max_batch`` are accepted.
    """

    name: str = "runner"
    max_batch: int = 1 << 16
    on_gpu: bool = False
    """Inference runs on a GPU (then the batch gives the CPU cores to decoding and post-processing)."""

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.deactivate()

    def identity(self) -> str | None:
        """What ran, for ``OUT/run.json``: the SHA-256 of the graph or checkpoint (with its precision where the
        file does not fix it); None when unknown. Valid after ``__enter__``."""
        return None

    def activate(self) -> None:
        """Load the model (called by ``__enter__``)."""

    def deactivate(self) -> None:
        """Release resources (called by ``__exit__``)."""

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(B, 1, N, N) float32 patches -> (B, 1, N, N) float32 maps."""

    def infer_all(self, patches: np.ndarray, batch: int) -> np.ndarray:
        """Maps of any number of ``patches`` (P, 1, N, N), run in batches of at most ``batch`` patches."""
        if len(patches) <= batch:
            return self.infer(patches)
        return np.concatenate([self.infer(patches[i:i + batch]) for i in range(0, len(patches), batch)])

    def cancel(self) -> None:
        """Ask an ``infer`` running in another thread to stop early (best effort; Ctrl-C). Default: nothing."""
