"""TensorRT engine cache: key, paths, sidecar and the rebuild decision (pure Python, no TensorRT needed);
the TensorRT backend's one-line errors where TensorRT, cuda-python or a GPU is missing."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

import vcorner.export.tensorrt_build as build
import vcorner.models.engines as tb
from vcorner.hardware.capabilities import Capabilities
from vcorner.hardware.cuda import GpuInfo
from vcorner.io.records import InputError, MachineError
from vcorner.models.profiles import ExportProfile

GPU = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")
PROFILE = ExportProfile("gpu", "fp16", 1, 256, 512, 2048, "test profile")
SHA = "ab" * 32


def key(**changes):
    """engine_key with one component replaced."""
    args = {"onnx_sha256": SHA, "tensorrt_version": "10.7.0", "gpu": GPU, "profile": PROFILE, **changes}
    return tb.engine_key(**args)


@pytest.mark.parametrize("changes", [
    {"onnx_sha256": "cd" * 32},
    {"tensorrt_version": "11.0.0"},
    {"gpu": GpuInfo(GPU.name, "8.9")},
    {"gpu": GpuInfo("NVIDIA A100-SXM4-80GB", "9.0")},
    *({"profile": dataclasses.replace(PROFILE, **{field: value})} for field, value in
      [("name", "gpu-large"), ("precision", "fp32"), ("batch_min", 2), ("batch_opt", 128), ("batch_max", 1024),
       ("workspace_mb", 4096)]),
])
def test_key_changes_with_each_component(changes):
    assert tb.key_digest(key(**changes)) != tb.key_digest(key())
    assert tb.key_differences(key(**changes), key())


def test_key_ignores_the_description_and_dict_order():
    assert key(profile=dataclasses.replace(PROFILE, description="other words")) == key()
    shuffled = dict(reversed(list(key().items())))
    assert tb.key_digest(shuffled) == tb.key_digest(key())


def test_key_differences_name_what_changed():
    changes = tb.key_differences(key(tensorrt_version="11.0.0", gpu=GpuInfo(GPU.name, "8.6")), key())
    assert "TensorRT 10.7.0 -> 11.0.0" in changes and "compute capability 9.0 -> 8.6" in changes
    changes = tb.key_differences(key(profile=dataclasses.replace(PROFILE, batch_max=1024)), key())
    assert changes == ["profile batch_max 512 -> 1024"]
    assert tb.key_differences(key(onnx_sha256="cd" * 32), key()) == ["ONNX model changed (SHA-256 differs)"]


def test_engine_paths_name_model_profile_and_architecture(tmp_path):
    plan, sidecar = tb.engine_paths(tmp_path / "m.fp16.onnx", PROFILE, GPU, tmp_path / "cache")
    assert plan == tmp_path / "cache" / "m.fp16.gpu.sm90.plan" and sidecar == Path(f"{plan}.json")
    assert tb.engine_paths(tmp_path / "m.onnx", PROFILE, GPU)[0].parent == tmp_path  # beside a writable model
    assert tb.timing_cache_path(tmp_path, GPU, "10.7.0").name == "timing.sm90.trt10.7.0.cache"


def test_engines_of_read_only_or_shipped_models_go_to_the_user_cache(tmp_path, monkeypatch):
    from vcorner.models.modelfile import default_model_path

    monkeypatch.setenv("VCORNER_CACHE", str(tmp_path / "user"))
    assert tb.engine_dir(default_model_path()) == tmp_path / "user" / "engines"
    monkeypatch.setattr(tb.os, "access", lambda path, mode: False)
    assert tb.engine_dir(tmp_path / "m.onnx") == tmp_path / "user" / "engines"


def test_sidecar_round_trips_and_unreadable_ones_read_as_none(tmp_path):
    data = tb.engine_sidecar(key(), "ef" * 32, 12.345)
    tb.write_engine_sidecar(tmp_path / "e.plan.json", data)
    back = tb.read_engine_sidecar(tmp_path / "e.plan.json")
    assert back == json.loads(json.dumps(data)) and back["key_sha256"] == tb.key_digest(key())
    assert back["build_seconds"] == 12.35 and back["format"] == tb.ENGINE_FORMAT
    assert tb.read_engine_sidecar(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert tb.read_engine_sidecar(tmp_path / "bad.json") is None


def cached_plan(tmp_path, plan_bytes=b"PLAN", recorded=None):
    """A plan file and its sidecar as a build would leave them."""
    import hashlib

    plan, sidecar = tmp_path / "m.gpu.sm90.plan", tmp_path / "m.gpu.sm90.plan.json"
    plan.write_bytes(plan_bytes)
    tb.write_engine_sidecar(sidecar, tb.engine_sidecar(recorded or key(), hashlib.sha256(plan_bytes).hexdigest(), 1))
    return plan, sidecar


def test_rebuild_reason(tmp_path):
    plan, sidecar = tmp_path / "x.plan", tmp_path / "x.plan.json"
    assert tb.rebuild_reason(plan, sidecar, key()) == "no engine built yet"
    plan, sidecar = cached_plan(tmp_path)
    assert tb.rebuild_reason(plan, sidecar, key()) is None
    reason = tb.rebuild_reason(plan, sidecar, key(tensorrt_version="11.1.0", gpu=GpuInfo(GPU.name, "10.0")))
    assert reason.startswith("built for another setup") and "TensorRT 10.7.0 -> 11.1.0" in reason
    assert "compute capability 9.0 -> 10.0" in reason and "\n" not in reason
    plan.write_bytes(b"PLAN, truncated or tampered")
    assert "SHA-256" in tb.rebuild_reason(plan, sidecar, key())
    sidecar.unlink()
    assert "missing or unreadable" in tb.rebuild_reason(plan, sidecar, key())


class FakeTensorRT:
    """Stands in for build and deserialize; ``refuse`` lists plan bytes TensorRT will not load."""

    def __init__(self, refuse=()):
        self.builds, self.loaded, self.refuse = 0, [], set(refuse)

    def build(self) -> bytes:
        self.builds += 1
        return f"PLAN-{self.builds}".encode()

    def deserialize(self, data: bytes):
        self.loaded.append(data)
        return None if data in self.refuse else ("engine", data)


def test_matching_plan_is_loaded_without_building(tmp_path):
    plan, sidecar = cached_plan(tmp_path)
    fake = FakeTensorRT()
    assert build.resolve_engine(plan, sidecar, key(), fake.build, fake.deserialize) is False
    assert fake.builds == 0 and fake.loaded == [b"PLAN"]


@pytest.mark.parametrize("changes", [{"tensorrt_version": "11.0.0"}, {"gpu": GpuInfo("NVIDIA L4", "8.9")},
                                     {"onnx_sha256": "00" * 32}])
def test_mismatch_rebuilds_with_a_logged_reason_and_then_reuses(tmp_path, caplog, changes):
    plan, sidecar = cached_plan(tmp_path, recorded=key())
    fake = FakeTensorRT()
    with caplog.at_level(logging.WARNING, logger="vcorner.export.tensorrt_build"):
        built = build.resolve_engine(plan, sidecar, key(**changes), fake.build, fake.deserialize)
    assert built and fake.loaded == [b"PLAN-1"] and plan.read_bytes() == b"PLAN-1"
    assert "built for another setup" in caplog.text
    assert tb.read_engine_sidecar(sidecar)["key"] == json.loads(json.dumps(key(**changes)))
    assert build.resolve_engine(plan, sidecar, key(**changes), fake.build, fake.deserialize) is False
    assert fake.builds == 1


def test_plan_that_tensorrt_refuses_is_rebuilt_not_fatal(tmp_path, caplog):
    plan, sidecar = cached_plan(tmp_path, plan_bytes=b"PLAN-from-elsewhere")
    fake = FakeTensorRT(refuse={b"PLAN-from-elsewhere"})
    with caplog.at_level(logging.WARNING, logger="vcorner.export.tensorrt_build"):
        built = build.resolve_engine(plan, sidecar, key(), fake.build, fake.deserialize)
    assert built and fake.loaded[-1] == b"PLAN-1" and "could not deserialize" in caplog.text


def test_fresh_plan_that_cannot_load_is_a_one_line_error(tmp_path):
    fake = FakeTensorRT(refuse={b"PLAN-1"})
    with pytest.raises(MachineError, match="built the engine but cannot load it"):
        build.resolve_engine(tmp_path / "m.plan", tmp_path / "m.plan.json", key(), fake.build, fake.deserialize)


# ------------------------------------------------------------------ without TensorRT, cuda-python or a GPU


def test_plan_problem_names_what_the_runner_refuses(tmp_path):
    plan, _ = cached_plan(tmp_path)
    assert tb.plan_problem(plan, "10.7.0", GPU) is None
    assert "TensorRT 10.7.0 -> 11.0.0" in tb.plan_problem(plan, "11.0.0", GPU)
    assert "compute capability 9.0 -> 8.9" in tb.plan_problem(plan, "10.7.0", GpuInfo(GPU.name, "8.9"))
    assert "no engine built" in tb.plan_problem(tmp_path / "other.plan", "10.7.0", GPU)


@pytest.fixture
def no_gpu_stack(monkeypatch):
    """Pretend neither tensorrt nor cuda-python is installed (one symbol: everything asks it)."""
    monkeypatch.setattr("vcorner.hardware.cuda.importlib.util.find_spec", lambda name: None)


NO_GPU = Capabilities("cpu", (), 2)
GPU_MACHINE = Capabilities("cpu", (), 2, (GPU,), runtimes={"trt": ("cuda",), "ort": ("cuda", "cpu")})


def test_runner_without_tensorrt_says_how_to_install_in_one_line(tmp_path, no_gpu_stack):
    from vcorner.backends.trt.runner import TensorRTRunner

    with pytest.raises(MachineError) as err, TensorRTRunner(tmp_path / "m.plan"):
        pass
    text = str(err.value)
    assert "pip install 'vcorner[gpu]'" in text and "tensorrt and cuda-python" in text and "\n" not in text


def test_the_probe_sees_no_tensorrt_and_no_gpu_without_them(no_gpu_stack):
    from vcorner.backends import probe

    caps = probe()
    assert not caps.devices("trt") and caps.gpus == () and caps.devices("ort")[-1] == "cpu"


def test_trt_backend_without_tensorrt_and_auto_falls_back_to_ort(tiny_onnx):
    from vcorner.backends import Backend, resolve_model

    with pytest.raises(MachineError, match=r"pip install 'vcorner\[gpu\]'"):
        resolve_model(tiny_onnx, Backend.trt, caps=NO_GPU)
    assert resolve_model(tiny_onnx, Backend.auto, caps=NO_GPU).backend == Backend.ort


def test_auto_picks_tensorrt_when_it_and_a_gpu_are_present(tiny_onnx):
    from vcorner.backends import Backend, resolve_model

    resolved = resolve_model(tiny_onnx, Backend.auto, caps=GPU_MACHINE)
    assert resolved.backend == Backend.trt and resolved.device == "cuda:0" and resolved.precision == "fp16"
    assert resolved.pending == ("fp16", "engine") and resolved.engine.name.endswith(".gpu.sm90.plan")
    no_gpu = dataclasses.replace(GPU_MACHINE, gpus=())
    assert resolve_model(tiny_onnx, Backend.auto, caps=no_gpu).backend == Backend.ort


def test_a_runner_is_never_opened_for_a_graph_still_to_make(tiny_onnx):
    from vcorner.backends import open_runner, resolve_model

    with pytest.raises(InputError, match="not made yet"):
        open_runner(resolve_model(tiny_onnx, caps=GPU_MACHINE))


def test_no_gpu_is_a_one_line_error(monkeypatch):
    import vcorner.hardware.cuda as cuda

    monkeypatch.setattr(cuda, "cuda_device_count", lambda: 0)
    with pytest.raises(InputError, match="no CUDA GPU 0 visible here"):
        cuda.current_gpu(0)


@pytest.mark.parametrize("device, index", [(None, 0), ("cuda", 0), ("cuda:1", 1), ("2", 2)])
def test_cuda_index(device, index):
    from vcorner.backends import cuda_index

    assert cuda_index(device) == index


def test_cuda_index_rejects_cpu():
    from vcorner.backends import cuda_index

    with pytest.raises(InputError, match="CUDA device"):
        cuda_index("cpu")
