"""``vcorner batch --ray`` on a local Ray instance gives exactly the local batch's outputs."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

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


def test_actors_share_the_cpus_left_beside_the_reads():
    from vcorner.io.records import InputError
    from vcorner.pipeline.ray_batch import actor_cpus, actor_threads

    assert actor_cpus(2, 1) == 1.0 and actor_cpus(2, 2) == 0.75 and actor_cpus(16, 4) == 1.0
    assert actor_threads(None, 1.0, 1, 2) is None and actor_threads(None, 0.75, 2, 2) == 1
    assert actor_threads(3, 0.75, 2, 2) == 3
    with pytest.raises(InputError, match="use at most 15"):
        actor_cpus(2, 16)
    with pytest.raises(InputError, match="needs 4 GPU"):
        actor_cpus(16, 4, cluster_gpus=1, gpus_per_actor=1)


def test_a_stalled_ray_batch_stops_with_a_named_stage():
    import threading

    from vcorner.io.records import InputError
    from vcorner.pipeline.ray_batch import watch

    never = threading.Event()

    def rows(n):
        yield from range(n)
        never.wait(30)  # a stuck pipeline: no row ever comes (interrupted by the watchdog)

    with pytest.raises(InputError, match="before the first image came back"):
        list(watch(rows(0), 0.5, 2))
    with pytest.raises(InputError, match="in the actors after 2 image"):
        list(watch(rows(2), 0.5, 2))
    assert list(watch(iter(range(3)), 5, 1)) == [0, 1, 2]


@pytest.mark.slow
def test_as_many_actors_as_cpus_finishes_with_the_local_corners(toy_dataset, tiny_onnx, tmp_path):
    """Issue H: on a 2-core machine, 2 actors holding a CPU each starved the reads and hung forever."""
    import os
    import subprocess

    pytest.importorskip("ray")
    cpus = os.cpu_count() or 2
    base = [sys.executable, "-m", "vcorner", "batch", str(toy_dataset), "--centers", str(toy_dataset / "centers.csv"),
            "--model", str(tiny_onnx)]
    local = subprocess.run(base + ["--out", str(tmp_path / "local")], capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr
    ray = subprocess.run(base + ["--out", str(tmp_path / "ray"), "--ray", "local", "--ray-actors", str(cpus)],
                         capture_output=True, text=True, timeout=600)  # a hang fails here instead of stalling CI
    assert ray.returncode == 0, ray.stderr
    assert sorted((tmp_path / "ray" / "corners.csv").read_text().splitlines()) == sorted(
        (tmp_path / "local" / "corners.csv").read_text().splitlines())
    assert "ReadBinary" not in ray.stderr and "Resources:" not in ray.stderr  # Ray Data's lines stay quiet


@pytest.mark.slow
def test_ray_batch_without_centres_matches_the_local_automatic_batch(tmp_path):
    """No --centers: every actor runs its own detector session; corners, detected centres and errors (a film
    with no spine) are the local automatic batch's."""
    import cv2
    import numpy as np

    ray = pytest.importorskip("ray")
    examples = Path(__file__).resolve().parents[1] / "examples" / "xrays"
    root = tmp_path / "films"
    shutil.copytree(examples, root, ignore=shutil.ignore_patterns("*.csv", "*.json"))
    cv2.imwrite(str(root / "noise.png"), (np.random.default_rng(0).random((600, 500)) * 255).astype(np.uint8))
    outputs = {}
    try:
        for mode in ("local", "ray"):
            out = tmp_path / mode
            result = CliRunner().invoke(app, ["batch", str(root), "--out", str(out)] +
                                        (["--ray", "local"] if mode == "ray" else []))
            assert result.exit_code == 1, result.output  # noise.png: no vertebrae found
            outputs[mode] = {name: sorted((out / name).read_text().splitlines())
                             for name in ("corners.csv", "errors.csv", "centers.detected.csv")}
    finally:
        ray.shutdown()
    assert outputs["ray"] == outputs["local"]
    assert len(outputs["ray"]["corners.csv"]) == 1 + 6 * 5 * 4
    assert [line.split(",")[0] for line in outputs["ray"]["errors.csv"]] == ["image", "noise.png"]
    assert "no vertebrae found" in outputs["ray"]["errors.csv"][1]
