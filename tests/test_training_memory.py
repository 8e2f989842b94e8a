"""Training data streams: what the data objects hold, and the peak of a pass, do not grow with the number of films."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

from tests.conftest import make_spine, render_spine
from vcorner.config import DetectionConfig, GroundTruthConfig, SamplingConfig
from vcorner.training.data import epoch_patches, load_dataset
from vcorner.training.detector_data import epoch_views, load_detector_images
from vcorner.training.detector_recipe import AugmentSpec

SAMPLING = SamplingConfig(grid_steps=2, scales=(0.95, 1.05), rotations_deg=(-5.0, 5.0))
GT = GroundTruthConfig()
CHUNK = 2


def films(root, n: int):
    """``root`` with ``n`` rendered spines (5 vertebrae each) and their annotations.json."""
    from vcorner.io.annotations import write_annotations
    from vcorner.phantoms.files import write_image

    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        record = replace(make_spine(n=5, angle_deg=rng.uniform(-15, 15), size=rng.uniform(50, 70)), file=f"f{i}.png")
        write_image(root / record.file, render_spine(record, seed=i))
        records.append(record)
    write_annotations(root / "annotations.json", records)
    return root


@pytest.fixture(scope="module", params=[3, 12], ids=["3 films", "12 films"])
def folder(request, tmp_path_factory):
    return request.param, films(tmp_path_factory.mktemp(f"films{request.param}"), request.param)


def held_array_bytes(obj, seen=None) -> int:
    """Bytes of the NumPy arrays reachable from ``obj``'s attributes, lists, tuples and dicts."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, (list, tuple)):
        return sum(held_array_bytes(o, seen) for o in obj)
    if isinstance(obj, dict):
        return sum(held_array_bytes(o, seen) for o in obj.values())
    if hasattr(obj, "__dict__"):
        return held_array_bytes(vars(obj), seen)
    return 0


def pass_peak(run) -> int:
    """Peak bytes NumPy and Python allocate (tracemalloc) while ``run`` iterates a whole pass."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_corner_images_hold_no_pixels_and_a_pass_peaks_at_one_chunk(folder):
    n, root = folder
    _, images = load_dataset(root, GT)
    assert len(images) == n
    pixels = 450 * 400 * 4  # one decoded film, float32
    assert held_array_bytes(images) / n < pixels / 10  # records, frames and contours (42 kB a film here) only
    rng = np.random.default_rng(0)

    def one_pass():
        sizes = [len(x) for x, _ in epoch_patches(images, 8, SAMPLING, GT, rng, chunk_films=CHUNK)]
        assert max(sizes) <= CHUNK * 5 * 8 and sum(sizes) > 0.8 * n * 5 * 8

    peak = pass_peak(one_pass)
    # one chunk of patches and targets (2 films x 5 vertebrae x 8 x 2 x 64 x 64 x 4 B = 2.6 MB), a film's pyramid
    # and the carried rest: the same for 3 films as for 12, where holding every film's patches would be 15 MB
    assert peak < 3 * CHUNK * 5 * 8 * 2 * 64 * 64 * 4 + 2 * pixels, peak


def test_detector_images_hold_no_pixels_and_a_pass_peaks_at_one_chunk(folder):
    n, root = folder
    config, augment = DetectionConfig(input_size=64), AugmentSpec(negatives=0.5, bars=False)
    images = load_detector_images(root, config.input_size, max(augment.zoom))
    assert held_array_bytes(images) / n < 450 * 400 * 4 / 10
    assert images[0].first_level >= 2  # 450 px into 64: a step of 7 / 1.3 zoom -> level 2 and coarser only
    assert images[0].view_pyramid()[0] is None
    names = tuple(f"C{i}" for i in range(3, 8))
    rng = np.random.default_rng(0)

    def one_pass():
        sizes = [len(x) for x, _, _ in epoch_views(images, names, config, augment, rng, chunk_films=CHUNK)]
        assert sum(sizes) == n + round(0.5 * n) and max(sizes) <= CHUNK + 2

    peak = pass_peak(one_pass)
    # a chunk of (1 + 5 names) x 64 x 64 float32 views and targets, a decoded film for a soft-tissue negative
    assert peak < 3 * (CHUNK + 2) * 6 * 64 * 64 * 4 + 2 * 450 * 400 * 4 * 4 / 3, peak
