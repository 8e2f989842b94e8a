"""The centre detector: maps per name, letterboxed views, sequence decoding, training, export, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from vcorner.config import DetectionConfig
from vcorner.geometry.letterbox import letterbox_affine, to_grid, to_image
from vcorner.geometry.views import AS_IS
from vcorner.io.records import InputError
from vcorner.models.detector_card import DetectorCard
from vcorner.postprocess.peaks import Detection, decode_detections, split_confident, window_peaks
from vcorner.stages.detect import (
    ViewAnswer,
    cut_end_pairs,
    detect_centres,
    finder_ends,
    span_lean_deg,
    unanchored,
    upright_turn,
)

NAMES = ("C3", "C4", "C5", "C6", "C7")


def gaussian(size: int, x: float, y: float, sd: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    g = np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sd**2)
    return g / g.sum()


def card(size: int = 64, names=NAMES) -> DetectorCard:
    return DetectorCard({"widths": [4, 8, 8, 16, 16], "in_channels": 1, "padding_mode": "zeros",
                         "out_channels": len(names)}, names, DetectionConfig(input_size=size), {})


def test_unet_gives_one_normalized_map_per_name_and_corner_cards_keep_their_arguments():
    torch = pytest.importorskip("torch")
    from vcorner.network.unet import create_model

    torch.manual_seed(0)  # an unseeded tiny net can end in an all-zero ReLU layer: a constant map, which sums to 0
    model = create_model("tiny", out_channels=5).eval()
    maps = model(torch.randn(2, 1, 32, 32))
    assert maps.shape == (2, 5, 32, 32)
    np.testing.assert_allclose(maps.sum(dim=(2, 3)).detach().numpy(), 1.0, atol=1e-5)
    assert "out_channels" not in create_model("tiny").constructor_args()  # corner model cards unchanged
    assert create_model("tiny", out_channels=5).constructor_args()["out_channels"] == 5


def test_letterbox_fits_the_whole_image_centred_with_its_aspect():
    affine = letterbox_affine((400, 200), 64)
    corners = np.array([[-0.5, -0.5], [199.5, 399.5]])
    grid = to_grid(affine, corners)
    assert grid[0, 1] == pytest.approx(-0.5, abs=1e-9) and grid[1, 1] == pytest.approx(63.5, abs=1e-9)
    assert grid[0, 0] == pytest.approx(15.5, abs=1e-9) and grid[1, 0] == pytest.approx(47.5, abs=1e-9)
    points = np.array([[10.0, 20.0], [150.3, 377.9]])
    np.testing.assert_allclose(to_image(affine, to_grid(affine, points)), points, atol=1e-9)


def test_window_peak_finds_a_sub_pixel_centre_and_its_mass():
    maps = gaussian(64, 20.3, 40.7, 1.5)[None]
    centre, mass = window_peaks(maps, radius=4.0)
    np.testing.assert_allclose(centre[0], [20.3, 40.7], atol=0.05)
    assert mass[0] == pytest.approx(1 - np.exp(-0.5 * (4.0 / 1.5) ** 2), abs=0.02)


def test_sequence_decoding_names_split_maps_by_their_neighbours():
    """Each name's map puts 55% of its mass on its vertebra and 45% on the next one down: read one map at a time,
    C3's would still win; read as a sequence, all five names land on their own vertebra."""
    size, ys = 96, [20.0, 34.0, 48.0, 62.0, 76.0]
    blobs = [gaussian(size, 50.0 + 0.2 * y, y, 1.5) for y in ys]
    maps = np.stack([0.55 * blobs[k] + 0.45 * blobs[min(k + 1, 4)] for k in range(5)])
    maps[1] = 0.45 * blobs[1] + 0.55 * blobs[2]  # C4's map even prefers the wrong vertebra
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    found = decode_detections(maps, NAMES, identity, radius=3.0)
    for d, y in zip(found, ys, strict=True):
        assert d.xy[1] == pytest.approx(y, abs=0.3), d.name
    assert found[1].confidence == pytest.approx(0.45 * (1 - np.exp(-0.5 * (3.0 / 1.5) ** 2)), abs=0.02)


def test_sequence_decoding_leaves_names_past_the_visible_vertebrae_at_zero_confidence():
    """Only C3-C5 are in the view (C6, C7 cut off, their maps flat): they get confidence 0 and are dropped."""
    size = 64
    flat = np.full((size, size), 1.0 / size**2)
    maps = np.stack([gaussian(size, 30, 10 + 14 * k, 1.5) for k in range(3)] + [flat, flat])
    found = decode_detections(maps, NAMES, np.array([[1.0, 0, 0], [0, 1.0, 0]]), 3.0)
    kept, dropped = split_confident(found, 0.3)
    assert [d.name for d in kept] == ["C3", "C4", "C5"] and [d.name for d in dropped] == ["C6", "C7"]
    assert max(d.confidence for d in dropped) < 0.05


def run_of(confidences: list[float], last_xy: tuple[float, float] | None = None) -> list[Detection]:
    """C3-C7 at a regular step of (-5, 40) px down a film, with these confidences (C7 at ``last_xy`` when given)."""
    found = [Detection(n, np.array([300.0 - 5 * k, 100.0 + 40 * k]), c) for k, (n, c) in
             enumerate(zip(NAMES, confidences, strict=True))]
    if last_xy is not None:
        found[-1] = Detection("C7", np.array(last_xy), confidences[-1])
    return found


def test_a_weak_name_that_continues_the_sure_run_at_its_step_is_kept_as_a_body_cut_by_the_edge():
    """C7 half cut off by the film's lower edge: its map is weak (0.08 under the 0.12 threshold) but it lies where
    C3-C6's step puts the next level. Kept within 0.2 steps (8 px here) and at half the threshold or more."""
    names = lambda ds: [d.name for d in ds]  # noqa: E731
    assert names(split_confident(run_of([0.9, 0.8, 0.8, 0.7, 0.08]), 0.12)[0]) == list(NAMES)
    assert names(split_confident(run_of([0.9, 0.8, 0.8, 0.7, 0.08], (284.0, 265.0)), 0.12)[0]) == list(NAMES)
    # half a step off (on the disc below C6), too weak, or two levels past the run (C6 too weak to continue it):
    # dropped
    assert names(split_confident(run_of([0.9, 0.8, 0.8, 0.7, 0.08], (282.0, 240.0)), 0.12)[0]) == list(NAMES[:4])
    assert names(split_confident(run_of([0.9, 0.8, 0.8, 0.7, 0.05]), 0.12)[0]) == list(NAMES[:4])
    assert names(split_confident(run_of([0.9, 0.8, 0.8, 0.01, 0.08]), 0.12)[0]) == list(NAMES[:3])
    # the cranial end alike; a single sure name has no step to continue
    assert names(split_confident(run_of([0.07, 0.8, 0.8, 0.7, 0.01]), 0.12)[0]) == list(NAMES[:4])
    assert names(split_confident(run_of([0.07, 0.8, 0.01, 0.01, 0.01]), 0.12)[0]) == ["C4"]


def test_the_view_finder_places_a_body_cut_by_the_edge_that_the_namer_hesitates_on():
    """The namer's C7 map is weak and piled on C6 (a C7 half below the film's border); the view finder, which sees
    C6 where the namer does, has C7 at the run's next step: its C7 is taken, and kept. Where the finder puts C6
    elsewhere, or C7 off the step, the namer's answer stands (and its weak C7 is dropped)."""
    namer = card()
    finder = DetectorCard({**namer.model_args, "out_channels": 7}, ("C2", *NAMES, "T1"),
                          DetectionConfig(input_size=64, min_confidence=0.1, context=("C2", "T1")), {})
    mine = run_of([0.9, 0.8, 0.8, 0.7, 0.1], (285.0, 228.0))  # C7 14 px below C6, min_confidence 0.3

    def finder_says(c6: tuple[float, float], c7: tuple[float, float]) -> ViewAnswer:
        found = [Detection("C2", np.array([305.0, 60.0]), 0.2), *run_of([0.5, 0.5, 0.5, 0.5, 0.5])[:3],
                 Detection("C6", np.array(c6), 0.5), Detection("C7", np.array(c7), 0.4),
                 Detection("T1", np.array([275.0, 300.0]), 0.02)]
        return ViewAnswer(AS_IS, found, 0.5)

    answer = ViewAnswer(AS_IS, mine, 0.5)
    taken = finder_ends(answer, namer, finder_says((286.0, 221.0), (281.0, 262.0)), finder)
    c7 = taken.found[-1]
    assert c7.confidence == 0.4 and np.allclose(c7.xy, [281.0, 262.0])
    assert [d.name for d in split_confident(taken.found, 0.3)[0]] == list(NAMES)
    assert taken.placed == {"C7"}
    for c6, c7_xy in (((286.0, 250.0), (281.0, 262.0)), ((286.0, 221.0), (281.0, 280.0))):
        kept = finder_ends(answer, namer, finder_says(c6, c7_xy), finder)
        assert kept is answer and [d.name for d in split_confident(kept.found, 0.3)[0]] == list(NAMES[:4])


def test_a_name_the_finder_placed_is_kept_but_never_continued():
    """A name the view finder placed at the run's end is kept whatever its confidence (it passed the finder's own
    threshold; here 0.12 under a raised namer threshold of 0.3), and the run it continues stays the namer's own:
    the weak name past it is not kept on its step, so at most one name goes past the namer's sure run."""
    names = lambda ds: [d.name for d in ds[0]]  # noqa: E731
    # C6 from the finder at 0.12, under the threshold: kept; C7 on the step past it (0.2, above half the threshold)
    # does not continue a run of the namer's, so it is dropped
    assert names(split_confident(run_of([0.9, 0.8, 0.8, 0.12, 0.2]), 0.3, frozenset({"C6"}))) == list(NAMES[:4])
    # the finder's C5 at 0.5, above the threshold, is not part of the namer's run either: C6 past it is dropped
    assert names(split_confident(run_of([0.9, 0.8, 0.5, 0.2, 0.01]), 0.3, frozenset({"C5"}))) == list(NAMES[:3])
    assert names(split_confident(run_of([0.9, 0.8, 0.5, 0.2, 0.01]), 0.3)) == list(NAMES[:4])  # the namer's own C5


def test_a_spine_cut_short_still_gives_its_lean_and_is_turned_upright():
    """The view finder names C3-C6 of a film turned 35 degrees and misses C7 (behind the shoulders, or cut off):
    the lean is taken on C3-C6, so the film is turned upright for the namer; two names one level apart, or names
    outside the namer's span, give no lean (and no turn)."""
    from dataclasses import replace

    finder = DetectorCard({**card().model_args, "out_channels": 7}, ("C2", *NAMES, "T1"),
                          DetectionConfig(input_size=192, min_confidence=0.1, context=("C2", "T1")), {})
    namer = card(192)
    namer = namer.with_detection(replace(namer.detection, spine_angle_deg=0.0, align_deg=15.0))
    lean = np.radians(35.0)
    down = np.array([np.sin(lean), np.cos(lean)])  # 35 degrees from straight down towards +x
    at = {name: np.array([60.0, 30.0]) + 25.0 * i * down for i, name in enumerate(("C2", *NAMES, "T1"))}

    def seen(*names: str) -> ViewAnswer:
        return ViewAnswer(AS_IS, [Detection(n, at[n], 0.5 if n in names else 0.02) for n in at], 0.5)

    shape = (192, 192)
    assert span_lean_deg(seen("C3", "C4", "C5", "C6", "C7"), finder, shape, ("C3", "C7")) == pytest.approx(35.0)
    assert span_lean_deg(seen("C2", "C3", "C4", "C5", "C6"), finder, shape, ("C3", "C7")) == pytest.approx(35.0)
    assert upright_turn(seen("C3", "C4", "C5", "C6"), finder, shape, namer) == pytest.approx(-35.0)
    assert upright_turn(seen("C4", "C6"), finder, shape, namer) == pytest.approx(-35.0)
    assert span_lean_deg(seen("C5", "C6", "T1"), finder, shape, ("C3", "C7")) is None
    assert upright_turn(seen("C2", "C3", "T1"), finder, shape, namer) == 0.0


def test_a_weak_c2_on_the_finders_own_step_anchors_the_levels():
    """A film cut to C2-C5: the view finder's C2 map is weak (the dens cut, or faint), under its threshold (0.1)
    but above half of it, where the step of its confident C3-C5 puts the level above: the levels are anchored, as a
    body cut by the film's edge is kept. Off that step, or too weak, they are not."""
    finder = DetectorCard({**card().model_args, "out_channels": 7}, ("C2", *NAMES, "T1"),
                          DetectionConfig(input_size=64, min_confidence=0.1, context=("C2", "T1")), {})

    def film(c2_xy: tuple[float, float], c2_confidence: float) -> ViewAnswer:
        run = [Detection(n, np.array([300.0, 100.0 + 40.0 * i]), 0.5) for i, n in enumerate(("C3", "C4", "C5"))]
        flat = [Detection(n, np.array([300.0, 300.0]), 0.01) for n in ("C6", "C7", "T1")]
        return ViewAnswer(AS_IS, [Detection("C2", np.array(c2_xy), c2_confidence), *run, *flat], 0.5)

    assert not unanchored(film((300.0, 60.0), 0.5), finder)  # a sure C2
    assert not unanchored(film((302.0, 63.0), 0.06), finder)  # weak, on the step (0.09 steps off)
    assert unanchored(film((300.0, 80.0), 0.06), finder)  # weak, half a step off: on C3's upper endplate
    assert unanchored(film((300.0, 60.0), 0.04), finder)  # on the step, too weak


def test_the_outer_of_two_names_piled_on_one_body_at_an_end_is_not_found():
    """A film cut below C4: the C5 map piles on C4's body (6 px from the namer's C4, 40 px between levels). The
    centre checks would refuse both; the outer name (C5) is taken as not found, C3 and C4 stay. The same at the
    cranial end, and with only three sure names (the pile is measured against the step next to it); two names apart
    in the middle, or only two sure names, change nothing."""
    namer = card()

    def names(*ys_confidences) -> ViewAnswer:
        return ViewAnswer(AS_IS, [Detection(n, np.array([300.0, y]), c) for n, (y, c) in zip(NAMES, ys_confidences,
                                                                                                  strict=True)], 0.5)

    def kept(answer: ViewAnswer) -> list[str]:
        return [d.name for d in cut_end_pairs(answer, namer).found if d.confidence >= 0.3]

    cut = names((100.0, 0.9), (140.0, 0.8), (146.0, 0.6), (150.0, 0.01), (150.0, 0.01))
    assert kept(cut) == ["C3", "C4"]
    assert kept(names((104.0, 0.6), (100.0, 0.8), (140.0, 0.8), (180.0, 0.8), (220.0, 0.01))) == ["C4", "C5", "C6"]
    whole = names((100.0, 0.9), (140.0, 0.8), (180.0, 0.8), (220.0, 0.7), (260.0, 0.5))
    assert cut_end_pairs(whole, namer) is whole
    two = names((100.0, 0.9), (104.0, 0.8), (146.0, 0.01), (150.0, 0.01), (150.0, 0.01))
    assert cut_end_pairs(two, namer) is two
    # three names, two of them piled 11 px apart 40 px below C3 (the typical spacing, the median of 40, 25.5 and 11
    # px per level, is 25.5: 11 px is more than 0.4 of it, but a quarter of the step from C3 to C4)
    piled = names((100.0, 0.9), (140.0, 0.8), (151.0, 0.6), (150.0, 0.01), (150.0, 0.01))
    assert kept(piled) == ["C3", "C4"]
    steady = names((100.0, 0.9), (140.0, 0.8), (170.0, 0.6), (150.0, 0.01), (150.0, 0.01))  # 30 px: 0.75 step
    assert cut_end_pairs(steady, namer) is steady


def test_flat_maps_mean_no_vertebrae_found():
    size = 64
    infer = lambda batch: np.full((len(batch), 5, size, size), 1.0 / size**2, np.float32)  # noqa: E731
    pyramid = [np.random.default_rng(0).random((300, 200), dtype=np.float32)]
    with pytest.raises(InputError, match="no vertebrae found"):
        detect_centres(pyramid, (300, 200), "blank.png", None, card(size), infer)


def test_a_detected_centre_out_of_line_is_left_out_like_a_clicked_one():
    """C3-C6 ten pixels apart down the image, C7 far off to the side: the centre checks leave C7 out, with its
    reason for errors.csv, and the other four get corners."""
    size = 64
    spots = [(20, 10), (20, 20), (20, 30), (20, 40), (58, 60)]
    maps = np.stack([gaussian(size, x, y, 1.5) for x, y in spots]).astype(np.float32)
    found = detect_centres([np.zeros((64, 64), np.float32)], (64, 64), "a.png", None, card(size),
                           lambda batch: maps[None])
    assert [v.name for v in found.listed.vertebrae] == list(NAMES)
    assert [v.name for v in found.record.vertebrae] == ["C3", "C4", "C5", "C6"]
    assert "C7" in found.left_out and "C7" in found.left_out["C7"]


def test_a_detector_card_with_the_wrong_count_of_names_is_refused():
    with pytest.raises(InputError, match="names"):
        DetectorCard({"widths": [4, 8], "out_channels": 5}, ("C3", "C4"), DetectionConfig(), {})
    with pytest.raises(InputError, match="not a vcorner centre detector"):
        DetectorCard.from_dict({"format": "vcorner-card/1"})


def test_a_tiny_detector_learns_and_exports_with_parity(toy_dataset, tmp_path):
    """A tiny detector trained for a few dozen steps on four toy spines: validation BC rises well above its first
    epoch's; the ONNX export matches torch eager (max difference <= 1e-5 of the maps' peak); ONNX Runtime runs it
    through the same runner as the corner model, and the wrong kind of model is refused."""
    pytest.importorskip("torch")
    from vcorner.backends import open_detector
    from vcorner.config import DetectionConfig
    from vcorner.export.onnx_export import export_checkpoint, max_abs_difference
    from vcorner.network.checkpoint import load_model
    from vcorner.training.detector_recipe import AugmentSpec, DetectorOptim, DetectorRecipe
    from vcorner.training.detector_trainer import train_detector
    from vcorner.training.recipe import ModelSpec

    recipe = DetectorRecipe(model=ModelSpec(recipe="tiny"), detection=DetectionConfig(input_size=64, sigma=0.2),
                            augment=AugmentSpec(zoom=(0.95, 1.05), rotation_deg=3.0, shift=0.02, negatives=0.0),
                            train=DetectorOptim(epochs=60, batch_size=3, lr=1e-2, val_fraction=0.25))
    result = train_detector(toy_dataset, recipe, tmp_path / "run")
    chosen = result.final["margins_chosen_on"]  # the naming margin, set on the validation films' own
    assert chosen["val_films"] == 1 and chosen["wrong_view_chosen"] == 0
    first, best = result.history[0]["val_bc"], max(h["val_bc"] for h in result.history)
    assert best > first + 0.1, (first, best)
    model, card = load_model(tmp_path / "run", DetectorCard)
    assert card.names == ("C3", "C4", "C5", "C6", "C7") and card.training["task"] == "detector"
    onnx = export_checkpoint(tmp_path / "run", tmp_path / "det.onnx", card_type=DetectorCard)
    views = np.random.default_rng(0).standard_normal((2, 1, 64, 64)).astype(np.float32)
    import torch

    with torch.no_grad():
        peak = float(model(torch.from_numpy(views)).max())
    assert max_abs_difference(model, onnx, views) <= 1e-5 * peak
    runner, opened = open_detector(onnx)
    with runner:
        assert runner.infer(views).shape == (2, 5, 64, 64)
    assert opened.names == card.names
    from vcorner.models.modelfile import default_model_path

    with pytest.raises(InputError, match="not a vcorner centre detector"):
        open_detector(default_model_path())
    # the threshold is chosen on the centres of the names it outputs: a context name (an anchor) is left out
    from dataclasses import replace

    from vcorner.training.detector_data import load_detector_images
    from vcorner.training.detector_trainer import confidences

    images = load_detector_images(toy_dataset, recipe.detection.input_shape, 1.0)
    found, _ = confidences(model, images, card.names, recipe, torch.device("cpu"))
    anchored = replace(recipe, detection=replace(recipe.detection, context=("C3", "C7")))
    outputs, _ = confidences(model, images, card.names, anchored, torch.device("cpu"))
    assert len(found) - 2 * len(images) <= len(outputs) < len(found) and set(outputs) < set(found)


def test_monotone_assignment_skips_a_spurious_candidate_and_keeps_names_in_order():
    from vcorner.postprocess.peaks import monotone_assignment

    mass = np.array([[0.6, 0.1, 0.0, 0.0],   # C3
                     [0.1, 0.3, 0.2, 0.3],   # C4: split; C5 below must come after it
                     [0.0, 0.3, 0.1, 0.3],   # C5
                     ])
    assert monotone_assignment(mass) == [0, 1, 3]
    assert monotone_assignment(np.zeros((3, 2))) == [None, None, None]


def test_a_degenerate_map_is_not_a_detection():
    """A map with its mass on a few pixels (a normalized, nearly constant activation) gives confidence 0."""
    size = 64
    spike = np.zeros((size, size))
    spike[30:32, 30:34] = 1.0 / 8
    flat = np.full((size, size), 1.0 / size**2)
    found = decode_detections(np.stack([spike, flat, flat, flat, flat]), NAMES, np.array([[1.0, 0, 0], [0, 1.0, 0]]),
                              3.0)
    assert max(d.confidence for d in found) < 0.01


def test_missing_names_weigh_absent_weight_in_the_detector_loss():
    """A missing name's flat target counts ``absent_weight`` against 1 for a present name: at 1 the loss is the
    plain mean BC, at 0 whatever the network puts in a missing name's map changes nothing."""
    import torch

    from vcorner.network.loss import bhattacharyya
    from vcorner.training.detector_trainer import detector_loss

    rng = np.random.default_rng(0)
    size = (8, 6)
    target = np.full((1, 2, *size), 1.0 / 48, dtype=np.float32)
    target[0, 0] = 0.0
    target[0, 0, 3, 2] = 1.0
    centres = np.array([[[2.0, 3.0], [np.nan, np.nan]]])

    def maps(absent: np.ndarray) -> torch.Tensor:
        present = rng.random(size).astype(np.float32)
        return torch.from_numpy(np.stack([present / present.sum(), absent / absent.sum()])[None])

    spread, peaked = np.ones(size, np.float32), np.eye(*size, dtype=np.float32) + 1e-3
    first, second = maps(spread), maps(peaked)
    second[0, 0] = first[0, 0]
    y = torch.from_numpy(target)
    plain = -2.0 * bhattacharyya(y.flatten(0, 1)[:, None], first.flatten(0, 1)[:, None]).mean()
    assert float(detector_loss(first, y, centres, 0.0, 1.0)) == pytest.approx(float(plain), abs=1e-6)
    assert float(detector_loss(first, y, centres, 0.0, 0.0)) == pytest.approx(
        float(detector_loss(second, y, centres, 0.0, 0.0)), abs=1e-6)
    assert float(detector_loss(first, y, centres, 0.0, 1.0)) < float(detector_loss(second, y, centres, 0.0, 1.0))


def test_a_detector_with_a_hidden_map_head_saves_loads_and_exports_with_parity(tmp_path):
    """``head_width`` (a hidden 1x1 conv-BN-ReLU layer before the maps): its card rebuilds the same network, the
    ONNX export (batch norm folded) matches torch eager within 1e-4 of the maps' peak, and cards without it keep
    their arguments."""
    torch = pytest.importorskip("torch")
    from vcorner.export.onnx_export import export_checkpoint, max_abs_difference
    from vcorner.network.checkpoint import load_model, save_model
    from vcorner.network.unet import create_model

    names = tuple(f"T{i}" for i in range(1, 13)) + tuple(f"L{i}" for i in range(1, 6))
    torch.manual_seed(0)
    model = create_model("tiny", out_channels=len(names), head_width=12)
    model(torch.randn(4, 1, 32, 32))  # one training-mode pass: batch norm statistics that are not the identity
    model.eval()
    assert model.constructor_args()["head_width"] == 12 and "head_width" not in create_model("tiny").constructor_args()
    save_model(tmp_path / "det.safetensors", model, DetectorCard(model.constructor_args(), names,
                                                                  DetectionConfig(input_size=32), {}))
    loaded, card = load_model(tmp_path / "det.safetensors", DetectorCard)
    views = np.random.default_rng(1).standard_normal((2, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ours = model(torch.from_numpy(views)).numpy()
        np.testing.assert_array_equal(loaded(torch.from_numpy(views)).numpy(), ours)
    onnx = export_checkpoint(tmp_path / "det.safetensors", tmp_path / "det.onnx", card_type=DetectorCard)
    # an untrained net's maps are nearly flat (peak 0.005): the folded batch norm's FP32 rounding is 1e-5 of that
    # peak, against 1e-2 or more for a wrong graph (a missing ReLU, an unfolded or a skipped layer)
    assert max_abs_difference(loaded, onnx, views) <= 1e-4 * float(ours.max())
    with pytest.raises(ValueError, match="head_width"):
        create_model("tiny", head_width=-1)


def test_absent_weight_spares_the_views_without_a_spine():
    """A name cut from a view that shows others weighs ``absent_weight``; every map of a view without any name (a
    negative view) keeps weight 1."""
    from vcorner.training.detector_trainer import map_weights

    nan = [np.nan, np.nan]
    centres = np.array([[[1.0, 2.0], nan, [3.0, 4.0]], [nan, nan, nan]])
    np.testing.assert_array_equal(map_weights(centres, 0.2), np.array([1, 0.2, 1, 1, 1, 1], dtype=np.float32))


def test_a_detector_with_a_hidden_head_is_rebuilt_from_its_folded_graph(tmp_path):
    """train/rebuild_checkpoint.py takes both of a hidden head's convolutions from the folded ONNX graph: the
    rebuilt network (batch norms at the identity) computes the exported maps."""
    torch = pytest.importorskip("torch")
    import importlib.util
    from pathlib import Path

    import onnx

    from vcorner.export.onnx_export import export_checkpoint, max_abs_difference
    from vcorner.network.checkpoint import save_model
    from vcorner.network.unet import UNet, create_model

    spec = importlib.util.spec_from_file_location(
        "rebuild_checkpoint", Path(__file__).resolve().parents[1] / "train" / "rebuild_checkpoint.py")
    rebuild = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rebuild)
    names = tuple(f"T{i}" for i in range(1, 10))
    torch.manual_seed(0)
    model = create_model("tiny", out_channels=len(names), head_width=12)
    model(torch.randn(4, 1, 32, 32))  # batch norm statistics that are not the identity
    save_model(tmp_path / "det.safetensors", model.eval(), DetectorCard(model.constructor_args(), names,
                                                                         DetectionConfig(input_size=32), {}))
    graph = export_checkpoint(tmp_path / "det.safetensors", tmp_path / "det.onnx", card_type=DetectorCard)
    rebuilt = UNet(**model.constructor_args())
    rebuild.load_folded(rebuilt, onnx.load(str(graph)))
    views = np.random.default_rng(2).standard_normal((2, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        peak = float(model(torch.from_numpy(views)).max())
    assert max_abs_difference(rebuilt.eval(), graph, views) <= 1e-4 * peak


@pytest.mark.parametrize("head_width", [0, 6])
def test_a_namer_given_anchor_names_keeps_the_maps_it_had(head_width):
    """``widened_state`` (``vcorner train --init`` from a namer of fewer names, train/detector-namer-t1.toml): the
    old names' maps are exactly the old namer's, the new names' rows are the fresh ones, and names out of order are
    refused."""
    torch = pytest.importorskip("torch")
    from vcorner.network.unet import create_model
    from vcorner.training.detector_trainer import widened_state

    old, new = ("C3", "C4", "C5", "C6", "C7"), ("C2", "C3", "C4", "C5", "C6", "C7", "T1")
    torch.manual_seed(0)
    start = create_model("tiny", out_channels=len(old), head_width=head_width).eval()
    fresh = create_model("tiny", out_channels=len(new), head_width=head_width).eval()
    wide = create_model("tiny", out_channels=len(new), head_width=head_width).eval()
    wide.load_state_dict(widened_state(start.state_dict(), fresh.state_dict(), old, new))
    views = torch.from_numpy(np.random.default_rng(2).standard_normal((2, 1, 32, 32)).astype(np.float32))
    with torch.no_grad():
        before, after = start(views).numpy(), wide(views).numpy()
    np.testing.assert_allclose(after[:, 1:6], before, rtol=1e-5, atol=1e-9)
    head = [k for k, v in fresh.state_dict().items() if v.shape[:1] == (len(new),)]
    assert head and all(torch.equal(wide.state_dict()[k][[0, 6]], fresh.state_dict()[k][[0, 6]]) for k in head)
    assert np.abs(after[:, 0] - after[:, 1]).max() > 1e-6  # C2 starts fresh, not as a copy of C3
    with pytest.raises(InputError, match="not in the order"):
        widened_state(start.state_dict(), fresh.state_dict(), ("C4", "C3", "C5", "C6", "C7"), new)


def test_vcorner_train_starts_a_namer_with_anchor_names_from_one_without(toy_dataset, tmp_path):
    """``vcorner train --init`` from a detector of C4-C6 on films annotated C3-C7 (the anchors C3 and C7 added as
    context names, as train/detector-namer-t1.toml adds C2 and T1): the run starts from the trained maps (its first
    validation BC well above a fresh run's) and its card keeps the context; a detector of other names is refused."""
    pytest.importorskip("torch")
    import dataclasses
    import shutil

    from vcorner.config import DetectionConfig
    from vcorner.io.annotations import read_annotations, write_annotations
    from vcorner.training.detector_recipe import AugmentSpec, DetectorOptim, DetectorRecipe
    from vcorner.training.detector_trainer import train_detector
    from vcorner.training.recipe import ModelSpec

    middle = tmp_path / "middle"
    shutil.copytree(toy_dataset, middle)
    write_annotations(middle / "annotations.json", [
        dataclasses.replace(r, vertebrae=tuple(v for v in r.vertebrae if v.name in ("C4", "C5", "C6")))
        for r in read_annotations(toy_dataset / "annotations.json")])
    recipe = DetectorRecipe(model=ModelSpec(recipe="tiny"), detection=DetectionConfig(input_size=64, sigma=0.2),
                            augment=AugmentSpec(zoom=(0.95, 1.05), rotation_deg=3.0, shift=0.02, negatives=0.0),
                            train=DetectorOptim(epochs=40, batch_size=3, lr=1e-2, val_fraction=0.25))
    train_detector(middle, recipe, tmp_path / "middle-run")
    one = dataclasses.replace(recipe, detection=dataclasses.replace(recipe.detection, context=("C3", "C7")),
                              train=dataclasses.replace(recipe.train, epochs=1, lr=1e-9))
    fresh = train_detector(toy_dataset, one, tmp_path / "fresh")
    wide = train_detector(toy_dataset, one, tmp_path / "wide", init=tmp_path / "middle-run")
    assert wide.history[0]["val_bc"] > fresh.history[0]["val_bc"] + 0.1  # 0.33 against 0.14 when written
    from vcorner.network.checkpoint import load_model

    _, card = load_model(tmp_path / "wide", DetectorCard)
    assert card.names == ("C3", "C4", "C5", "C6", "C7") and card.detection.context == ("C3", "C7")
    with pytest.raises(InputError, match="cannot start from it"):
        train_detector(middle, recipe, tmp_path / "narrow", init=tmp_path / "wide")
