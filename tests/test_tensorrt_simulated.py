"""The TensorRT path end to end on a simulated GPU stack (:mod:`tests.fake_gpu`): runner buffers, padding,
chunking, CUDA graph capture and replay, clean-up, the engine cache, ``vcorner export --engine`` and
``vcorner batch --backend trt``. The real stack runs in ``tests/test_tensorrt.py`` on GPU machines."""

from __future__ import annotations

import enum
import inspect
import logging
import re

import numpy as np
import pytest

from tests import fake_gpu
from vcorner.export import tensorrt_build as tb
from vcorner.hardware import tensorrt as hardware_tensorrt
from vcorner.hardware.cuda import current_gpu
from vcorner.io.records import MachineError
from vcorner.models import engines
from vcorner.models.profiles import ExportProfile

FP32 = ExportProfile("sim", "fp32", 4, 8, 16, 64)
"""batch_min 4 makes the runner pad small batches; batch_max 16 makes it chunk large ones."""


@pytest.fixture
def stack(monkeypatch):
    """(simulated CUDA device, simulated TensorRT), installed for one test."""
    cuda, trt = fake_gpu.install(monkeypatch)
    yield cuda, trt
    hardware_tensorrt.trt_logger.cache_clear()


def ort_maps(model, patches: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"patches": patches})[0]


def patches(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 1, 64, 64)).astype(np.float32)


def trt_runner(model, profile=FP32, cache=None, **kwargs):
    """The engine built by the cache step (as ``vcorner export --engine`` does), then its runner."""
    from vcorner.backends.trt.runner import TensorRTRunner

    plan = tb.ensure_engine(tb.engine_source(model, profile, cache), profile, cache).plan
    return TensorRTRunner(plan, **kwargs)


@pytest.mark.parametrize("batch", [1, 3, 4, 13, 16, 37])
def test_runner_returns_the_models_maps_for_any_batch(stack, tiny_onnx, tmp_path, batch):
    _, trt = stack
    x = patches(batch, seed=batch)
    with trt_runner(tiny_onnx, cache=tmp_path, cuda_graphs=False) as runner:
        maps = runner.infer(x)
        assert runner.name == "trt-fp32"
    np.testing.assert_allclose(maps, ort_maps(tiny_onnx, x), rtol=0, atol=1e-6)
    chunks = [min(FP32.batch_max, batch - s) for s in range(0, batch, FP32.batch_max)]
    assert trt.contexts[0].executed == [max(c, FP32.batch_min) for c in chunks]  # padded up, chunked down


def test_cuda_graphs_are_captured_on_the_second_sighting_and_replayed(stack, tiny_onnx, tmp_path):
    cuda, trt = stack
    sizes = [8, 3, 8, 8, 8, 3, 8]  # each graph is captured right after a shape change
    with trt_runner(tiny_onnx, cache=tmp_path) as graphed, \
            trt_runner(tiny_onnx, cache=tmp_path, cuda_graphs=False) as plain:
        for seed, size in enumerate(sizes):
            x = patches(size, seed)
            np.testing.assert_allclose(graphed.infer(x), plain.infer(x), rtol=0, atol=0)
        assert set(graphed.graphs) == {8, 4} and not plain.graphs  # 3 patches run padded to batch_min 4
    assert cuda.launches == 5  # every batch of 8 after the first, and the second batch of 3
    assert cuda.live == 0, "buffers, streams or graphs leaked"


@pytest.mark.parametrize("failure", ["stream cannot capture", "TensorRT fails inside the capture"])
def test_a_failed_capture_falls_back_to_plain_execution(stack, tiny_onnx, tmp_path, caplog, failure):
    cuda, trt = stack
    cuda.capture_fails = failure == "stream cannot capture"
    x = patches(8)
    with caplog.at_level(logging.WARNING, logger="vcorner.backends.trt.runner"), \
            trt_runner(tiny_onnx, cache=tmp_path) as runner:
        trt.contexts[0].refuse_capture = failure == "TensorRT fails inside the capture"
        results = [runner.infer(x) for _ in range(3)]
        assert not runner.graphs and not runner.cuda_graphs
    assert "CUDA graph capture failed" in caplog.text and cuda.launches == 0
    for maps in results:
        np.testing.assert_allclose(maps, ort_maps(tiny_onnx, x), rtol=0, atol=1e-6)
    assert cuda.live == 0


def test_fp16_profile_runs_the_fp16_graph(stack, tiny_onnx, tmp_path):
    pytest.importorskip("onnxconverter_common")
    _, trt = stack
    profile = ExportProfile("sim16", "fp16", 1, 8, 16, 64)
    x = patches(5)
    with trt_runner(tiny_onnx, profile, tmp_path) as runner:
        maps = runner.infer(x)
        assert runner.name == "trt-fp16"
    assert trt.builds[0]["onnx"].endswith("tiny.fp16.onnx")
    reference = ort_maps(tiny_onnx, x)
    assert np.abs(maps - reference).max() <= 1e-2 * reference.max()


def test_engine_is_cached_and_rebuilt_when_tensorrt_or_the_gpu_changes(stack, tiny_onnx, tmp_path, caplog):
    cuda, trt = stack
    first = tb.ensure_engine(tiny_onnx, FP32, tmp_path)
    assert first.built and first.plan == tmp_path / "tiny.sim.sm90.plan" and first.gpu.name == "Simulated GPU"
    record = fake_gpu.plan_record(first.plan)
    assert record["shapes"]["patches"] == [[4, 1, 64, 64], [8, 1, 64, 64], [16, 1, 64, 64]]
    assert record["workspace"] == 64 << 20
    timing = engines.timing_cache_path(tmp_path, first.gpu, trt.version)
    assert timing.read_bytes() == b"fake-timing:1"

    assert not tb.ensure_engine(tiny_onnx, FP32, tmp_path).built and len(trt.builds) == 1

    fake_gpu.set_version(trt, "11.4.0")
    with caplog.at_level(logging.WARNING, logger="vcorner.export.tensorrt_build"):
        upgraded = tb.ensure_engine(tiny_onnx, FP32, tmp_path)
    assert upgraded.built and upgraded.plan == first.plan and "TensorRT 10.14.1 -> 11.4.0" in caplog.text

    cuda.gpu = fake_gpu.Props(b"Other GPU", 8, 9)
    other = tb.ensure_engine(tiny_onnx, FP32, tmp_path)
    assert other.built and other.plan.name == "tiny.sim.sm89.plan" and len(trt.builds) == 3
    assert tb.ensure_engine(tiny_onnx, FP32, tmp_path).plan == other.plan  # both plans stay usable


def test_a_plan_copied_from_another_machine_is_rebuilt_not_fatal(stack, tiny_onnx, tmp_path, caplog):
    _, trt = stack
    plan = tb.ensure_engine(tiny_onnx, FP32, tmp_path).plan
    sidecar = engines.read_engine_sidecar(f"{plan}.json")
    sidecar["key"]["tensorrt"] = "9.9.9"  # hand-edited key: the plan inside is fine, the key is not trusted
    engines.write_engine_sidecar(f"{plan}.json", sidecar)
    with caplog.at_level(logging.WARNING, logger="vcorner.export.tensorrt_build"):
        assert tb.ensure_engine(tiny_onnx, FP32, tmp_path).built
    assert "TensorRT 9.9.9 -> 10.14.1" in caplog.text and len(trt.builds) == 2


def test_a_corrupt_timing_cache_is_replaced(stack, tiny_onnx, tmp_path, caplog):
    gpu = current_gpu()
    timing = engines.timing_cache_path(tmp_path, gpu, stack[1].version)
    timing.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="vcorner.export.tensorrt_build"):
        assert tb.ensure_engine(tiny_onnx, FP32, tmp_path).built
    assert "timing cache rejected" in caplog.text and timing.read_bytes() == b"fake-timing:1"


def test_auto_backend_picks_tensorrt_when_the_stack_and_a_gpu_are_present(stack, tiny_onnx):
    from vcorner.backends import Backend, probe, resolve_model

    caps = probe()
    assert caps.devices("trt") and [g.name for g in caps.gpus] == ["Simulated GPU"]
    assert resolve_model(tiny_onnx, Backend.auto, caps=caps).backend == Backend.trt


def test_the_runner_refuses_a_plan_built_for_another_tensorrt_in_one_line(stack, tiny_onnx, tmp_path):
    from vcorner.backends.trt.runner import TensorRTRunner

    _, trt = stack
    plan = tb.ensure_engine(tiny_onnx, FP32, tmp_path).plan
    fake_gpu.set_version(trt, "11.4.0")
    with pytest.raises(MachineError) as err, TensorRTRunner(plan):
        pass
    assert "TensorRT 10.14.1 -> 11.4.0" in str(err.value) and "vcorner export" in str(err.value)
    assert "\n" not in str(err.value) and len(trt.builds) == 1  # a runner never builds


def test_cli_export_builds_then_reuses_the_engine(stack, tmp_path):
    pytest.importorskip("onnxconverter_common")
    from typer.testing import CliRunner

    from tests.test_fp16 import save_tiny_run
    from vcorner.cli import app

    run = save_tiny_run(tmp_path / "run")
    args = ["export", str(run), "--fp16", "--engine", "--profile", "gpu", "--engine-dir", str(tmp_path / "e")]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert re.search(r"model\.fp16\.gpu\.sm90\.plan \(built\) for Simulated GPU", first.output.replace("\n", " "))
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and "(cached, key matches)" in second.output
    assert len(stack[1].builds) == 1 and stack[1].builds[0]["onnx"].endswith("model.fp16.onnx")


def test_cli_batch_on_tensorrt_matches_onnxruntime(stack, tiny_onnx, toy_dataset, tmp_path):
    from typer.testing import CliRunner

    from vcorner.cli import app

    def run(backend: str, *extra: str) -> str:
        out = tmp_path / backend
        args = ["batch", str(toy_dataset), "--centers", str(toy_dataset / "centers.csv"), "--model", str(tiny_onnx),
                "--backend", backend, "--out", str(out), "--batch-size", "24", *extra]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        return result.output, (out / "corners.csv").read_text()

    trt_output, trt_csv = run("trt", "--profile", "gpu-fp32")
    _, ort_csv = run("ort")
    assert "backend trt-fp32" in trt_output.replace("\n", " ")
    assert trt_csv == ort_csv


def test_batch_profile_must_exist(tiny_onnx, toy_dataset, tmp_path):
    from typer.testing import CliRunner

    from vcorner.cli import app

    result = CliRunner().invoke(app, ["batch", str(toy_dataset), "--centers", str(toy_dataset / "centers.csv"),
                                      "--model", str(tiny_onnx), "--profile", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "nope" in result.output


def test_simulated_cuda_calls_exist_in_the_real_bindings_with_the_same_arguments():
    real = pytest.importorskip("cuda.bindings.runtime")
    fake = fake_gpu.FakeCuda().module()
    for name in ("cudaError_t", "cudaMemcpyKind", "cudaStreamCaptureMode", "cudaStreamNonBlocking"):
        assert hasattr(real, name), name
    for member in ("cudaSuccess",):
        assert hasattr(real.cudaError_t, member)
    assert hasattr(real.cudaMemcpyKind, "cudaMemcpyHostToDevice") and \
        hasattr(real.cudaStreamCaptureMode, "cudaStreamCaptureModeThreadLocal")
    for name, function in vars(fake).items():
        if not name.startswith("cuda") or not callable(function) or isinstance(function, type):
            continue
        assert hasattr(real, name), f"cuda.bindings.runtime has no {name}"
        signature = (getattr(real, name).__doc__ or "").split("\n")[0]
        real_args = re.findall(r"(\w+)(?::[^,)]*)?(?=[,)])", signature[signature.index("("):])
        fake_args = list(inspect.signature(function).parameters)
        assert len(real_args) == len(fake_args), f"{name}: real {signature}, simulated {fake_args}"


def test_benchmark_times_tensorrt_fp32_and_fp16(stack, tiny_onnx, tmp_path):
    pytest.importorskip("onnxconverter_common")
    import json

    from typer.testing import CliRunner

    from vcorner.cli import app

    model = tmp_path / "tiny.onnx"  # a copy: the FP16 variant and engines are written beside it
    model.write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "tiny.onnx.json").write_bytes(tiny_onnx.with_name("tiny.onnx.json").read_bytes())
    results = tmp_path / "bench.jsonl"
    args = ["benchmark", "--model", str(model), "--backend", "trt", "--precision", "fp32,fp16", "--batch-size", "8",
            "--seconds", "0.01", "--rounds", "1", "--images", "1", "--results", str(results)]
    outcome = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert outcome.exit_code == 0, outcome.output
    rows = {r["precision"]: r for r in map(json.loads, results.read_text().splitlines())}
    assert set(rows) == {"fp32", "fp16"} and all(r["backend"] == "trt" for r in rows.values())
    assert all(r["patches_per_s"] > 0 and r["device"] == "cuda:0" for r in rows.values()), rows
    assert rows["fp16"]["variant"] == "tiny.fp16.gpu.sm90.plan" and rows["fp32"]["variant"] == "tiny.gpu-fp32.sm90.plan"
    assert rows["fp32"]["max_abs_diff"] < rows["fp16"]["max_abs_diff"]  # the simulated FP16 engine runs the FP16 graph
    assert len(stack[1].builds) == 2


CONSTRUCTED_BY_USERS = ("Builder", "Runtime", "OnnxParser")
"""Classes vcorner instantiates itself; the others come from TensorRT factories, so their fake constructors
are not part of the API."""


def tensorrt_binding_names() -> set[str]:
    """Every identifier in the real TensorRT Python bindings' pybind11 module (``tensorrt-cu13-bindings``).

    The module cannot be imported without TensorRT's GPU libraries, but it holds each class, method, enum
    member and keyword argument it binds as a string; ``find_spec`` locates it without importing it.
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("tensorrt_bindings")
    if spec is None or spec.origin is None:
        pytest.skip("needs the tensorrt-cu13-bindings wheel (a test dependency)")
    data = (Path(spec.origin).parent / "tensorrt.so").read_bytes()
    return {m.decode() for m in re.findall(rb"[A-Za-z_][A-Za-z0-9_]+", data)}


def simulated_tensorrt_names() -> dict[str, set[str]]:
    """Class -> the public names (methods, properties, enum members, argument names) the simulation offers."""
    module = fake_gpu.FakeTensorRT(fake_gpu.FakeCuda()).module()
    classes = {name: value for name, value in vars(module).items() if isinstance(value, type)}
    classes.update((c.__name__, c) for c in (fake_gpu.ITensor, fake_gpu.INetworkDefinition,
                                               fake_gpu.IOptimizationProfile, fake_gpu.ITimingCache,
                                               fake_gpu.IBuilderConfig, fake_gpu.ICudaEngine,
                                               fake_gpu.IExecutionContext))
    names: dict[str, set[str]] = {}
    for class_name, cls in classes.items():
        members = set(cls.__members__) if issubclass(cls, enum.Enum) else set()
        for attr, value in vars(cls).items():
            if attr.startswith("_") and not (attr == "__init__" and class_name in CONSTRUCTED_BY_USERS):
                continue
            if isinstance(value, property):
                members.add(attr)
            elif inspect.isfunction(value):
                members |= {attr} if attr != "__init__" else set()
                members |= set(inspect.signature(value).parameters) - {"self"}
        names[class_name] = members
    return names


def test_simulated_tensorrt_uses_only_names_of_the_real_bindings():
    """A name check, not a signature check: the binary tells which names exist, not which class binds them."""
    real = tensorrt_binding_names()
    simulated = simulated_tensorrt_names()
    missing = {cls: sorted((members | {cls}) - real) for cls, members in simulated.items()}
    assert not {cls: m for cls, m in missing.items() if m}, "names the real TensorRT bindings do not have"
    # and what vcorner's own code calls beyond the simulation's surface
    assert {"execute_async_v3", "set_timing_cache", "ignore_mismatch", "STRONGLY_TYPED", "WORKSPACE",
            "get_tensor_profile_shape", "deserialize_cuda_engine", "build_serialized_network"} <= real


@pytest.mark.parametrize("device, expected", [(None, "trt"), ("cuda:0", "trt"), ("cpu", "ort"), ("tensorrt", "ort")])
def test_auto_backend_follows_the_device(stack, tiny_onnx, device, expected):
    from vcorner.backends import Backend, probe, resolve_model

    assert resolve_model(tiny_onnx, Backend.auto, device, caps=probe()).backend.value == expected
