"""The detector's wider training world (issue #33): C2 and T1 annotated as anchors, views in wrong poses trained
flat, crops that start anywhere, and appearance families that never move a vertebra."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from vcorner.cli import app
from vcorner.config import DetectionConfig
from vcorner.training.appearance import collimate, markers, slanted_cut, vary_appearance
from vcorner.training.detector_data import (
    channel_names,
    crop_box,
    epoch_views,
    flat_map,
    hide,
    in_box,
    level_box,
    load_detector_images,
    view_zoom,
)
from vcorner.training.detector_recipe import AugmentSpec


@pytest.fixture(scope="module")
def context_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("context")
    plain = root / "plain"
    for style, folder in (("train", plain), ("context", root / "ctx")):
        result = CliRunner().invoke(app, ["synth", str(folder), "--images", "4", "--seed", "3", "--style", style,
                                          "--workers", "1"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return plain, root / "ctx"


def test_the_context_style_adds_c2_and_t1_to_the_same_films(context_set):
    plain, ctx = context_set
    a, b = (json.loads((f / "annotations.json").read_text())["images"] for f in (plain, ctx))
    for one, two in zip(a, b, strict=True):
        assert (plain / one["file"]).read_bytes() == (ctx / two["file"]).read_bytes()
        names = [v["name"] for v in two["vertebrae"]]
        assert names[names.index("C3"):names.index("C7") + 1] == ["C3", "C4", "C5", "C6", "C7"]
        assert set(names) - {"C3", "C4", "C5", "C6", "C7"} <= {"C2", "T1"} and "C2" in names
        same = {v["name"]: v for v in one["vertebrae"]}
        for v in two["vertebrae"]:
            if v["name"] in same:
                assert v["center"] == same[v["name"]]["center"]


def test_training_views_in_wrong_poses_are_flat_and_crops_keep_two_centres(context_set):
    _, ctx = context_set
    augment = AugmentSpec(rotation_deg=45.0, negatives=0.0, wrong_views=1.0, appearance=1.0, crop=1.0)
    config = DetectionConfig(input_size=64)
    images = load_detector_images(ctx, 64, view_zoom(augment))
    names = channel_names([im.record for im in images])
    assert names == ("C2", "C3", "C4", "C5", "C6", "C7", "T1")
    x, y, c = next(epoch_views(images, names, config, augment, np.random.default_rng(1)))
    assert x.shape == (8, 1, 64, 64) and np.isfinite(x).all()
    flat = np.all(np.isclose(y, flat_map(64)), axis=(1, 2, 3))
    assert flat.sum() >= 4  # the four wrong-pose views (some cropped films may lose every name to a blade too)
    assert np.isnan(c[flat]).all()
    rng = np.random.default_rng(2)
    for image in images:
        box = crop_box(image, rng)
        assert box is not None and in_box(image.record.centers, box).sum() >= 2


def test_level_cuts_fall_between_vertebrae_and_start_and_end_at_every_level(context_set):
    plain, _ = context_set
    image = load_detector_images(plain, 64, 1.0)[0]
    names = [v.name for v in image.record.vertebrae]
    ys = image.record.centers[:, 1]
    spans, rng = set(), np.random.default_rng(0)
    for _ in range(400):
        x0, y0, x1, y1 = level_box(image, rng)
        inside = in_box(image.record.centers, (x0, y0, x1, y1))
        assert inside.sum() >= 2 and (np.flatnonzero(inside) == np.arange(inside.argmax(), inside.argmax()
                                                                            + inside.sum())).all()
        assert x1 - x0 >= 0.6 * image.shape[1] - 1e-6
        gaps = np.abs(np.subtract.outer([y0, y1], ys)).min(axis=1) / np.diff(ys).min()
        assert (gaps >= 0.3 - 1e-9).all() or y0 == 0.0 or y1 == image.shape[0]  # never across a centre
        spans.add((names[inside.argmax()], names[len(inside) - 1 - inside[::-1].argmax()]))
    # every run of two or more levels is cut, the films that start at C5 and those that end at it among them
    assert spans == {(a, b) for i, a in enumerate(names) for b in names[i + 1:]}


def test_appearance_changes_keep_vertebrae_free_and_blades_hide_what_lies_under_them():
    rng = np.random.default_rng(0)
    view = rng.standard_normal((64, 64)).astype(np.float32)
    centres = np.array([[32.0, 32.0], [np.nan, np.nan]])
    marked = markers(view, rng, centres)
    assert abs(marked[28:37, 28:37] - (view[28:37, 28:37] - view.mean()) / view.std()).max() < 0.5
    out, hidden = collimate(view, np.random.default_rng(3))
    assert hidden.any() and np.isfinite(out).all() and abs(out.mean()) < 1e-4
    targets = np.stack([flat_map(64)] * 2) * 0 + 1.0
    where = np.argwhere(hidden)[0][::-1].astype(float)
    y, c = hide(targets, np.array([where, [32.0, 32.0]]) if not hidden[32, 32] else np.array([where, where]), hidden)
    assert np.isnan(c[0]).all() and np.allclose(y[0], flat_map(64))
    for seed in range(20):
        changed, _ = vary_appearance(view, np.random.default_rng(seed), centres)
        assert changed.shape == view.shape and np.isfinite(changed).all()


def test_a_slanted_cut_ends_the_view_near_an_end_vertebra_and_never_hides_a_neighbour():
    """The fill wedge of a film turned in its frame (augment.slanted_cut): a slanted half-plane beyond the first or
    the last centre that hides that centre on some draws and never a centre further in."""
    view = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    centres = np.array([[30.0, 8.0], [32.0, 20.0], [34.0, 32.0], [np.nan, np.nan], [36.0, 44.0]])
    seen = centres[[0, 1, 2, 4]]
    top, bottom, slanted, draws = 0, 0, 0, 400
    for seed in range(draws):
        out, hidden = slanted_cut(view, centres, np.random.default_rng(seed))
        assert np.isfinite(out).all() and (not hidden.any() or np.allclose(out[hidden], out.min()))
        under = [bool(hidden[int(y), int(x)]) for x, y in seen]
        assert not any(under[1:3]) and not (under[0] and under[3])  # inner centres stay; one end at most
        top, bottom = top + under[0], bottom + under[3]
        slanted += bool(np.abs(np.gradient(hidden.astype(float), axis=1)).sum() > 0
                        and np.abs(np.gradient(hidden.astype(float), axis=0)).sum() > 0)
    # an end centre lies beyond the edge when the depth drawn from SLANT_DEPTH is negative: 0.45 / 1.45 of draws
    assert 0.2 < (top + bottom) / draws < 0.42 and top > 0 and bottom > 0
    assert slanted > draws / 2
    y, c = hide(np.ones((5, 64, 64)), centres, slanted_cut(view, centres, np.random.default_rng(7))[1])
    assert np.isfinite(c[1:3]).all() and np.allclose(y[1], 1.0)
    assert not slanted_cut(view, np.array([[30.0, 8.0], [np.nan, np.nan]]), np.random.default_rng(0))[1].any()


def test_upside_down_weighs_the_wrong_views_toward_the_film_flipped_top_to_bottom():
    from vcorner.training.detector_data import wrong_view

    x = np.arange(64, dtype=np.float32).reshape(1, 8, 8)
    flipped = x[:, ::-1, :]
    rng = np.random.default_rng(0)
    always = [wrong_view(x, rng, upside_down=1.0) for _ in range(20)]
    assert all(np.array_equal(v, flipped) for v in always)
    evenly = [wrong_view(x, rng) for _ in range(700)]
    share = np.mean([np.array_equal(v, flipped) for v in evenly])
    assert 0.08 < share < 0.22  # one wrong pose in seven
    assert not any(np.array_equal(v, x) for v in evenly)  # never the learned pose
