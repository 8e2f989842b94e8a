"""``vcorner export RUN_OR_CKPT``: ONNX (dynamic batch) with the model card, checked against torch eager."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vcorner.cli.common import fail, stderr, user_errors


def export(
    checkpoint: Annotated[Path, typer.Argument(help="Run folder or .safetensors checkpoint.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="ONNX file (default: RUN/model.onnx).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Compare ONNX Runtime with torch eager.")] = True,
) -> None:
    """Export a trained checkpoint to ONNX, with its model card in the metadata and a .json sidecar."""
    with user_errors():
        try:
            import numpy as np

            from vcorner.export.onnx_export import export_model, max_abs_difference
            from vcorner.training.checkpoint import load_model, resolve_checkpoint
        except ImportError as err:
            fail(f"export needs torch and onnx: pip install 'vcorner[train]' ({err})")
        source = resolve_checkpoint(checkpoint)
        target = out or source.with_suffix(".onnx")
        model, card = load_model(source)
        export_model(model, card, target, opset)
        stderr.print(f"wrote {target} and {target}.json", highlight=False)
        if check:
            n = card.sampling.patch_size
            patches = np.random.default_rng(0).standard_normal((8, 1, n, n)).astype(np.float32)
            diff = max_abs_difference(model, target, patches)
            stderr.print(f"ONNX Runtime vs torch eager: max |difference| {diff:.2e}", highlight=False)
            if diff > 1e-5:
                fail(f"{target}: ONNX Runtime differs from torch eager by {diff:.2e} (> 1e-5)")
