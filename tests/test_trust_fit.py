"""Fitting the card's trust (vcorner/evaluation/trust.py): the ellipse constants come back from corners drawn with
known spreads, the flag limits sit at the stated percentile, and ``vcorner tune`` refits them into the card."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vcorner.evaluation.trust import Evidence, fit_trust
from vcorner.postprocess.decode import COV_FLOOR_PX2

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "xrays"


def drawn(size_sd: float, flat_sd: float, n: int = 2000, seed: int = 0) -> Evidence:
    """Corners whose true offsets are Gaussian with the covariance the card's trust describes."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(40, 80, n)
    confidence = rng.uniform(0.3, 1.0, n)
    sd = np.sqrt((size_sd ** 2 + (flat_sd * (1 - confidence)) ** 2) * size ** 2 + COV_FLOOR_PX2)
    offset = rng.normal(0, 1, (n, 2)) * sd[:, None]
    return Evidence(offset, size, confidence, np.zeros((n, 2, 2)), rng.uniform(0, 1, 500), rng.uniform(0, 2, 500))


def test_the_ellipse_constants_of_known_spreads_come_back():
    trust, reached = fit_trust(drawn(size_sd=0.02, flat_sd=0.2))
    assert abs(trust.size_sd - 0.02) <= 0.003 and abs(trust.flat_sd - 0.2) <= 0.05, trust
    assert 0.94 <= reached["inside_95"] <= 0.96 and 0.45 <= reached["inside_50"] <= 0.55, reached


def test_the_flag_limits_sit_at_the_percentile_of_the_validation_vertebrae():
    data = drawn(size_sd=0.02, flat_sd=0.0)
    trust, _ = fit_trust(data, percentile=90.0)
    assert trust.height_limit == round(float(np.percentile(data.deviation, 90.0)), 4)
    assert trust.spread_limit == round(float(np.percentile(data.spread, 90.0)), 4)


def test_the_side_check_is_set_only_where_nearly_every_validation_film_shows_its_anterior_side():
    """Lateral films (bone behind the bodies brighter: 100% of 600 clinical validation films) turn the side check
    on; frontal films, whose sides look alike (49% of 120 AP phantoms), and too few films leave it off."""
    from dataclasses import replace

    data = drawn(size_sd=0.02, flat_sd=0.0)
    assert not fit_trust(data)[0].side_check  # no film measured
    lateral = np.r_[np.full(199, 1.2), -0.1]
    frontal = np.random.default_rng(3).normal(0.0, 0.2, 120)
    trust, reached = fit_trust(replace(data, sides=lateral))
    assert trust.side_check and reached["sides_agree"] == 0.995
    assert not fit_trust(replace(data, sides=np.r_[np.full(97, 1.2), np.full(3, -0.1)]))[0].side_check
    assert not fit_trust(replace(data, sides=frontal))[0].side_check
    assert not fit_trust(replace(data, sides=np.full(19, 1.0)))[0].side_check


def test_tune_refits_the_trust_of_the_card_from_its_validation_corners():
    """What ``vcorner tune`` does after choosing the decoding (`cli/tune.with_trust`), on the shipped model's maps of
    the examples; the CLI's wiring is tested in tests/test_evaluate.py."""
    from dataclasses import replace

    from vcorner.backends import ModelRequest
    from vcorner.cli.common import open_model
    from vcorner.cli.tune import with_trust
    from vcorner.config import TrustConfig
    from vcorner.evaluation.tune import infer_records
    from vcorner.io.annotations import read_annotations

    runner, resolved = open_model(ModelRequest(precision="fp32"))
    blank = replace(resolved.card, trust=TrustConfig())
    with runner:
        jobs = infer_records(EXAMPLES, read_annotations(EXAMPLES / "annotations.json"), runner, blank)
    card = with_trust(blank, jobs, EXAMPLES)
    assert card.trust.size_sd > 0 and card.trust.height_limit > 0 and card.trust.spread_limit > 0, card.trust
    assert str(EXAMPLES) in card.training["trust_chosen_on"]
    assert 0.9 <= card.training["trust_coverage"]["inside_95"] <= 1.0
    assert card.decode == blank.decode and card.prior == blank.prior
    assert card.trust.reader_sd_mm == 0.0  # the examples have no truth.json: no anatomy intervals


def test_the_readers_spread_comes_back_from_the_phantoms_truth(tmp_path):
    """Issue #29: `vcorner synth` clicks with 0.35 mm per axis about the true corners (truth.json); the spread is
    measured from the two files, pooled over folders whose file names repeat, and unknown (0) without a truth or a
    spacing."""
    from dataclasses import replace

    from vcorner.evaluation.trust import reader_spread
    from vcorner.io.annotations import read_annotations
    from vcorner.phantoms.dataset import synthesize_dataset

    folders = [tmp_path / "a", tmp_path / "b"]
    for seed, folder in enumerate(folders):
        synthesize_dataset(folder, 6, seed=40 + seed, workers=1)
    sets = [(f, read_annotations(f / "annotations.json")) for f in folders]
    assert 0.28 <= reader_spread(sets) <= 0.42  # 2 x 6 films x 5 vertebrae x 8 numbers
    assert reader_spread([(tmp_path / "a", [replace(sets[0][1][0], pixel_spacing_mm=None)])]) == 0.0
    (folders[1] / "truth.json").unlink()
    assert reader_spread(sets) == 0.0
    import pytest

    from vcorner.config import TrustConfig

    for bad in (float("inf"), float("nan"), -0.1):  # a card's spread goes into run.json: finite or refused
        with pytest.raises(ValueError, match="finite"):
            TrustConfig(reader_sd_mm=bad)
