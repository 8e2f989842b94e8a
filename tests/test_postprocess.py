"""Post-processing: numba kernels against their NumPy references, background removal, decoding end to end."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import make_spine
from vcorner.config import DecodeConfig, SamplingConfig
from vcorner.geometry.frames import Frames, frames_from_centers, rotation
from vcorner.geometry.patches import apply_affine, invert_affines, patch_affines, sample_poses
from vcorner.postprocess import reference
from vcorner.postprocess.background import remove_background
from vcorner.postprocess.decode import (
    COV_FLOOR_PX2,
    accumulate_image,
    covariance_ellipse,
    decode_image,
    decode_vertebra,
    vertebra_region,
)
from vcorner.postprocess.kernels import backproject, quadrant_argmax, refine_corner
from vcorner.postprocess.prior import ANY, CornerPrior

ORIGIN, SHAPE = (10, 20), (40, 50)


def random_affines(rng: np.random.Generator, count: int, n: int) -> np.ndarray:
    """(count, 2, 3) patch-to-image affines: random rotation, scale and shear, centres around the region.

    Centres range past the region's edges so that some patches are cut off, and the last patch lies
    entirely outside it.
    """
    linear = rotation(rng.uniform(-np.pi, np.pi, count)) * rng.uniform(0.5, 2.5, (count, 1, 1))
    linear += rng.normal(0.0, 0.2, (count, 2, 2))
    centres = np.array(ORIGIN) + rng.uniform(-10, 10, (count, 2)) + rng.uniform(0, 1, (count, 2)) * SHAPE[::-1]
    centres[-1] = [ORIGIN[0] - 300.0, ORIGIN[1]]
    translation = centres - linear @ np.full(2, (n - 1) / 2.0)
    return np.concatenate([linear, translation[:, :, None]], axis=2)


def gaussian_maps(points: np.ndarray, n: int, sd: float) -> np.ndarray:
    """(P, N, N) float32 maps, each the sum of unit-peak Gaussians at its (K, 2) patch points (u, v)."""
    v, u = np.mgrid[0:n, 0:n].astype(np.float64)
    d2 = (u[None, None] - points[:, :, 0, None, None]) ** 2 + (v[None, None] - points[:, :, 1, None, None]) ** 2
    return np.exp(-0.5 * d2 / sd**2).sum(axis=1).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backproject_matches_reference(seed):
    rng = np.random.default_rng(seed)
    maps = rng.random((6, 16, 16), dtype=np.float32)
    to_patch = invert_affines(random_affines(rng, 6, 16))
    fast = backproject(maps, to_patch, ORIGIN, SHAPE)
    slow = reference.backproject(maps, to_patch, ORIGIN, SHAPE)
    assert fast.shape == SHAPE and fast.dtype == np.float32
    assert np.count_nonzero(slow) > 100
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-5)


def test_backproject_of_a_shifted_patch_is_the_patch():
    maps = np.arange(2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16)
    patch_to_image = np.array([[[1.0, 0.0, ORIGIN[0] + 3], [0.0, 1.0, ORIGIN[1] + 2]]] * 2)
    out = backproject(maps, invert_affines(patch_to_image), ORIGIN, SHAPE)
    np.testing.assert_allclose(out[2:18, 3:19], maps.mean(axis=0))
    assert out.sum() == pytest.approx(maps.mean(axis=0).sum())
    assert not backproject(maps[:0], patch_to_image[:0], ORIGIN, SHAPE).any()


def test_backproject_agrees_loosely_with_the_cv2_loop():
    rng = np.random.default_rng(3)
    affines = random_affines(rng, 5, 64)
    maps = gaussian_maps(rng.uniform(16, 48, (5, 2, 2)), 64, sd=4.0)  # smooth, near zero at the edges
    fast = backproject(maps, invert_affines(affines), ORIGIN, SHAPE)
    loop = reference.backproject_cv2(maps, affines, ORIGIN, SHAPE)
    assert np.abs(fast - loop).max() < 0.02 * fast.max()


def quadrant_case(seed: int) -> tuple:
    """Random arguments of ``quadrant_argmax`` over the module's region (the centre inside it)."""
    rng = np.random.default_rng(seed)
    acc = rng.random(SHAPE, dtype=np.float32)
    center = np.array(ORIGIN) + rng.uniform(0.3, 0.7, 2) * SHAPE[::-1]
    axes = rotation(rng.uniform(-np.pi, np.pi))
    means = center + rng.normal(0.0, 8.0, (4, 2))
    root = rng.normal(0.0, 0.2, (4, 2, 2))
    inv_cov = root @ root.transpose(0, 2, 1) + 0.01 * np.eye(2)
    return acc, ORIGIN, center, axes, 20.0, means, inv_cov, 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "peaked"])
def test_quadrant_argmax_matches_reference(seed, sparse):
    """Dense random maps, and peaked ones (mostly exact zeros, ties broken row-major) as the network's are."""
    args = quadrant_case(seed)
    if sparse:
        acc = args[0]
        args = (np.where(acc > 0.97, acc, 0.0).astype(np.float32), *args[1:])
    peaks, values = quadrant_argmax(*args)
    ref_peaks, ref_values = reference.quadrant_argmax(*args)
    np.testing.assert_array_equal(peaks, ref_peaks)
    np.testing.assert_allclose(values, ref_values, rtol=0, atol=1e-5)
    assert np.all(peaks >= 0) and np.all(values >= 0)


def test_quadrant_argmax_reports_quadrants_outside_the_region():
    acc, _, center, _, size, means, inv_cov, radius = quadrant_case(4)
    axes = np.eye(2)
    origin = (int(np.ceil(center[0])) + 1, ORIGIN[1])  # the region starts right of the centre: no left half
    peaks, values = quadrant_argmax(acc, origin, center, axes, size, means, inv_cov, radius)
    ref_peaks, ref_values = reference.quadrant_argmax(acc, origin, center, axes, size, means, inv_cov, radius)
    np.testing.assert_array_equal(peaks, ref_peaks)
    np.testing.assert_array_equal(peaks[[0, 2]], -1)
    np.testing.assert_array_equal(values[[0, 2]], -1.0)
    assert np.all(peaks[[1, 3]] >= 0)


def test_remove_background_properties():
    rng = np.random.default_rng(0)
    maps = 0.3 + 0.05 * rng.random((4, 16, 16), dtype=np.float32)
    maps[:, 5, 7] = 2.0
    maps[1] = 0.25  # flat
    maps[2, 0, 0] = np.nan
    out = remove_background(maps, 0.75)
    assert out.shape == maps.shape and out.dtype == np.float32
    assert np.all(out >= 0.0) and np.all(out <= 1.0)
    np.testing.assert_array_equal(out.max(axis=(1, 2)), [1.0, 0.0, 1.0, 1.0])
    assert np.all(np.mean(out[[0, 2, 3]] == 0.0, axis=(1, 2)) >= 0.75)  # the quantile's share is background
    assert out[2, 0, 0] == 0.0
    # Invariant to a positive gain and an offset (what the spatial normalization leaves free).
    np.testing.assert_allclose(remove_background(3.0 * maps[[0, 3]] + 7.0, 0.75), out[[0, 3]], atol=1e-5)
    assert not remove_background(np.zeros((2, 8, 8), np.float32), 0.5).any()
    with pytest.raises(ValueError, match="quantile"):
        remove_background(maps, 1.5)


def test_covariance_ellipse_of_a_known_covariance():
    def cov(sd_major: float, sd_minor: float, angle_deg: float) -> np.ndarray:
        r = rotation(np.deg2rad(angle_deg))
        return r @ np.diag([sd_major**2, sd_minor**2]) @ r.T

    major, minor, angle = covariance_ellipse(np.stack([cov(3, 1, 30), cov(3, 1, -60), cov(2, 1, 90), cov(1, 1, 0)]))
    np.testing.assert_allclose(major, [3, 3, 2, 1])
    np.testing.assert_allclose(minor, [1, 1, 1, 1])
    np.testing.assert_allclose(angle, [30, -60, 90, 0], atol=1e-9)


def test_quadratic_offset_recovers_a_gaussian_peak():
    y, x = np.mgrid[-1:2, -1:2].astype(np.float64)
    f = np.exp(-0.5 * ((x - 0.3) ** 2 / 4.0 + (y + 0.2) ** 2 / 2.0))
    np.testing.assert_allclose(reference.quadratic_offset(f), [0.3, -0.2], atol=1e-9)
    assert not reference.quadratic_offset(np.ones((3, 3))).any()


def test_refine_corner_recovers_a_gaussian_peak_and_its_spread():
    """A Gaussian peak under a flat prior: the kernel's position is the sub-pixel peak, its covariance grows with
    the peak's spread."""
    y, x = np.mgrid[0:21, 0:21].astype(np.float64)
    flat = np.zeros((2, 2))

    def refined(sd: float) -> tuple[np.ndarray, np.ndarray]:
        acc = np.exp(-0.5 * ((x - 10.3) ** 2 + (y - 9.8) ** 2) / sd**2).astype(np.float32)
        return refine_corner(acc, (100, 200), np.array([10, 10]), np.zeros(2), flat, 4, 4.0, 1.0, COV_FLOOR_PX2,
                             True)

    xy, cov = refined(2.0)
    np.testing.assert_allclose(xy, [110.3, 209.8], atol=1e-3)
    assert cov[0, 1] == cov[1, 0] and np.all(np.linalg.eigvalsh(cov) > COV_FLOOR_PX2)
    assert np.trace(refined(3.0)[1]) > np.trace(cov)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "peaked"])
def test_refine_corner_matches_reference(seed, sparse):
    """Peaks anywhere (also on the map's edges, where the window is cut and no sub-pixel fit is made), on dense
    maps and on peaked ones whose zeros make the fit run on the map instead of its log."""
    rng = np.random.default_rng(seed)
    acc = rng.random((30, 40), dtype=np.float32)
    if sparse:
        acc = np.where(acc > 0.8, acc, 0.0).astype(np.float32)
    for trial in range(40):
        peak = np.array([rng.integers(0, 30), rng.integers(0, 40)])
        if trial < 4:
            peak = np.array([[0, 0], [29, 39], [0, 39], [29, 0]][trial])
        mean = np.array(ORIGIN) + peak[::-1] + rng.normal(0.0, 3.0, 2)
        root = rng.normal(0.0, 0.3, (2, 2))
        inv_cov = root @ root.T + 0.01 * np.eye(2)
        reach, radius = (1, 1.0) if trial % 5 == 0 else (4, 4.0)
        args = (acc, ORIGIN, peak, mean, inv_cov, reach, radius, 1.741, COV_FLOOR_PX2, trial % 3 != 0)
        xy, cov = refine_corner(*args)
        ref_xy, ref_cov = reference.refine_corner(*args)
        np.testing.assert_allclose(xy, ref_xy, rtol=0, atol=1e-9)
        np.testing.assert_allclose(cov, ref_cov, rtol=1e-9, atol=1e-12)


def test_vertebra_region_is_clipped_to_the_image():
    frames = frames_from_centers(np.array([[5.0, 10.0], [5.0, 30.0]]))  # size 20
    assert vertebra_region(frames, 0, 1.0, (100, 100)) == ((0, 0), (31, 26))
    assert vertebra_region(frames, 1, 1.0, (35, 100)) == ((0, 10), (25, 26))
    assert vertebra_region(frames, 1, 1.0, (5, 100))[1][0] == 0


# --- decoding end to end on synthetic maps ---------------------------------------------------------------

SAMPLING = SamplingConfig()
IMAGE_SHAPE = (360, 320)


def shifted_prior(frames: Frames, corners: np.ndarray, shift: float = 0.03) -> CornerPrior:
    """A pooled prior ``shift`` sizes off the true frame corners (both axes), standard deviation 0.05 sizes."""
    mean = frames.to_frame(0, corners[0]) + shift
    cov = np.tile(0.05**2 * np.eye(2), (4, 1, 1))
    return CornerPrior(means={ANY: mean}, covariances={ANY: cov}, counts={ANY: 100})


def synthetic_outputs(frames: Frames, corners: np.ndarray, flat: int, seed: int = 0) -> tuple:
    """'Perfect' network outputs: Gaussians at each vertebra's own corners in its patches, a background
    level, noise and a zero border; the patches of vertebra ``flat`` are constant."""
    rng = np.random.default_rng(seed)
    poses = sample_poses(SAMPLING)
    affines = np.concatenate([patch_affines(frames, i, poses, SAMPLING) for i in range(len(frames))])
    owner = np.repeat(np.arange(len(frames)), len(poses))
    to_patch = invert_affines(affines)
    points = np.stack([apply_affine(a, corners[v]) for a, v in zip(to_patch, owner, strict=True)])
    n = SAMPLING.patch_size
    maps = gaussian_maps(points, n, sd=2.5) + 0.3 + 0.03 * rng.random((len(owner), n, n), dtype=np.float32)
    maps[owner == flat] = 0.25
    maps[:, [0, -1], :] = 0.0
    maps[:, :, [0, -1]] = 0.0
    return maps / maps.sum(axis=(1, 2), keepdims=True), affines, owner


@pytest.mark.parametrize(("shift", "tolerance_px"), [(0.0, 0.1), (0.03, 1.0)])
def test_decode_image_finds_the_true_corners_and_falls_back_to_the_prior(shift, tolerance_px):
    # A prior 0.03 sizes (1.8 px) off on both axes pulls the weighted peak by about 0.5 px per axis.
    spine = make_spine(n=4, angle_deg=10.0, size=60.0)
    corners = np.stack([v.corners for v in spine.vertebrae])
    frames = frames_from_centers(spine.centers)
    prior, config = shifted_prior(frames, corners, shift), DecodeConfig()
    maps, affines, owner = synthetic_outputs(frames, corners, flat=2)
    names = [v.name for v in spine.vertebrae]
    found = decode_image(maps, affines, owner, frames, names, prior, IMAGE_SHAPE, config)
    assert [f.name for f in found] == names
    for index in (0, 1, 3):
        assert found[index].source == ("network",) * 4
        assert np.linalg.norm(found[index].xy - corners[index], axis=1).max() < tolerance_px
        assert np.all(found[index].confidence > 0.5) and np.all(found[index].confidence <= 1.0)
        assert np.all(np.linalg.eigvalsh(found[index].cov) > 0.0)
        assert np.all(found[index].ellipses()[:, 0] < 5.0)
    means, covs = prior.in_image(frames, 2, names[2])
    assert found[2].source == ("prior",) * 4
    np.testing.assert_allclose(found[2].xy, means)
    np.testing.assert_allclose(found[2].cov, covs)
    assert not found[2].confidence.any()


def test_accumulated_maps_and_a_vertebra_outside_the_image():
    spine = make_spine(n=3)
    corners = np.stack([v.corners for v in spine.vertebrae])
    frames = frames_from_centers(spine.centers)
    prior, config = shifted_prior(frames, corners), DecodeConfig()
    maps, affines, owner = synthetic_outputs(frames, corners, flat=-1)
    accumulated = accumulate_image(maps, affines, owner, frames, IMAGE_SHAPE, config)
    for index, m in enumerate(accumulated):
        assert (m.origin, m.acc.shape) == vertebra_region(frames, index, config.search_radius, IMAGE_SHAPE)
        assert 0.5 < m.acc.max() <= 1.0
    lost = decode_vertebra(np.zeros((0, 0), np.float32), (0, 0), frames, 1, "C4", prior, config)
    assert lost.source == ("prior",) * 4
    with pytest.raises(ValueError, match="disagree"):
        accumulate_image(maps, affines[:-1], owner, frames, IMAGE_SHAPE, config)


def test_serial_kernels_from_many_threads_match_the_parallel_ones():
    """The batch's finisher threads call the single-threaded builds concurrently, without the lock."""
    from concurrent.futures import ThreadPoolExecutor

    from vcorner.postprocess.kernels import use_serial_kernels

    rng = np.random.default_rng(7)
    cases = [(rng.random((6, 16, 16), dtype=np.float32), invert_affines(random_affines(rng, 6, 16)))
             for _ in range(8)]
    expected = [backproject(maps, to_patch, ORIGIN, SHAPE) for maps, to_patch in cases]
    peaks_args = quadrant_case(3)
    expected_peaks = quadrant_argmax(*peaks_args)

    def serial(case):
        use_serial_kernels()
        try:
            return backproject(*case, ORIGIN, SHAPE), quadrant_argmax(*peaks_args)
        finally:
            use_serial_kernels(False)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(serial, cases * 4))
    for (out, peaks), want in zip(results, expected * 4, strict=True):
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(peaks[0], expected_peaks[0])
        np.testing.assert_array_equal(peaks[1], expected_peaks[1])


def test_a_fitted_corner_offset_moves_maps_that_peak_inside_the_corners_back_onto_them():
    # Maps whose peaks sit inside each corner by a known frame offset (as the ground truth's corner-weighted
    # boundary lines do): tune's fit recovers the offset, and decoding with it lands on the true corners.
    from types import SimpleNamespace

    from vcorner.evaluation.tune import fit_corner_offset

    spine = make_spine(n=4, angle_deg=10.0, size=60.0)
    corners = np.stack([v.corners for v in spine.vertebrae])
    frames = frames_from_centers(spine.centers)
    inward = np.array([[0.02, 0.015], [-0.025, 0.01], [0.015, -0.02], [-0.01, -0.03]])  # frame units, per corner
    peaks = np.stack([frames.to_image(i, frames.to_frame(i, corners[i]) + inward) for i in range(len(frames))])
    maps, affines, owner = synthetic_outputs(frames, peaks, flat=2)
    names = [v.name for v in spine.vertebrae]
    prior = shifted_prior(frames, corners, 0.0)
    job = SimpleNamespace(name=spine.file, maps=maps[:, None], affines=affines, owner=owner, frames=frames,
                          shape=IMAGE_SHAPE, names=names)
    card = SimpleNamespace(prior=prior)
    config = DecodeConfig(prior_inflation=1e6)
    offset = fit_corner_offset([(job, spine)], card, config)
    np.testing.assert_allclose(np.reshape(offset, (4, 2)), -inward, atol=0.003)
    before = decode_image(maps, affines, owner, frames, names, prior, IMAGE_SHAPE, config)
    after = decode_image(maps, affines, owner, frames, names, prior, IMAGE_SHAPE,
                         DecodeConfig(prior_inflation=1e6, corner_offset=offset))
    for index in (0, 1, 3):
        assert np.linalg.norm(before[index].xy - corners[index], axis=1).min() > 0.9  # 0.015-0.03 sizes of 60 px
        assert np.linalg.norm(after[index].xy - corners[index], axis=1).max() < 0.3
    np.testing.assert_allclose(after[2].xy, before[2].xy)  # a prior fallback keeps the prior's mean
    with pytest.raises(ValueError, match="8 numbers"):
        DecodeConfig(corner_offset=(0.1, 0.2))
