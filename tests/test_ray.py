"""``vcorner batch --ray`` on a local Ray instance gives exactly the local batch's outputs."""

from __future__ import annotations

import shutil
import sys

import pytest
from typer.testing import CliRunner

from vcorner.cli import app


def test_without_ray_the_flag_fails_with_an_install_hint(toy_dataset, tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    result = CliRunner().invoke(app, ["batch", str(toy_dataset), "--centers", str(toy_dataset / "centers.csv"),
                                      "--out", str(tmp_path / "o"), "--model", str(tiny_onnx), "--ray", "local"])
    assert result.exit_code == 2 and "pip install 'vcorner[ray]'" in result.output


@pytest.mark.slow
def test_ray_batch_matches_local_batch(toy_dataset, tiny_onnx, tmp_path):
    ray = pytest.importorskip("ray")
    root = tmp_path / "xrays"
    shutil.copytree(toy_dataset, root)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with open(root / "centers.csv", "a", encoding="utf-8") as handle:
        handle.write("broken.png,C3,100,100\nbroken.png,C4,100,160\ngone.png,C3,1,1\ngone.png,C4,1,2\n")
    outputs = {}
    try:
        for mode in ("local", "ray"):
            out = tmp_path / mode
            args = ["batch", str(root), "--centers", str(root / "centers.csv"), "--out", str(out),
                    "--model", str(tiny_onnx)] + (["--ray", "local"] if mode == "ray" else [])
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 1, result.output  # broken.png and gone.png failed
            outputs[mode] = {name: sorted((out / name).read_text().splitlines())
                             for name in ("corners.csv", "errors.csv")}
    finally:
        ray.shutdown()
    assert outputs["ray"] == outputs["local"]
    assert len(outputs["ray"]["corners.csv"]) == 1 + 4 * 5 * 4
    assert [line.split(",")[0] for line in outputs["ray"]["errors.csv"]] == ["broken.png", "gone.png", "image"]
