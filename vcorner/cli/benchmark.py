"""``vcorner benchmark``: one table to choose a backend, a precision and a batch size."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vcorner.cli.common import StepStatus, fail, stderr, user_errors


def split_values(values: list[str] | None, choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Repeated and comma-separated option values (``--x a --x b,c``), checked against ``choices``."""
    out = tuple(v.strip().lower() for value in values or [] for v in value.split(",") if v.strip())
    unknown = [v for v in out if choices is not None and v not in choices]
    if unknown:
        fail(f"unknown value(s) {', '.join(unknown)}; choose from {', '.join(choices or ())}")
    return out


def batch_sizes(values: list[str] | None) -> tuple[int, ...]:
    """Positive integer batch sizes from ``--batch-size 16 --batch-size 64,256``."""
    try:
        sizes = tuple(int(v) for v in split_values(values))
    except ValueError:
        fail(f"--batch-size takes whole numbers, got {', '.join(values or [])}")
    if any(size < 1 for size in sizes):
        fail("--batch-size must be at least 1")
    return sizes


def _number(value: Any, digits: int, scientific: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}e}" if scientific else f"{value:,.{digits}f}"


def results_table(rows: list[dict[str, Any]]) -> Table:
    """The rich table of measured rows."""
    unit = next((r["p2p_unit"] for r in rows if r.get("p2p_unit")), "mm")
    table = Table(title="vcorner benchmark", caption="accuracy columns vs FP32 ONNX Runtime on the phantom set")
    for name in ("backend", "precision", "device", "batch", "patches/s", "p50 ms", "p95 ms", "max |Δmap|",
                 f"P2P {unit}", f"ΔP2P {unit}", "shift px"):
        table.add_column(name, justify="left" if name in ("backend", "precision", "device") else "right")
    for r in (r for r in rows if r["status"] == "ok"):
        table.add_row(r["backend"], r["precision"], r.get("device", ""), str(r["batch"]),
                      _number(r["patches_per_s"], 0), _number(r["p50_ms"], 1), _number(r["p95_ms"], 1),
                      _number(r.get("max_abs_diff"), 1, True), _number(r.get("p2p_mean"), 3),
                      _number(r.get("p2p_delta"), 4), _number(r.get("corner_shift_px"), 3))
    return table


def skipped_table(rows: list[dict[str, Any]]) -> Table:
    """Combinations that did not run, with the reason."""
    table = Table("backend", "precision", "reason", title="not measured here", title_justify="left")
    for r in (r for r in rows if r["status"] != "ok"):
        table.add_row(r["backend"], r["precision"], escape(f"{r['status']}: {r['reason']}"))
    return table


def benchmark(
    model: Annotated[Path | None, typer.Option(help="ONNX model, .safetensors checkpoint or run folder "
                                                    "(default: the shipped model).")] = None,
    backend: Annotated[list[str] | None, typer.Option(help="Backends: ort, torch, trt, ov (repeat or comma-separate; "
                                                           "default all).")] = None,
    batch_size: Annotated[list[str] | None, typer.Option(help="Patches per batch (repeat or comma-separate; "
                                                              "default 16,64,256).")] = None,
    precision: Annotated[list[str] | None, typer.Option(help="Precisions: fp32, int8, fp16, bf16 (repeat or "
                                                             "comma-separate; default all).")] = None,
    seconds: Annotated[float, typer.Option(min=0.0, help="Timing per variant and batch size, seconds.")] = 3.0,
    rounds: Annotated[int, typer.Option(min=1, help="Turns the timing is split into, all variants timed in "
                                                    "each, so that other load falls on all alike.")] = 3,
    images: Annotated[int, typer.Option(min=1, help="Phantom images for the accuracy columns.")] = 4,
    int8_model: Annotated[Path | None, typer.Option(help="INT8 ONNX to time (default: M.int8.onnx beside the "
                                                         "model, else quantized on phantoms now).")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="ONNX Runtime threads (default: all cores).")] = None,
    results: Annotated[Path | None, typer.Option(help="JSON-lines file to append to (default: the user cache's "
                                                      "benchmark.jsonl, e.g. ~/.cache/vcorner/benchmark.jsonl, "
                                                      "where --backend auto looks for INT8 evidence).")] = None,
) -> None:
    """Patches/s, latency and accuracy change per backend, precision and batch size, on this machine.

    The accuracy columns compare each variant's maps and decoded corners with FP32 ONNX Runtime on a fixed
    set of phantom images. Combinations that cannot run here are listed with the reason.
    """
    from vcorner import benchmark as lib
    from vcorner.models.evidence import user_results_path

    settings = lib.BenchmarkSettings(
        model=model, backends=split_values(backend, lib.BACKENDS) or lib.BACKENDS,
        precisions=split_values(precision, lib.PRECISIONS) or lib.PRECISIONS,
        batch_sizes=batch_sizes(batch_size) or (16, 64, 256), seconds=seconds, rounds=rounds, images=images,
        threads=threads, int8_model=int8_model,
    )
    with user_errors(), StepStatus("benchmark") as status:
        rows = lib.run_benchmark(settings, on_step=status.update)
    console = Console(soft_wrap=True)
    console.width = max(console.width, 140)  # a readable table in logs too
    console.print(results_table(rows))
    if any(r["status"] != "ok" for r in rows):
        console.print(skipped_table(rows))
    with user_errors():
        path = lib.append_jsonl(results or user_results_path(), rows)
    stderr.print(f"{len(rows)} row(s) appended to {path}", highlight=False)
