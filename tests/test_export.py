"""ONNX export: standard ops only, dynamic batch, model card, parity with torch eager."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from vcorner.backends.ort.runner import OnnxRuntimeRunner  # noqa: E402
from vcorner.config import DecodeConfig, GroundTruthConfig, SamplingConfig  # noqa: E402
from vcorner.export.onnx_export import export_model, max_abs_difference  # noqa: E402
from vcorner.io.records import InputError  # noqa: E402
from vcorner.models.card import ModelCard  # noqa: E402
from vcorner.models.modelfile import read_model_card  # noqa: E402
from vcorner.network.unet import create_model  # noqa: E402
from vcorner.postprocess.prior import fit_prior  # noqa: E402

STANDARD_OPS = {"Conv", "ConvTranspose", "Relu", "MaxPool", "Concat", "ReduceMin", "ReduceSum", "Sub", "Div",
                "Add", "Cast", "Constant", "BatchNormalization", "Identity"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, request):
    from tests.conftest import make_spine

    torch.manual_seed(0)
    model = create_model("tiny").eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    card = ModelCard(model.constructor_args(), SamplingConfig(), GroundTruthConfig(), DecodeConfig(),
                     fit_prior([make_spine()]), {"data": "test"})
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    export_model(model, card, path)
    return model, card, path


def test_graph_uses_standard_ops_and_a_dynamic_batch(exported):
    _, _, path = exported
    graph = onnx.load(str(path))
    ops = {n.op_type for n in graph.graph.node}
    assert ops <= STANDARD_OPS, ops - STANDARD_OPS
    assert {"ReduceMin", "ReduceSum", "Div"} <= ops
    assert all(n.domain in ("", "ai.onnx") for n in graph.graph.node)
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize("batch", [1, 5, 33])
def test_onnxruntime_matches_torch_eager_on_random_patches(exported, batch):
    model, _, path = exported
    patches = np.random.default_rng(batch).standard_normal((batch, 1, 64, 64)).astype(np.float32)
    assert max_abs_difference(model, path, patches) <= 1e-5


def test_card_round_trips_and_checksum_is_verified(exported, tmp_path):
    _, card, path = exported
    assert read_model_card(path).to_dict() == card.to_dict()
    tampered = tmp_path / "t.onnx"
    tampered.write_bytes(path.read_bytes() + b"\0")
    (tmp_path / "t.onnx.json").write_text(path.with_name(path.name + ".json").read_text())
    with pytest.raises(InputError, match="SHA-256"):
        read_model_card(tampered)


def test_runner_infers_any_batch(exported):
    _, _, path = exported
    with OnnxRuntimeRunner(path) as runner:
        maps = runner.infer(np.zeros((3, 1, 64, 64), np.float32))
    assert maps.shape == (3, 1, 64, 64)
    np.testing.assert_allclose(maps.sum(axis=(2, 3)), 1.0, rtol=1e-4)


def test_onnxruntime_matches_torch_eager_on_phantom_patches(exported):
    from pathlib import Path

    from vcorner.geometry.frames import frames_from_centers
    from vcorner.geometry.patches import build_pyramid, extract_patches, patch_affines, sample_poses
    from vcorner.io.annotations import read_annotations
    from vcorner.io.images import read_image

    model, card, path = exported
    root = Path(__file__).parents[1] / "examples" / "xrays"
    record = read_annotations(root / "annotations.json")[1]  # the MONOCHROME1 DICOM
    frames = frames_from_centers(record.centers)
    affines = patch_affines(frames, 2, sample_poses(card.sampling), card.sampling)
    patches = extract_patches(build_pyramid(read_image(root / record.file).pixels), affines, 64)[:, None]
    assert max_abs_difference(model, path, patches) <= 1e-5
