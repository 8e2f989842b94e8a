"""Shared fixtures: a small hand-made spine whose geometry is known exactly."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from vcorner.io.records import ImageRecord, Vertebra


def make_spine(n: int = 4, angle_deg: float = 10.0, size: float = 60.0, origin=(200.0, 80.0)) -> ImageRecord:
    """Vertebrae spaced ``size`` px along a straight spine tilted by ``angle_deg``; rectangular bodies."""
    a = np.deg2rad(angle_deg)
    down = np.array([-np.sin(a), np.cos(a)])
    right = np.array([down[1], -down[0]])
    vertebrae = []
    for i in range(n):
        c = np.asarray(origin) + i * size * down
        half_w, half_h = 0.42 * size, 0.33 * size
        corners = np.array([c - half_w * right - half_h * down, c + half_w * right - half_h * down,
                            c - half_w * right + half_h * down, c + half_w * right + half_h * down])
        vertebrae.append(Vertebra(f"C{i + 3}", c, corners, None))
    return ImageRecord("spine.png", tuple(vertebrae), 0.15)


def crushed_spine_files(root, shift: Callable[[int], float]) -> None:
    """A 5-vertebra spine whose middle vertebra is crushed anteriorly (height cut to 12 of 40 px, a Genant
    grade 3) written as ``root/annotations.json``, and ``root/corners.csv`` with every corner found ``shift(i)`` px
    right of the truth (vertebra ``i``): the inputs of ``vcorner evaluate`` on a known deformity."""
    from vcorner.io.annotations import write_annotations

    spine = make_spine(5)
    crushed = spine.vertebrae[2].corners.copy()
    crushed[[1, 3], 1] = crushed[[0, 2], 1].mean() + np.array([-6.0, 6.0])
    vertebrae = [Vertebra(v.name, v.center, crushed if i == 2 else v.corners) for i, v in enumerate(spine.vertebrae)]
    write_annotations(root / "annotations.json", [ImageRecord("spine.png", tuple(vertebrae), 0.15)])
    rows = ["image,vertebra,corner,x,y,confidence,sd_major_px,sd_minor_px,angle_deg,source"]
    names = ("superior_left", "superior_right", "inferior_left", "inferior_right")
    for i, v in enumerate(vertebrae):
        rows += [f"spine.png,{v.name},{n},{x + shift(i):.3f},{y:.3f},0.9,1.0,1.0,0.0,network"
                 for n, (x, y) in zip(names, v.corners, strict=True)]
    (root / "corners.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def spine() -> ImageRecord:
    return make_spine()


def render_spine(record: ImageRecord, shape=(450, 400), seed: int = 0) -> np.ndarray:
    """A plain uint8 radiograph of ``record``: blurred bright bodies on a dark, noisy background."""
    import cv2

    rng = np.random.default_rng(seed)
    image = np.zeros(shape, np.float32)
    for v in record.vertebrae:
        cv2.fillPoly(image, [np.round(v.corners[[0, 1, 3, 2]] * 16).astype(np.int32)], 0.7, cv2.LINE_AA, shift=4)
    image = cv2.GaussianBlur(image, (0, 0), 1.5) + rng.normal(0, 0.05, shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory):
    """A folder of 4 rendered spines with annotations.json and centers.csv."""
    from dataclasses import replace

    from vcorner.io.annotations import write_annotations
    from vcorner.io.centers import write_centers
    from vcorner.phantoms.files import write_image

    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    records = []
    for i in range(4):
        record = make_spine(n=5, angle_deg=rng.uniform(-15, 15), size=rng.uniform(50, 70),
                            origin=(200 + rng.uniform(-20, 20), 80))
        record = replace(record, file=f"toy{i}.png")
        write_image(root / record.file, render_spine(record, seed=i))
        records.append(record)
    write_annotations(root / "annotations.json", records)
    write_centers(root / "centers.csv", records)
    return root


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, toy_dataset):
    """An untrained tiny UNet exported to ONNX with a prior fitted on the toy dataset."""
    torch = pytest.importorskip("torch")
    from vcorner.config import DecodeConfig, GroundTruthConfig, SamplingConfig
    from vcorner.export.onnx_export import export_model
    from vcorner.io.annotations import read_annotations
    from vcorner.models.card import ModelCard
    from vcorner.network.unet import create_model
    from vcorner.postprocess.prior import fit_prior

    torch.manual_seed(0)
    model = create_model("tiny").eval()
    sampling = SamplingConfig(grid_steps=2, scales=(1.0,), rotations_deg=(0.0,))
    card = ModelCard(model.constructor_args(), sampling, GroundTruthConfig(), DecodeConfig(),
                     fit_prior(read_annotations(toy_dataset / "annotations.json")), {"data": "toy"})
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    export_model(model, card, path)
    return path
