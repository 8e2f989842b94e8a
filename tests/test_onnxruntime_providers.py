"""ONNX Runtime's GPU execution providers: which devices are offered, the provider options vcorner sets, the
device index, and the runner's name when ONNX Runtime falls back to another provider."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from vcorner.backends.ort import runner as ortr
from vcorner.backends.ort.rule import ort_devices
from vcorner.hardware.capabilities import Capabilities
from vcorner.io.records import InputError

ALL_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture
def gpu_wheel(monkeypatch):
    """onnxruntime-gpu installed: every provider compiled in, whatever the hardware."""
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ALL_PROVIDERS)


@pytest.mark.parametrize("gpu, tensorrt, expected", [
    (False, True, ("cpu",)),
    (True, False, ("cuda", "cpu")),
    (True, True, ("tensorrt", "cuda", "cpu")),
])
def test_gpu_providers_are_offered_only_where_they_can_run(gpu, tensorrt, expected):
    assert ort_devices(set(ALL_PROVIDERS), gpu, tensorrt) == expected


def test_the_cpu_wheel_offers_only_the_cpu():
    assert ort_devices({"CPUExecutionProvider"}, True, True) == ("cpu",)


def test_the_probe_offers_only_the_cpu_on_a_gpu_wheel_without_a_gpu(gpu_wheel, monkeypatch):
    from vcorner.backends import probe
    from vcorner.backends.ort import rule
    from vcorner.hardware import capabilities

    monkeypatch.setattr(capabilities, "visible_gpus", lambda: ())
    monkeypatch.setattr(rule, "driver_lists_gpu", lambda: False)
    assert probe().devices("ort") == ("cpu",)


def test_auto_on_a_gpu_wheel_without_a_gpu_still_takes_the_int8_model(monkeypatch, tmp_path, tiny_onnx):
    from vcorner.backends import Backend, open_runner, resolve_model
    from vcorner.backends.ort import rule
    from vcorner.models.evidence import Int8Decision

    model = tmp_path / "m.onnx"
    for source, target in ((tiny_onnx, model), (tiny_onnx, tmp_path / "m.int8.onnx")):
        target.write_bytes(source.read_bytes())
        target.with_name(target.name + ".json").write_text(
            Path(f"{source}.json").read_text().replace(source.name, target.name))
    monkeypatch.setattr(rule, "int8_decision", lambda *args: Int8Decision(True, "wins in this test"))
    resolved = resolve_model(model, Backend.auto, caps=Capabilities(runtimes={"ort": ("cpu",)}))
    runner = open_runner(resolved)
    assert runner.device == "cpu" and runner.model.name == "m.int8.onnx" and resolved.precision == "int8"
    assert "wins in this test" in resolved.reason


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
    with caplog.at_level(logging.WARNING, logger="vcorner.backends.ort.runner"), \
            ortr.OnnxRuntimeRunner(tiny_onnx, "cuda:0") as runner:
        assert runner.name == "ort-cpu"
    assert "could not start the cuda provider and runs on cpu" in caplog.text


def test_gpu_providers_run_the_fp16_graph_of_an_fp16_profile(tmp_path, tiny_onnx):
    pytest.importorskip("onnxconverter_common")
    from vcorner.backends import Backend, materialize, open_runner, resolve_model

    model = tmp_path / "tiny.onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    gpu = Capabilities(runtimes={"ort": ("cuda", "cpu")})
    resolved = resolve_model(model, Backend.ort, device="cuda", caps=gpu)
    assert resolved.pending == ("fp16",) and not resolved.graph.exists()  # resolving converts nothing
    runner = open_runner(materialize(resolved))
    assert runner.model == tmp_path / "tiny.fp16.onnx" and runner.device == "cuda" and runner.cpu_model == model
    runner = open_runner(resolve_model(model, Backend.ort, device="cuda:1", profile="gpu-fp32", caps=gpu))
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
    from vcorner.backends import Backend, open_runner, resolve_model

    checkpoint = save_tiny_run(tmp_path / "run") / "model.safetensors"

    def runner(device, profile=None):
        return open_runner(resolve_model(checkpoint, Backend.torch, device, profile=profile))

    reference = runner("cuda:1")
    assert (reference.half, reference.cuda_graphs) == (False, False)
    fast = runner("cuda:1", "gpu")
    assert (fast.half, fast.cuda_graphs, fast.channels_last) == (True, True, True)
    fp32 = runner("cuda", "gpu-fp32")
    assert (fp32.half, fp32.cuda_graphs) == (False, True)
    cpu = runner("cpu", "gpu")
    assert (cpu.half, cpu.cuda_graphs) == (False, False)


def test_an_fp16_graph_falls_back_to_the_fp32_model_when_onnx_runtime_lands_on_the_cpu(tiny_onnx, tmp_path):
    pytest.importorskip("onnxconverter_common")
    import onnxruntime

    from vcorner.export.fp16 import convert_fp16
    from vcorner.models.card import sha256_file

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("needs the CPU build of onnxruntime")
    half = convert_fp16(tiny_onnx, tmp_path / "tiny.fp16.onnx")
    with ortr.OnnxRuntimeRunner(half, "cuda", cpu_model=tiny_onnx) as runner:
        assert runner.model == tiny_onnx and runner.name == "ort-cpu" and not runner.on_gpu
        assert runner.identity() == sha256_file(tiny_onnx)


def test_the_driver_list_counts_where_cuda_python_sees_no_gpu(tmp_path):
    from vcorner.hardware.cuda import driver_lists_gpu

    assert not driver_lists_gpu(tmp_path / "gpus")
    (tmp_path / "gpus" / "0000:00:04.0").mkdir(parents=True)
    assert driver_lists_gpu(tmp_path / "gpus")


def test_intra_op_threads_sleep_between_operators_unless_asked_to_spin():
    """Beside the batch's decoding threads spinning threads hold the cores those need: off by default."""
    from vcorner.backends.ort.runner import session_options
    from vcorner.hardware.cpu import available_cores

    spinning = "session.intra_op.allow_spinning"
    assert session_options().get_session_config_entry(spinning) == "0"
    assert session_options(2, spin=True).get_session_config_entry(spinning) == "1"
    assert session_options().intra_op_num_threads == available_cores()
    assert session_options(1).intra_op_num_threads == 1
