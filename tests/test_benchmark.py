"""``vcorner benchmark`` on the tiny model with very short timings: rows, skips with reasons, JSON lines, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

import typer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from vcorner import benchmark as lib  # noqa: E402
from vcorner.benchmark import BenchmarkSettings, run, run_benchmark, variants  # noqa: E402
from vcorner.cli.benchmark import benchmark  # noqa: E402
from vcorner.hardware.cpu import cpu_info
from vcorner.io.records import InputError  # noqa: E402
from vcorner.runtime.base import Runner  # noqa: E402

MEASURED = {"backend", "precision", "device", "batch", "status", "patches_per_s", "p50_ms", "p95_ms", "max_abs_diff",
            "p2p_mean", "p2p_unit", "p2p_delta", "corner_shift_px", "model", "model_sha256", "variant",
            "variant_sha256", "images", "patches", "seed", "seconds", "rounds", "batches_timed", "machine", "versions",
    "date"}
FAST = {"seconds": 0.01, "images": 1, "batch_sizes": (8, 32)}


@pytest.fixture(scope="module")
def onnx_rows(tiny_onnx):
    settings = BenchmarkSettings(model=tiny_onnx, backends=("ort", "torch", "trt"), precisions=("fp32", "int8", "fp16"),
                                 **FAST)
    return run_benchmark(settings)


def _by(rows: list[dict], backend: str, precision: str) -> list[dict]:
    return [r for r in rows if r["backend"] == backend and r["precision"] == precision]


def test_measured_rows_have_every_field(onnx_rows):
    fp32, int8 = _by(onnx_rows, "ort", "fp32"), _by(onnx_rows, "ort", "int8")
    assert [r["batch"] for r in fp32] == [8, 32] and [r["batch"] for r in int8] == [8, 32]
    for row in fp32 + int8:
        assert MEASURED <= set(row), MEASURED - set(row)
        assert row["status"] == "ok" and row["patches_per_s"] > 0 and 0 < row["p50_ms"] <= row["p95_ms"]
        assert row["p2p_unit"] == "mm" and row["p2p_mean"] > 0
    assert fp32[0]["max_abs_diff"] == 0.0 and fp32[0]["p2p_delta"] == 0.0  # the reference itself
    assert int8[0]["variant"] == "model.int8.onnx" and int8[0]["variant_sha256"] != int8[0]["model_sha256"]
    assert 0.0 < int8[0]["max_abs_diff"] < 1e-3
    assert abs(int8[0]["p2p_delta"]) < 0.5  # mm, an untrained tiny model on one phantom
    machine = fp32[0]["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and isinstance(machine["gpu"], list)
    assert {"onnxruntime", "numpy", "python"} <= set(fp32[0]["versions"])


def test_unavailable_combinations_are_skipped_with_a_reason(onnx_rows):
    skipped = {(r["backend"], r["precision"]): r for r in onnx_rows if r["status"] != "ok"}
    assert set(skipped) >= {("torch", "fp32"), ("torch", "int8"), ("torch", "fp16"), ("trt", "fp32")}
    assert "checkpoint" in skipped[("torch", "fp32")]["reason"]
    assert "ONNX Runtime only" in skipped[("torch", "int8")]["reason"]
    assert "TensorRT" in skipped[("trt", "fp16")]["reason"]
    if not lib.gpu_names():
        assert "GPU" in skipped[("ort", "fp16")]["reason"]
    assert all(r["status"] == "skipped" and r["batch"] is None and r["reason"] for r in skipped.values())


def test_a_checkpoint_also_runs_torch_which_matches_onnx_runtime(tmp_path, tiny_onnx):
    torch = pytest.importorskip("torch")
    from vcorner.models.modelfile import read_model_card
    from vcorner.network.checkpoint import save_model
    from vcorner.network.unet import create_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # OpenMP barriers crawl on a machine whose cores other jobs keep busy
    torch.manual_seed(0)
    save_model(tmp_path / "tiny.safetensors", create_model("tiny").eval(), read_model_card(tiny_onnx))
    settings = BenchmarkSettings(model=tmp_path / "tiny.safetensors", backends=("ort", "torch"),
                                 precisions=("fp32",), **{**FAST, "batch_sizes": (16,)})
    try:
        rows = run_benchmark(settings)
    finally:
        torch.set_num_threads(threads)
    ort_row, torch_row = _by(rows, "ort", "fp32")[0], _by(rows, "torch", "fp32")[0]
    assert torch_row["status"] == "ok" and torch_row["max_abs_diff"] < 1e-5
    assert torch_row["corner_shift_px"] < 1e-2 and ort_row["model"] == "tiny.safetensors"


def test_a_failing_backend_becomes_a_row_not_a_crash(tiny_onnx, monkeypatch):
    def broken(*args):
        raise RuntimeError("driver exploded\nsecond line")

    monkeypatch.setattr(variants, "torch_model", broken)
    rows = run_benchmark(BenchmarkSettings(model=tiny_onnx, backends=("torch",), precisions=("fp32",), **FAST))
    assert [(r["status"], r["reason"]) for r in rows] == [("failed", "RuntimeError: driver exploded")]


class _SmallMemoryRunner(Runner):
    """Maps like a flat model, but fails on batches above 8 patches (out of memory)."""

    device = "fake"

    def infer(self, batch):
        if len(batch) > 8:
            raise MemoryError("out of memory at batch 32")
        return np.full(batch.shape, 1.0 / batch[0, 0].size, dtype=np.float32)


def test_a_backend_failing_while_timed_becomes_a_row(tiny_onnx, monkeypatch):
    monkeypatch.setattr(run, "open_variant", lambda *args: _SmallMemoryRunner())
    settings = BenchmarkSettings(model=tiny_onnx, backends=("torch",), precisions=("fp32",), **FAST)
    with monkeypatch.context() as patch:  # the maps of the accuracy pass come out; only timing hits the limit
        patch.setattr(_SmallMemoryRunner, "infer_all",
                      lambda runner, patches, batch: np.full(patches.shape, 1 / 4096, np.float32))
        rows = run_benchmark(settings)
    assert [(r["status"], r["reason"]) for r in rows] == [("failed", "MemoryError: out of memory at batch 32")]


def test_a_missing_model_is_a_one_line_error(tmp_path):
    with pytest.raises(InputError, match="no such model"):
        run_benchmark(BenchmarkSettings(model=tmp_path / "none.onnx", **FAST))


def test_results_append_as_json_lines_to_the_user_cache_by_default(tmp_path, monkeypatch):
    from vcorner.models.evidence import user_results_path

    monkeypatch.setenv("VCORNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert user_results_path() == tmp_path / "cache" / "benchmark.jsonl"
    path = lib.append_jsonl(tmp_path / "out" / "r.jsonl", [{"a": 1}])
    lib.append_jsonl(path, [{"b": 2}, {"c": None}])
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == [
        {"a": 1}, {"b": 2}, {"c": None}]


def test_cpu_info_reads_model_and_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512_vnni\n\n"
                       "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu\n", encoding="utf-8")
    assert cpu_info(cpuinfo) == ("Test CPU 9000", ["avx2", "avx512_vnni"])
    assert cpu_info(tmp_path / "missing")[1] == []


def test_busy_cores_reads_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3\n", encoding="utf-8")
    assert lib.busy_cores(0.0, stat) is None  # no clock ticks between the samples: no information
    assert lib.busy_cores(0.0, tmp_path / "missing") is None
    live = lib.busy_cores(0.05)
    assert live is None or 0.0 <= live <= (os.cpu_count() or 1)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("benchmark")(benchmark)
    app.command("noop")(lambda: None)  # two commands: typer keeps the command name on the command line
    return app


def test_cli_prints_the_table_and_appends_rows(tiny_onnx, tmp_path):
    results = tmp_path / "bench.jsonl"
    args = ["benchmark", "--model", str(tiny_onnx), "--backend", "ort,trt", "--precision", "fp32",
            "--batch-size", "4", "--batch-size", "8", "--seconds", "0.01", "--images", "1", "--results", str(results)]
    outcome = CliRunner().invoke(_app(), args, env={"COLUMNS": "200"})
    assert outcome.exit_code == 0, outcome.output
    assert "patches/s" in outcome.output and "not measured here" in outcome.output
    assert "vcorner[gpu]" in outcome.output  # reasons are not read as rich markup
    rows = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    assert [(r["backend"], r["batch"]) for r in rows] == [("ort", 4), ("ort", 8), ("trt", None)]


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "tensorflow"], "tensorflow"), (["--batch-size", "x"], "whole numbers"),
    (["--batch-size", "0"], "at least 1"), (["--model", "missing.onnx"], "no such model")])
def test_cli_rejects_bad_options_in_one_line(args, message, tmp_path):
    outcome = CliRunner().invoke(_app(), ["benchmark", *args, "--results", str(tmp_path / "r.jsonl")])
    assert outcome.exit_code == 2 and message in outcome.output
    assert not Path(tmp_path / "r.jsonl").exists()
