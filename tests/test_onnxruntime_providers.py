"""ONNX Runtime's GPU execution providers: which devices are offered, the provider options vcorner sets, the
device index, and the runner's name when ONNX Runtime falls back to another provider."""

from __future__ import annotations

import logging

import pytest

from vcorner.io.records import InputError
from vcorner.runtime import onnxruntime_runner as ortr

ALL_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture
def gpu_wheel(monkeypatch):
    """onnxruntime-gpu installed: every provider compiled in, whatever the hardware."""
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ALL_PROVIDERS)


@pytest.mark.parametrize("gpu, tensorrt, expected", [
    (False, True, ["cpu"]),
    (True, False, ["cuda", "cpu"]),
    (True, True, ["tensorrt", "cuda", "cpu"]),
])
def test_gpu_providers_are_offered_only_where_they_can_run(gpu_wheel, monkeypatch, gpu, tensorrt, expected):
    from vcorner.export import tensorrt_build

    monkeypatch.setattr(ortr, "gpu_visible", lambda: gpu)
    monkeypatch.setattr(tensorrt_build, "has_module", lambda name: tensorrt if name == "tensorrt" else True)
    assert ortr.available_devices() == expected


def test_the_cpu_wheel_offers_only_the_cpu(monkeypatch):
    monkeypatch.setattr(ortr, "gpu_visible", lambda: True)
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert ortr.available_devices() == ["cpu"]


def test_auto_on_a_gpu_wheel_without_a_gpu_still_takes_the_int8_model(gpu_wheel, monkeypatch, tiny_onnx):
    from vcorner.runtime import select

    monkeypatch.setattr(ortr, "gpu_visible", lambda: False)
    monkeypatch.setattr(select, "int8_variant", lambda model: model.with_name("m.int8.onnx"))
    runner, _ = select.open_runner(tiny_onnx, select.Backend.auto)
    assert runner.device == "cpu" and runner.model.name == "m.int8.onnx"


def test_tensorrt_provider_options(tmp_path):
    providers = ortr.providers_for("tensorrt", tmp_path, patch_size=64, batch=(1, 256, 512), device_id=1)
    (trt_name, trt), (cuda_name, cuda), cpu = providers
    assert (trt_name, cuda_name, cpu) == tuple(ALL_PROVIDERS)
    assert trt["device_id"] == 1 and cuda["device_id"] == 1
    assert trt["trt_engine_cache_enable"] and trt["trt_engine_cache_path"] == str(tmp_path)
    assert trt["trt_timing_cache_enable"] and trt["trt_timing_cache_path"] == str(tmp_path)
    assert trt["trt_fp16_enable"] is False  # precision comes from the mixed FP16 graph, not the provider
    assert trt["trt_profile_min_shapes"] == "patches:1x1x64x64"
    assert trt["trt_profile_opt_shapes"] == "patches:256x1x64x64"
    assert trt["trt_profile_max_shapes"] == "patches:512x1x64x64"
    assert cuda["cudnn_conv_algo_search"] == "EXHAUSTIVE"


def test_cuda_and_cpu_providers():
    (name, options), cpu = ortr.providers_for("cuda", device_id=2)
    assert name == "CUDAExecutionProvider" and options["device_id"] == 2 and cpu == "CPUExecutionProvider"
    assert ortr.providers_for("cpu") == ["CPUExecutionProvider"]


@pytest.mark.parametrize("device, expected", [("cpu", ("cpu", 0)), ("cuda", ("cuda", 0)), ("cuda:1", ("cuda", 1)),
                                              ("tensorrt:3", ("tensorrt", 3))])
def test_split_device(device, expected):
    assert ortr.split_device(device) == expected


@pytest.mark.parametrize("device", ["gpu", "cpu:1", "cuda:x", "cuda:"])
def test_bad_devices_are_one_line_errors(device):
    with pytest.raises(InputError, match="cpu, cuda"):
        ortr.split_device(device)


def test_runner_is_named_after_the_provider_that_actually_runs(tiny_onnx, caplog):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("needs the CPU build of onnxruntime")
    with caplog.at_level(logging.WARNING, logger="vcorner.runtime.onnxruntime_runner"), \
            ortr.OnnxRuntimeRunner(tiny_onnx, "cuda:0") as runner:
        assert runner.name == "ort-cpu"
    assert "could not start the cuda provider and runs on cpu" in caplog.text


def test_gpu_providers_run_the_fp16_graph_of_an_fp16_profile(gpu_wheel, monkeypatch, tmp_path, tiny_onnx):
    pytest.importorskip("onnxconverter_common")
    from vcorner.runtime import select

    model = tmp_path / "tiny.onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    monkeypatch.setattr(ortr, "gpu_visible", lambda: True)
    runner, _ = select.open_runner(model, select.Backend.ort, device="cuda")
    assert runner.model == tmp_path / "tiny.fp16.onnx" and runner.device == "cuda"
    runner, _ = select.open_runner(model, select.Backend.ort, device="cuda:1", profile="gpu-fp32")
    assert runner.model == model and runner.device_id == 1


def test_batch_device_option(toy_dataset, tiny_onnx, tmp_path):
    from typer.testing import CliRunner

    from vcorner.cli import app

    def run(device: str):
        return CliRunner().invoke(app, ["batch", str(toy_dataset), "--centers", str(toy_dataset / "centers.csv"),
                                        "--model", str(tiny_onnx), "--backend", "ort", "--device", device,
                                        "--out", str(tmp_path / device)])

    assert run("cpu").exit_code == 0
    bad = run("gpu")
    assert bad.exit_code == 2 and bad.output.startswith("error:") and "cpu, cuda[:N], tensorrt[:N] or N" in bad.output


def test_torch_backend_takes_its_fast_cuda_path_only_when_a_profile_is_given(tmp_path):
    pytest.importorskip("torch")
    from tests.test_fp16 import save_tiny_run
    from vcorner.runtime import select

    checkpoint = save_tiny_run(tmp_path / "run") / "model.safetensors"
    reference, _ = select.open_runner(checkpoint, select.Backend.torch, device="cuda:1")
    assert (reference.half, reference.cuda_graphs) == (False, False)
    fast, _ = select.open_runner(checkpoint, select.Backend.torch, device="cuda:1", profile="gpu")
    assert (fast.half, fast.cuda_graphs, fast.channels_last) == (True, True, True)
    fp32, _ = select.open_runner(checkpoint, select.Backend.torch, device="cuda", profile="gpu-fp32")
    assert (fp32.half, fp32.cuda_graphs) == (False, True)
    cpu, _ = select.open_runner(checkpoint, select.Backend.torch, device="cpu", profile="gpu")
    assert (cpu.half, cpu.cuda_graphs) == (False, False)


def test_an_fp16_graph_falls_back_to_the_fp32_model_when_onnx_runtime_lands_on_the_cpu(tiny_onnx, tmp_path):
    pytest.importorskip("onnxconverter_common")
    import onnxruntime

    from vcorner.card import sha256_file
    from vcorner.export.fp16 import convert_fp16

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("needs the CPU build of onnxruntime")
    half = convert_fp16(tiny_onnx, tmp_path / "tiny.fp16.onnx")
    with ortr.OnnxRuntimeRunner(half, "cuda", cpu_model=tiny_onnx) as runner:
        assert runner.model == tiny_onnx and runner.name == "ort-cpu" and not runner.on_gpu
        assert runner.identity() == sha256_file(tiny_onnx)


def test_gpu_visible_asks_the_driver_when_cuda_python_sees_none(monkeypatch, tmp_path):
    from vcorner.export import tensorrt_build

    monkeypatch.setattr(tensorrt_build, "has_cuda_python", lambda: True)
    monkeypatch.setattr(tensorrt_build, "cuda_device_count", lambda: 0)  # e.g. cuda-bindings 13, older driver
    real = ortr.Path

    def fake_path(text):
        return real(tmp_path / "gpus") if text == "/proc/driver/nvidia/gpus" else real(text)

    monkeypatch.setattr(ortr, "Path", fake_path)
    assert not ortr.gpu_visible()
    (tmp_path / "gpus" / "0000:00:04.0").mkdir(parents=True)
    assert ortr.gpu_visible()
