"""torch backend: the checkpoint run eagerly (the reference every other backend is compared against).

On a CUDA GPU without TensorRT it is also a fast path: FP16 weights and activations in channels_last
layout (the spatial normalization still runs in FP32: :class:`~vcorner.network.normalization.
SpatialNormalization` casts with ``.float()``), and either one CUDA graph per repeated batch size or
``torch.compile``.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from vcorner.io.records import InputError
from vcorner.models.card import sha256_file
from vcorner.models.modelfile import resolve_checkpoint
from vcorner.runtime.base import Runner

log = logging.getLogger(__name__)

MAX_GRAPHS = 8
"""CUDA graphs kept per runner (one per batch size)."""
WARMUP_RUNS = 3
"""Eager runs on a side stream before a capture (cuDNN picks its kernels there, not inside the graph)."""


class TorchRunner(Runner):
    """torch on a ``.safetensors`` checkpoint (needs the ``train`` extra).

    Args:
        checkpoint: run folder or ``.safetensors`` file.
        device: torch device string (``cpu``, ``cuda``, ``cuda:1``).
        half: FP16 weights and activations (CUDA only); the normalization stays FP32.
        channels_last: NHWC memory layout (default: on for CUDA); tensor cores prefer it.
        cuda_graphs: replay one captured CUDA graph per batch size seen twice (CUDA only).
        compile: ``torch.compile`` the model instead (mode ``max-autotune-no-cudagraphs``); exclusive with
            ``cuda_graphs``.
        sha256: the checkpoint's SHA-256 when already known (else hashed for :meth:`identity`).

    Shapes:
        ``infer``: (B, 1, N, N) float32 patches -> (B, 1, N, N) float32 maps.
    """

    name = "torch"

    def __init__(self, checkpoint: Path, device: str = "cpu", half: bool = False, channels_last: bool | None = None,
                 cuda_graphs: bool = False, compile: bool = False, sha256: str | None = None) -> None:
        cuda = device.startswith("cuda")
        if (half or cuda_graphs) and not cuda:
            raise InputError(f"torch FP16 and CUDA graphs need a CUDA device, got {device!r}")
        if cuda_graphs and compile:
            raise InputError("choose CUDA graphs or torch.compile, not both")
        self.checkpoint, self.device, self.half = Path(checkpoint), device, half
        self.channels_last = cuda if channels_last is None else channels_last
        self.cuda_graphs, self.compile = cuda_graphs, compile
        self.known_sha256 = sha256
        self.model = None
        self.graphs: dict[int, tuple] = {}
        self.seen: Counter[int] = Counter()

    def activate(self) -> None:
        import torch

        from vcorner.network.checkpoint import load_model

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"torch sees no CUDA GPU for device {self.device!r}; use --backend ort or device cpu")
        model, self.card = load_model(self.checkpoint)
        model = model.to(self.device).eval()
        if self.half:
            model = model.half()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.compile:
            model = torch.compile(model, mode="max-autotune-no-cudagraphs")  # dynamic batch after a 2nd size
        self.model, self._torch = model, torch
        self.on_gpu = self.device.startswith("cuda")
        self.name = "torch" + ("-cuda" if self.device.startswith("cuda") else "") + ("-fp16" if self.half else "")

    def identity(self) -> str:
        if self.known_sha256 is None:
            self.known_sha256 = sha256_file(resolve_checkpoint(self.checkpoint))
        return self.known_sha256 + ("+fp16" if self.half else "")

    def deactivate(self) -> None:
        self.graphs, self.seen, self.model = {}, Counter(), None

    def to_input(self, batch: np.ndarray):
        """(B, 1, N, N) float32 numpy -> a device tensor in the model's dtype and memory layout."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, non_blocking=True)
        if self.half:
            x = x.half()
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            graph = self.graph_for(len(batch)) if self.cuda_graphs else None
            if graph is None:
                maps = self.model(self.to_input(batch))
            else:
                graph[0].copy_(self.to_input(batch))
                graph[2].replay()
                maps = graph[1]
            return maps.float().contiguous().cpu().numpy()

    def graph_for(self, batch: int) -> tuple | None:
        """(static input, static output, CUDAGraph) for ``batch``, captured the second time it is seen."""
        if batch in self.graphs:
            return self.graphs[batch]
        self.seen[batch] += 1
        if self.seen[batch] < 2 or len(self.graphs) >= MAX_GRAPHS:
            return None
        self.graphs[batch] = self.capture(batch)
        return self.graphs[batch]

    def capture(self, batch: int) -> tuple:
        """Warm up on a side stream, then capture the model on a static (``batch``, 1, N, N) input."""
        torch = self._torch
        n = self.card.sampling.patch_size
        with torch.cuda.device(self.device):  # the capture stream must live on this runner's GPU (cuda:N)
            static_in = self.to_input(np.zeros((batch, 1, n, n), np.float32))
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS):
                    self.model(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=side):
                static_out = self.model(static_in)
        log.debug("captured a CUDA graph for batch %d", batch)
        return static_in, static_out, graph
