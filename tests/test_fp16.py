"""Mixed-precision FP16 ONNX: graph structure (normalization and reductions FP32, FP16 weights, FP32 I/O),
maps against FP32 on the tiny model, the model card, ``vcorner export --fp16``; torch CUDA FP16 (GPU only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxconverter_common")

from vcorner.config import DecodeConfig, GroundTruthConfig, SamplingConfig  # noqa: E402
from vcorner.export.fp16 import (  # noqa: E402
    FLOAT,
    FLOAT16,
    convert_fp16,
    fp16_map_difference,
    fp16_variant,
    fp32_nodes,
    tensor_types,
)
from vcorner.export.onnx_export import export_model  # noqa: E402
from vcorner.io.records import InputError  # noqa: E402
from vcorner.models.card import ModelCard, sha256_file  # noqa: E402
from vcorner.models.modelfile import read_model_card  # noqa: E402
from vcorner.models.variants import find_fp16, fp16_path, model_precision  # noqa: E402
from vcorner.network.unet import create_model  # noqa: E402
from vcorner.postprocess.prior import fit_prior  # noqa: E402

TAIL = ["Cast", "ReduceMin", "Sub", "ReduceSum", "Add", "Div"]
"""The spatial normalization as exported (Constants aside)."""
MAP_TOLERANCE = 5e-3
"""FP16 vs FP32 maps on ONNX Runtime CPU: max |difference| over the FP32 peak (tiny model, random patches)."""


def tiny_model(seed: int = 0):
    """The tiny UNet with non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = create_model("tiny").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def tiny_card(model) -> ModelCard:
    """A card for a tiny test model: default settings, a prior fitted on the hand-made spine."""
    from tests.conftest import make_spine

    return ModelCard(model.constructor_args(), SamplingConfig(), GroundTruthConfig(), DecodeConfig(),
                     fit_prior([make_spine()]), {"data": "test"})


def save_tiny_run(run) -> Path:
    """``run`` made into a run folder holding a tiny checkpoint (``model.safetensors``)."""
    from vcorner.network.checkpoint import save_model

    model = tiny_model(1)
    run.mkdir(parents=True, exist_ok=True)
    save_model(run / "model.safetensors", model, tiny_card(model))
    return run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, card, FP32 path, FP16 path)."""
    model = tiny_model()
    card = tiny_card(model)
    path = tmp_path_factory.mktemp("fp16") / "tiny.onnx"
    export_model(model, card, path)
    return model, card, path, convert_fp16(path)


def node_types(model, node):
    """Element types of a node's float inputs and outputs."""
    types = tensor_types(model)
    return {types.get(t) for t in [*node.input, *node.output] if t} & {FLOAT, FLOAT16}


def tail_nodes(model):
    nodes = [n for n in model.graph.node if n.op_type != "Constant"]
    return nodes[-len(TAIL):]


def test_fp16_graph_keeps_normalization_and_reductions_fp32(tiny):
    _, _, _, path = tiny
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert path == fp16_path(tiny[2]) and path.name == "tiny.fp16.onnx"
    assert [n.op_type for n in tail_nodes(model)] == TAIL
    for node in tail_nodes(model)[1:]:
        assert node_types(model, node) == {FLOAT}, node.name
    for node in model.graph.node:
        if node.op_type.startswith("Reduce"):
            assert node_types(model, node) == {FLOAT}, node.name
    eps = [n for n in model.graph.node if n.op_type == "Constant" and n.output[0] in tail_nodes(model)[4].input]
    assert eps and onnx.numpy_helper.to_array(eps[0].attribute[0].t).dtype == np.float32
    assert {n.name for n in tail_nodes(model)[1:]} <= set(fp32_nodes(model))


def test_fp16_graph_has_fp16_weights_and_fp32_io(tiny):
    model = onnx.load(str(tiny[3]))
    io = [*model.graph.input, *model.graph.output]
    assert [v.type.tensor_type.elem_type for v in io] == [FLOAT, FLOAT]
    assert io[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    weights = {t.name: t.data_type for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert len(convs) == 19 + 4
    assert all(weights[n.input[1]] == FLOAT16 for n in convs[:-1])
    assert weights[convs[-1].input[1]] == FLOAT  # the 1x1 head stays FP32 by default
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert len(casts) == 3  # input to FP16, body output to FP32, the exported .float()


def test_head_may_run_in_fp16(tiny, tmp_path):
    model = onnx.load(str(convert_fp16(tiny[2], tmp_path / "h.fp16.onnx", keep_head_fp32=False)))
    weights = {t.name: t.data_type for t in model.graph.initializer}
    head = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    assert weights[head.input[1]] == FLOAT16
    assert all(node_types(model, n) == {FLOAT} for n in tail_nodes(model)[1:])


@pytest.mark.parametrize("batch", [1, 4])
def test_fp16_maps_match_fp32_on_the_tiny_model(tiny, batch):
    _, _, fp32, fp16 = tiny
    patches = np.random.default_rng(batch).standard_normal((batch, 1, 64, 64)).astype(np.float32)
    absolute, relative = fp16_map_difference(fp32, fp16, patches)
    assert relative <= MAP_TOLERANCE, (absolute, relative)
    import onnxruntime as ort

    maps = ort.InferenceSession(str(fp16), providers=["CPUExecutionProvider"]).run(None, {"patches": patches})[0]
    assert maps.dtype == np.float32 and maps.min() >= 0
    np.testing.assert_allclose(maps.sum(axis=(2, 3)), 1.0, rtol=1e-5)


def test_card_travels_with_a_precision_note(tiny):
    _, card, fp32, fp16 = tiny
    fp16_card = read_model_card(fp16)  # sidecar checksum verified
    note = fp16_card.training["quantization"]
    assert note["precision"] == "fp16" and note["io"] == "fp32" and note["source_sha256"] == sha256_file(fp32)
    assert {"/normalize/ReduceMin", "/normalize/ReduceSum"} <= set(note["fp32_nodes"])
    assert fp16_card.with_decode(card.decode).to_dict()["prior"] == card.to_dict()["prior"]
    assert {k: v for k, v in fp16_card.training.items() if k != "quantization"} == card.training
    import json

    metadata = {p.key: p.value for p in onnx.load(str(fp16)).metadata_props}
    assert json.loads(metadata["vcorner_card"]) == fp16_card.to_dict()
    assert model_precision(fp16) == "fp16" and model_precision(fp32) == "fp32"


def test_converting_an_fp16_model_again_is_refused(tiny, tmp_path):
    with pytest.raises(InputError, match="already holds FP16 weights"):
        convert_fp16(tiny[3], tmp_path / "twice.onnx")


def test_the_fp16_variant_is_found_or_made_only_by_the_export_step(tiny, tmp_path):
    import shutil

    _, _, fp32, fp16 = tiny
    assert fp16_variant(fp32, tmp_path) == fp16  # the sibling beside the model
    assert fp16_variant(fp16, tmp_path) == fp16
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in (fp32.name, f"{fp32.name}.json"):
        shutil.copy(fp32.parent / name, alone / name)
    assert find_fp16(alone / fp32.name, sha256_file(fp32), tmp_path / "engines") is None  # finding makes nothing
    made = fp16_variant(alone / fp32.name, tmp_path / "engines")
    assert made == tmp_path / "engines" / "tiny.fp16.onnx" and model_precision(made) == "fp16"
    stamp = made.stat().st_mtime_ns
    assert fp16_variant(alone / fp32.name, tmp_path / "engines") == made
    assert find_fp16(alone / fp32.name, sha256_file(fp32), tmp_path / "engines") == made
    assert made.stat().st_mtime_ns == stamp  # reused while its source checksum matches


def test_a_stale_fp16_sibling_is_not_used(tiny, tmp_path, caplog):
    import shutil

    _, card, fp32, _ = tiny
    other = export_model(tiny_model(5), card, tmp_path / "other" / "tiny.onnx")  # another version of the model
    stale = convert_fp16(other)
    shutil.copy(fp32, tmp_path / "tiny.onnx")
    shutil.copy(f"{fp32}.json", tmp_path / "tiny.onnx.json")
    shutil.copy(stale, tmp_path / "tiny.fp16.onnx")
    shutil.copy(f"{stale}.json", tmp_path / "tiny.fp16.onnx.json")
    made = fp16_variant(tmp_path / "tiny.onnx", tmp_path / "engines")
    assert made == tmp_path / "engines" / "tiny.fp16.onnx" and "not converted from this" in caplog.text


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder holding a tiny checkpoint."""
    return save_tiny_run(tmp_path_factory.mktemp("run"))


def test_cli_export_fp16_without_tensorrt_says_so_in_one_line(run_dir, monkeypatch):
    from typer.testing import CliRunner

    from vcorner.cli import app

    monkeypatch.setattr("vcorner.hardware.tensorrt.tensorrt_installed", lambda: False)
    result = CliRunner().invoke(app, ["export", str(run_dir), "--fp16"])
    assert result.exit_code == 0, result.output
    assert (run_dir / "model.fp16.onnx").is_file() and (run_dir / "model.fp16.onnx.json").is_file()
    lines = [line for line in result.output.splitlines() if "TensorRT" in line]
    assert len(lines) == 1 and "absent" in lines[0]
    assert f"vcorner export {run_dir} --fp16 --engine --profile gpu" in lines[0]
    assert "FP16 vs FP32" in result.output


def test_cli_engine_without_tensorrt_fails_in_one_line(run_dir, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from vcorner.cli import app

    monkeypatch.setattr("vcorner.hardware.tensorrt.tensorrt_installed", lambda: False)
    args = ["export", str(run_dir), "--out", str(tmp_path / "m.onnx"), "--engine", "--profile", "gpu-large"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "pip install 'vcorner[gpu]'" in errors[0] and "--profile gpu-large" in errors[0]
    assert (tmp_path / "m.fp16.onnx").is_file()  # the FP16 profile wrote its graph before giving up


def test_cli_unknown_profile_is_a_usage_error(run_dir):
    from typer.testing import CliRunner

    from vcorner.cli import app

    result = CliRunner().invoke(app, ["export", str(run_dir), "--fp16", "--profile", "tpu"])
    assert result.exit_code == 2 and "unknown export profile 'tpu'" in result.output


def test_torch_fp16_needs_cuda(run_dir):
    from vcorner.backends.torch.runner import TorchRunner

    with pytest.raises(InputError, match="need a CUDA device"):
        TorchRunner(run_dir, "cpu", half=True)


# ------------------------------------------------------------------ torch on CUDA (skipped without a GPU)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def eager_cpu_maps(run_dir, patches):
    from vcorner.backends.torch.runner import TorchRunner

    with TorchRunner(run_dir, "cpu") as runner:
        return runner.infer(patches)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("half", [False, True])
def test_torch_cuda_matches_cpu_eager(run_dir, half):
    from vcorner.backends.torch.runner import TorchRunner

    patches = np.random.default_rng(0).standard_normal((16, 1, 64, 64)).astype(np.float32)
    reference = eager_cpu_maps(run_dir, patches)
    with TorchRunner(run_dir, "cuda", half=half) as runner:
        maps = runner.infer(patches)
    assert maps.dtype == np.float32 and maps.shape == patches.shape
    tolerance = MAP_TOLERANCE * reference.max() if half else 1e-4 * reference.max()
    assert np.abs(maps - reference).max() <= tolerance
    np.testing.assert_allclose(maps.sum(axis=(2, 3)), 1.0, rtol=1e-4)


@pytest.mark.gpu
@cuda
def test_torch_cuda_graphs_replay_the_same_maps(run_dir):
    from vcorner.backends.torch.runner import TorchRunner

    rng = np.random.default_rng(1)
    batches = [rng.standard_normal((b, 1, 64, 64)).astype(np.float32) for b in (8, 8, 8, 5)]
    with TorchRunner(run_dir, "cuda", half=True, cuda_graphs=True) as graphed, \
            TorchRunner(run_dir, "cuda", half=True) as eager:
        for batch in batches:
            np.testing.assert_allclose(graphed.infer(batch), eager.infer(batch), atol=1e-6)
        assert set(graphed.graphs) == {8}  # captured the second time batch 8 came, never for the single 5


@pytest.mark.gpu
@pytest.mark.slow
@cuda
def test_torch_compile_matches_eager(run_dir):
    from vcorner.backends.torch.runner import TorchRunner

    patches = np.random.default_rng(2).standard_normal((8, 1, 64, 64)).astype(np.float32)
    with TorchRunner(run_dir, "cuda", half=True, compile=True) as runner:
        maps = runner.infer(patches)
    reference = eager_cpu_maps(run_dir, patches)
    assert np.abs(maps - reference).max() <= MAP_TOLERANCE * reference.max()
