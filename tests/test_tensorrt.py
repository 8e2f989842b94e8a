"""Native TensorRT (GPU only): FP16 and FP32 engines of the tiny model against ONNX Runtime FP32, the engine
cache (reuse, rebuild on a key mismatch or an unloadable plan), batch chunking and CUDA graphs.

Skipped without ``tensorrt``, ``cuda-python`` or a CUDA GPU."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

pytest.importorskip("tensorrt")
pytest.importorskip("cuda")
pytest.importorskip("torch")
pytest.importorskip("onnxconverter_common")

from vcorner.export import tensorrt_build as tb  # noqa: E402
from vcorner.models.profiles import ExportProfile  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(tb.cuda_device_count() == 0, reason="needs a CUDA GPU")]

FP16 = ExportProfile("test", "fp16", 1, 8, 16, 256)
FP32 = ExportProfile("test-fp32", "fp32", 1, 8, 16, 256)
FP16_TOLERANCE = 5e-3
"""max |TensorRT FP16 - ORT FP32| over the FP32 peak."""
FP32_TOLERANCE = 2e-3
"""FP32 engines may use TF32 convolutions (TensorRT's default), hence not 1e-5."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(FP32 ONNX, FP16 ONNX) of the tiny UNet with non-trivial batch-norm statistics."""
    from tests.test_fp16 import tiny_card, tiny_model
    from vcorner.export.fp16 import convert_fp16
    from vcorner.export.onnx_export import export_model

    model = tiny_model()
    path = tmp_path_factory.mktemp("trt") / "tiny.onnx"
    export_model(model, tiny_card(model), path)
    return path, convert_fp16(path)


def ort_maps(path, patches):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"patches": patches})[0]


def patches(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 1, 64, 64)).astype(np.float32)


def runner(model, profile, cache, **kwargs):
    from vcorner.backends.trt.runner import TensorRTRunner

    return TensorRTRunner(model, profile, cache_dir=cache, **kwargs)


@pytest.mark.parametrize("profile, tolerance", [(FP16, FP16_TOLERANCE), (FP32, FP32_TOLERANCE)])
def test_engine_matches_onnxruntime_fp32(tiny, tmp_path, profile, tolerance):
    fp32, _ = tiny
    x = patches(13)
    reference = ort_maps(fp32, x)
    with runner(fp32, profile, tmp_path) as trt:
        maps = trt.infer(x)
        assert trt.name == f"trt-{profile.precision}"
    assert maps.dtype == np.float32 and maps.shape == x.shape
    assert np.abs(maps - reference).max() <= tolerance * reference.max()
    np.testing.assert_allclose(maps.sum(axis=(2, 3)), 1.0, rtol=1e-4)


def test_engine_is_cached_and_rebuilt_on_a_key_mismatch(tiny, tmp_path, caplog):
    fp32, fp16 = tiny
    with runner(fp32, FP16, tmp_path) as first:
        assert first.loaded.built and first.loaded.plan.name == f"tiny.fp16.test.{first.loaded.gpu.sm}.plan"
        plan = first.loaded.plan
    with runner(fp16, FP16, tmp_path) as second:
        assert not second.loaded.built and second.loaded.plan == plan
    sidecar = tb.read_engine_sidecar(f"{plan}.json")
    sidecar["key"]["tensorrt"] = "9.9.9"
    tb.write_engine_sidecar(f"{plan}.json", sidecar)
    with caplog.at_level(logging.WARNING, logger="vcorner.export.tensorrt_build"), \
            runner(fp16, FP16, tmp_path) as third:
        assert third.loaded.built and third.infer(patches(2)).shape == (2, 1, 64, 64)
    assert "TensorRT 9.9.9 ->" in caplog.text


def test_a_plan_tensorrt_cannot_load_is_rebuilt(tiny, tmp_path):
    import hashlib

    _, fp16 = tiny
    with runner(fp16, FP16, tmp_path) as first:
        plan = first.loaded.plan
    garbage = b"not a TensorRT plan" * 100
    plan.write_bytes(garbage)
    sidecar = json.loads(plan.with_name(plan.name + ".json").read_text())
    sidecar["plan_sha256"] = hashlib.sha256(garbage).hexdigest()  # key and checksum match; TensorRT refuses it
    tb.write_engine_sidecar(plan.with_name(plan.name + ".json"), sidecar)
    with runner(fp16, FP16, tmp_path) as second:
        assert second.loaded.built and plan.read_bytes() != garbage


def test_batches_beyond_the_profile_are_chunked(tiny, tmp_path):
    fp32, fp16 = tiny
    x = patches(FP16.batch_max * 2 + 5, seed=3)
    reference = ort_maps(fp32, x)
    with runner(fp16, FP16, tmp_path) as trt:
        maps = trt.infer(x)
    assert np.abs(maps - reference).max() <= FP16_TOLERANCE * reference.max()


def test_cuda_graphs_replay_the_same_maps(tiny, tmp_path):
    _, fp16 = tiny
    batches = [patches(8, seed) for seed in range(4)] + [patches(3, 9)]
    with runner(fp16, FP16, tmp_path) as graphed, runner(fp16, FP16, tmp_path, cuda_graphs=False) as plain:
        for x in batches:
            np.testing.assert_allclose(graphed.infer(x), plain.infer(x), rtol=0, atol=1e-7)
        assert set(graphed.graphs) == {8} and not plain.graphs


def test_batch_command_runs_on_tensorrt(tiny_onnx, toy_dataset, tmp_path):
    from typer.testing import CliRunner

    from vcorner.cli import app

    result = CliRunner().invoke(app, ["batch", str(toy_dataset), "--centers", str(toy_dataset / "centers.csv"),
                                      "--model", str(tiny_onnx), "--backend", "trt", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "backend trt-fp16" in result.output.replace("\n", " ") and (tmp_path / "out" / "corners.csv").is_file()
