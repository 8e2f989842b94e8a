"""Training: a tiny UNet learns (validation BC rises), checkpoints carry their card, resume continues."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from vcorner.config import SamplingConfig  # noqa: E402
from vcorner.io.records import InputError  # noqa: E402
from vcorner.models.modelfile import read_checkpoint_card as read_card  # noqa: E402
from vcorner.network.checkpoint import load_model  # noqa: E402
from vcorner.training.checkpoint import load_resume_state  # noqa: E402
from vcorner.training.recipe import ModelSpec, OptimSpec, Recipe, load_recipe  # noqa: E402
from vcorner.training.trainer import train  # noqa: E402

TINY = Recipe(name="tiny", model=ModelSpec(recipe="tiny"),
              sampling=SamplingConfig(grid_steps=2, scales=(0.95, 1.05), rotations_deg=(-5.0, 5.0)),
              train=OptimSpec(epochs=3, batch_size=16, lr=3e-3, patches_per_vertebra=32, seed=0))


@pytest.fixture(scope="module")
def run(toy_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return out, train(toy_dataset, TINY, out)


def test_tiny_unet_learns(run):
    _, result = run
    start, best = result.history[0]["val_bc"], max(h["val_bc"] for h in result.history[1:])
    assert best > start + 0.15, [round(h["val_bc"], 3) for h in result.history]


def test_checkpoint_carries_model_args_sampling_and_prior(run):
    out, _ = run
    model, card = load_model(out)
    assert card.model_args["widths"] == list(model.widths)
    from vcorner.config import to_dict
    from vcorner.evaluation.tune import sampling_variants

    # the recipe's sampling, recorded before training's end chose the cheapest within the tolerance
    assert card.training["before_tuning"]["sampling"] == to_dict(TINY.sampling)
    assert card.sampling in sampling_variants(TINY.sampling).values()
    assert set(card.prior.means) >= {"C3", "C7", "*"}
    assert read_card(out / "model.safetensors").training["recipe"] == "tiny"
    assert load_resume_state(out / "last.pt")["epoch"] == 3


def test_resume_continues_where_it_stopped(toy_dataset, run):
    out, result = run
    from dataclasses import replace

    more = replace(TINY, train=replace(TINY.train, epochs=4))
    resumed = train(toy_dataset, more, out, resume=True)
    assert len(resumed.history) == len(result.history) + 1
    assert [h["val_bc"] for h in resumed.history[:4]] == [h["val_bc"] for h in result.history]
    assert resumed.history[-1]["epoch"] == 4


def test_init_starts_from_a_trained_model_and_keeps_the_untrained_floor(toy_dataset, run, tmp_path):
    out, _ = run
    from dataclasses import replace

    one = replace(TINY, train=replace(TINY.train, epochs=1))
    fresh = train(toy_dataset, one, tmp_path / "fresh", calibrate=False)
    tuned = train(toy_dataset, one, tmp_path / "tuned", calibrate=False, init=out / "model.safetensors")
    started = tuned.history[0]["val_bc"]  # the trained model's maps, before the first fine-tuning step
    assert started > fresh.history[0]["val_bc"] + 0.15
    training = read_card(tmp_path / "tuned" / "model.safetensors").training
    assert training["val_bc_start"] == pytest.approx(fresh.history[0]["val_bc"])  # the verdict's floor: untrained
    assert training["init"]["checkpoint"] == str(out / "model.safetensors") and training["verdict"]["passed"]
    wider = replace(TINY, model=ModelSpec(recipe="lite"))
    with pytest.raises(InputError, match="cannot start from it"):
        train(toy_dataset, wider, tmp_path / "wider", calibrate=False, init=out / "model.safetensors")
    assert not (tmp_path / "wider").exists()  # refused before anything was written


def test_a_checkpoint_rebuilt_from_an_exported_corner_model_computes_the_same_maps(toy_dataset, run, tmp_path):
    # train/rebuild_checkpoint.py: the exported graph's batch norms are folded; the rebuilt checkpoint must give
    # the ONNX graph's maps in eval mode, so that `vcorner train --init` fine-tunes the model that was shipped.
    import re
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np

    from vcorner.export.onnx_export import export_model

    out, _ = run
    model, card = load_model(out)
    exported = export_model(model.eval(), card, tmp_path / "m.onnx")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "train" / "rebuild_checkpoint.py"), str(exported),
                           str(toy_dataset), str(tmp_path / "rebuilt")], capture_output=True, text=True, check=True)
    parity = float(re.search(r"max \|difference\| (\S+)", done.stdout).group(1))
    assert parity < 1e-5, done.stdout
    rebuilt, rebuilt_card = load_model(tmp_path / "rebuilt")
    x = torch.from_numpy(np.random.default_rng(1).random((4, 1, 64, 64), dtype=np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(rebuilt.eval()(x).numpy(), model.eval()(x).numpy(), atol=1e-5)
    assert rebuilt_card.prior.means.keys() == card.prior.means.keys()


def test_pickled_checkpoints_and_bad_recipes_are_refused(tmp_path):
    bad = tmp_path / "last.pt"
    torch.save({"x": object()}, bad)
    with pytest.raises(InputError, match="cannot resume"):
        load_resume_state(bad)
    with pytest.raises(InputError, match="pickled"):
        load_model(bad)
    recipe = tmp_path / "r.toml"
    recipe.write_text("[sampling]\npatchsize = 64\n")
    with pytest.raises(InputError, match="unknown setting"):
        load_recipe(recipe)


@pytest.mark.parametrize("name", ["lite", "paper"])
def test_shipped_recipes_load(name):
    from pathlib import Path

    recipe = load_recipe(Path(__file__).parents[1] / "train" / f"{name}.toml")
    assert recipe.model.recipe == name


def test_training_ends_calibrated_on_its_validation_images(run):
    out, result = run
    card = read_card(out / "model.safetensors")
    assert card.calibrated and card.training["calibrated_by"] == "vcorner train"
    assert card.training["tune_images"] == result.calibration["images"] == 1  # the toy set's validation split
    assert card.decode.ellipse_scale == result.calibration["ellipse_scale"]
    assert 0.8 <= card.training["tune_coverage"]["inside_95"] <= 1.0
    assert card.calibration_warning() is None


def test_training_ends_with_the_cheapest_sampling_within_the_tolerance(run):
    """As vcorner tune --sampling: the fewest patches per vertebra whose validation mean P2P is at most the
    tolerance above the recipe's own sampling's; every variant's scores and the sampling before are recorded."""
    out, _ = run
    card = read_card(out / "model.safetensors")
    scores, tolerance = card.training["sampling_scores"], card.training["sampling_tolerance"]
    own = scores[0]
    assert own["variant"].startswith("full grid") and card.training["before_tuning"]["sampling"]
    within = [s for s in scores if s["p2p_mean"] <= own["p2p_mean"] + tolerance]
    assert card.sampling.patches_per_vertebra == min(s["patches_per_vertebra"] for s in within)
    assert all(s["p2p_mean"] > own["p2p_mean"] + tolerance for s in scores
               if s["patches_per_vertebra"] < card.sampling.patches_per_vertebra)


def test_no_calibrate_leaves_a_card_that_warns(toy_dataset, tmp_path):
    from dataclasses import replace

    one = replace(TINY, train=replace(TINY.train, epochs=1))
    result = train(toy_dataset, one, tmp_path / "run", calibrate=False)
    card = read_card(tmp_path / "run")
    assert result.calibration is None and not card.calibrated and "never calibrated" in card.calibration_warning()


def test_train_command_ends_calibrated_and_says_so(toy_dataset, tmp_path):
    from typer.testing import CliRunner

    from vcorner.cli import app

    recipe = tmp_path / "tiny.toml"
    recipe.write_text('name = "tiny"\n[model]\nrecipe = "tiny"\n[sampling]\ngrid_steps = 2\nscales = [1.0]\n'
                      'rotations_deg = [0.0]\n[train]\nepochs = 1\nbatch_size = 16\npatches_per_vertebra = 8\n')
    result = CliRunner().invoke(app, ["train", str(toy_dataset), "--config", str(recipe), "--out",
                                      str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "calibrated on 1 validation image(s)" in result.output and "95% ellipses hold" in result.output
    assert read_card(tmp_path / "run").calibrated
    plain = CliRunner().invoke(app, ["train", str(toy_dataset), "--config", str(recipe), "--out",
                                     str(tmp_path / "plain"), "--no-calibrate"])
    assert plain.exit_code == 0 and "not calibrated" in plain.output and not read_card(tmp_path / "plain").calibrated
