"""Vertebra frames, patch affines, extraction and ground-truth maps on a spine of known geometry."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vcorner.config import GroundTruthConfig, SamplingConfig
from vcorner.geometry.frames import frames_from_centers
from vcorner.geometry.groundtruth import patch_targets, vertebra_contours
from vcorner.geometry.patches import (
    apply_affine,
    build_pyramid,
    extract_patches,
    invert_affines,
    patch_affines,
    sample_poses,
)
from vcorner.io.records import InputError


def test_frames_follow_the_spine(spine):
    frames = frames_from_centers(spine.centers)
    np.testing.assert_allclose(frames.sizes, 60.0)
    np.testing.assert_allclose(np.rad2deg(frames.angles()), 10.0)
    # Frame y points caudal: the next centre is at q = (0, 1).
    np.testing.assert_allclose(frames.to_frame(0, spine.centers[1]), [0.0, 1.0], atol=1e-12)


def test_frames_need_two_finite_centres():
    with pytest.raises(InputError, match="at least two"):
        frames_from_centers(np.array([[1.0, 2.0]]))
    with pytest.raises(InputError, match="NaN"):
        frames_from_centers(np.array([[1.0, 2.0], [np.nan, 3.0]]))


@given(
    x=st.floats(-500, 500), y=st.floats(-500, 500), angle=st.floats(-3.2, 3.2), size=st.floats(5, 400),
    u=st.floats(-10, 80), v=st.floats(-10, 80),
)
def test_patch_image_round_trip(x, y, angle, size, u, v):
    centers = np.array([[x, y], [x + size * np.sin(angle), y + size * np.cos(angle)]])
    frames = frames_from_centers(centers)
    config = SamplingConfig()
    affines = patch_affines(frames, 0, sample_poses(config), config)
    point = np.array([u, v])
    back = apply_affine(invert_affines(affines)[3], apply_affine(affines[3], point))
    np.testing.assert_allclose(back, point, atol=1e-6 * max(1.0, size))


def test_centre_patch_is_centred_and_sized(spine):
    config = SamplingConfig(scales=(1.0,), rotations_deg=(0.0,), grid_steps=1)
    frames = frames_from_centers(spine.centers)
    affine = patch_affines(frames, 1, sample_poses(config), config)[0]
    middle = (config.patch_size - 1) / 2
    np.testing.assert_allclose(apply_affine(affine, [middle, middle]), spine.centers[1], atol=1e-9)
    # One patch pixel spans extent * size / N image pixels.
    np.testing.assert_allclose(np.sqrt(np.linalg.det(affine[:, :2])), config.extent * 60.0 / config.patch_size)


def test_extracted_patch_sees_the_image_content():
    image = np.zeros((400, 400), np.float32)
    image[180:220, 150:250] = 1.0  # a bright bar, wider than tall
    frames = frames_from_centers(np.array([[200.0, 200.0], [200.0, 260.0]]))
    config = SamplingConfig(scales=(1.0,), rotations_deg=(0.0,), grid_steps=1)
    patch = extract_patches(build_pyramid(image), patch_affines(frames, 0, sample_poses(config), config), 64)[0]
    assert abs(patch.mean()) < 1e-5 and abs(patch.std() - 1) < 1e-3
    assert patch[32, 5:59].min() > patch[5, 5:59].max()  # the bar runs across the middle row


@pytest.mark.parametrize("mode", ["own", "all"])
def test_ground_truth_sums_to_one_with_maxima_at_corners(spine, mode):
    frames = frames_from_centers(spine.centers)
    config = SamplingConfig()
    gt = GroundTruthConfig(corners=mode)
    affines = patch_affines(frames, 1, sample_poses(config), config)
    maps, valid = patch_targets(vertebra_contours(spine, frames, gt), 1, affines, 64, gt)
    assert valid.all()
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    drawn = [v.corners for v in spine.vertebrae] if mode == "all" else [spine.vertebrae[1].corners]
    for affine, m in zip(affines, maps, strict=True):
        to_patch = invert_affines(affine[None])[0]
        own = apply_affine(to_patch, spine.vertebrae[1].corners)
        anywhere = apply_affine(to_patch, np.concatenate(drawn))
        peak = np.unravel_index(np.argmax(m), m.shape)[::-1]
        # The global maximum sits on a drawn corner (within 1.5 patch px) ...
        assert np.min(np.linalg.norm(anywhere - peak, axis=1)) < 1.5
        for u, v in own:  # ... and each own corner is a strong local maximum.
            r, c = int(round(v)), int(round(u))
            window = m[max(r - 2, 0): r + 3, max(c - 2, 0): c + 3]
            assert window.max() >= 0.5 * m.max()


def test_frames_count_a_vertebra_left_out_by_its_anatomical_level():
    from vcorner.geometry.frames import frames_from_centers
    from vcorner.geometry.sequence import spine_levels

    centers = np.array([[0.0, 0.0], [0.0, 50.0], [0.0, 150.0], [0.0, 200.0]])  # C3, C4, (C5 left out), C6, C7
    levels = spine_levels(["C3", "C4", "C6", "C7"])
    assert levels.tolist() == [2, 3, 5, 6]
    assert frames_from_centers(centers, levels).sizes.tolist() == [50.0, 50.0, 50.0, 50.0]
    assert frames_from_centers(centers).sizes.tolist() == [50.0, 75.0, 75.0, 50.0]
    assert spine_levels(["a", "b"]) is None and spine_levels(["C4", "C3"]) is None


def test_sequence_check_names_the_wrong_centre():
    from vcorner.geometry.sequence import check_sequence

    line = np.array([[100.0 + 5 * i, 100.0 + 50 * i] for i in range(5)])
    names = ["C3", "C4", "C5", "C6", "C7"]
    assert check_sequence(names, line).order == (0, 1, 2, 3, 4) and not check_sequence(names, line).refused
    repeated = line.copy()
    repeated[2] = line[0]
    assert check_sequence(names, repeated).order == (0, 1, 3, 4)
    far = line.copy()
    far[3] = [600.0, -400.0]
    assert list(check_sequence(names, far).refused) == [3]
    assert check_sequence(names[::-1], line[::-1]).order == (4, 3, 2, 1, 0)
    assert check_sequence(list("abcde"), line[::-1]).order == (4, 3, 2, 1, 0)  # runs up the image: reversed
    assert check_sequence(["C3", "C5", "C6"], np.array([[0, 0], [0, 100], [0, 150.0]])).order == (0, 1, 2)
    assert check_sequence(["a", "b"], np.array([[0, 0], [0, 1e-4]])).image_reason
