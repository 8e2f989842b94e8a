"""``vcorner export --int8 --calib`` and ``--backend auto``'s choice of the INT8 variant."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from vcorner.cli import app

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


@pytest.fixture
def checkpoint(tmp_path, tiny_onnx):
    from vcorner.models.modelfile import read_model_card
    from vcorner.network.checkpoint import save_model
    from vcorner.network.unet import create_model

    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_model(path, create_model("tiny").eval(), read_model_card(tiny_onnx))
    return path


def test_export_int8_writes_the_variant_and_auto_keeps_fp32_without_evidence(checkpoint, toy_dataset, tmp_path):
    from vcorner.backends import resolve_model
    from vcorner.hardware.capabilities import Capabilities

    def int8_variant(model):
        return resolve_model(model, caps=Capabilities(cpu="This CPU")).graph

    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--out", str(out), "--int8",
                                      "--calib", str(toy_dataset)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.int8.onnx").is_file() and (tmp_path / "m.int8.onnx.json").is_file()
    assert int8_variant(out) == out  # no benchmark: stay FP32
    (tmp_path / "m.int8.onnx").unlink()
    assert int8_variant(out) == out


def test_export_int8_needs_calibration_data(checkpoint, tmp_path):
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--out", str(tmp_path / "m.onnx"), "--int8"])
    assert result.exit_code == 2 and "--calib" in result.output
