"""Issue #32, points 2 and 3: progress lines when stderr is not a terminal, and end-of-training verdicts.

CliRunner's stderr is not a terminal, as in a batch job's log: with ``VCORNER_PROGRESS_SECONDS=0`` every update
prints a plain line. A run that learned nothing ends with a warning, its card records the failed verdict, and
``vcorner batch``/``detect`` warn once when they use it; a confidence threshold is never chosen from a handful of
centres or at 0.
"""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from vcorner.cli import app  # noqa: E402
from vcorner.models.detector_card import DetectorCard  # noqa: E402
from vcorner.models.modelfile import read_checkpoint_card  # noqa: E402
from vcorner.training.verdict import MIN_THRESHOLD, corner_verdict, threshold_refusal  # noqa: E402

EVERY_UPDATE = {"VCORNER_PROGRESS_SECONDS": "0"}
CORNER = ('name = "tiny"\n[model]\nrecipe = "tiny"\n[sampling]\npatch_size = 32\ngrid_steps = 2\nscales = [1.0]\n'
          'rotations_deg = [0.0]\n[train]\nepochs = 1\nbatch_size = 4\nlr = {lr}\npatches_per_vertebra = 4\n'
          'val_patches_per_vertebra = 2\n')
DETECTOR = ('task = "detector"\nname = "tiny-detector"\n[model]\nrecipe = "tiny"\n[detection]\ninput_size = 32\n'
            '[augment]\nnegatives = 0.0\n[train]\nepochs = 1\nbatch_size = 3\nval_fraction = 0.25\n')


def invoke(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


def warnings_naming(output: str, words: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("warning:") and words in line]


def test_a_corner_training_logs_progress_lines_and_a_failed_verdict(toy_dataset, tmp_path):
    """A corner model that cannot learn (learning rate 1e-9): every update prints a plain progress line with the
    share done, patches/s, loss and time left; the run ends with one warning and its card records the verdict."""
    config = tmp_path / "corner.toml"
    config.write_text(CORNER.format(lr=1e-9))
    result = invoke("train", toy_dataset, "--config", config, "--out", tmp_path / "run", "--no-calibrate",
                    env=EVERY_UPDATE)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("train: epoch 1/1, ")]
    assert lines, result.stderr
    assert re.fullmatch(r"train: epoch 1/1, \d+% \(\d+/\d+\), \d+ patches/s, loss -?\d\.\d{4}, eta \d+ s", lines[-1]), \
        lines[-1]
    assert re.search(r"^epoch 1: val BC 0\.\d{4}", result.stderr, re.M)
    training = read_checkpoint_card(tmp_path / "run" / "model.safetensors").training
    assert training["verdict"]["passed"] is False
    assert f"validation BC {training['val_bc_start']:.4f} (untrained) -> {training['val_bc']:.4f}" in result.stderr
    failed = warnings_naming(result.stderr, "validation failed")
    assert len(failed) == 1 and "floor of 0.1" in failed[0], result.stderr


@pytest.fixture(scope="module")
def failed_detector(toy_dataset, tmp_path_factory):
    """A tiny detector trained for one step: it finds next to none of its validation centres."""
    folder = tmp_path_factory.mktemp("detector")
    config = folder / "detector.toml"
    config.write_text(DETECTOR)
    result = invoke("train", toy_dataset, "--config", config, "--out", folder / "run", env=EVERY_UPDATE)
    exported = invoke("export", folder / "run", "--out", folder / "detector.onnx")
    assert exported.exit_code == 0, exported.output
    return result, folder


def test_a_detector_that_learned_nothing_is_flagged_in_its_card_and_on_stderr(failed_detector):
    result, folder = failed_detector
    assert result.exit_code == 0, result.output
    assert re.search(r"^train: epoch 1/1, \d+% \(\d+/\d+\), \d+ views/s, loss -?\d\.\d{4}", result.stderr, re.M)
    card = read_checkpoint_card(folder / "run" / "model.safetensors", DetectorCard)
    training = card.training
    assert training["verdict"]["passed"] is False
    chosen_on = training["min_confidence_chosen_on"]
    assert "fallback" in chosen_on  # one validation image: fewer than five correct centres to choose from
    assert card.detection.min_confidence == training["val_recall_at"] >= MIN_THRESHOLD
    # the figures printed are the card's: its epoch, its recall at its threshold
    assert (f"best validation BC {training['val_bc']:.4f} (epoch {training['epoch']}), centres found "
            f"{training['val_recall']:.1%} at confidence >= {training['val_recall_at']:g}") in result.stderr
    assert len(warnings_naming(result.stderr, "confidence threshold")) == 1
    failed = warnings_naming(result.stderr, "validation failed")
    assert len(failed) == 1 and "under the floor of 50%" in failed[0]
    assert result.stderr.rstrip().splitlines()[-1] == failed[0]


def test_batch_and_detect_warn_once_with_a_detector_that_failed_validation(failed_detector, toy_dataset, tmp_path):
    _, folder = failed_detector
    batch = invoke("batch", toy_dataset, "--detector", folder / "detector.onnx", "--out", tmp_path / "out",
                   env=EVERY_UPDATE)
    assert batch.exit_code in (0, 1), batch.output
    assert len(warnings_naming(batch.stderr, "failed validation")) == 1, batch.stderr
    assert re.search(r"^batch: images, \d+% \(\d/4\), \d+\.\d img/s, \d+ patches/s", batch.stderr, re.M), \
        batch.stderr
    detect = invoke("detect", toy_dataset, "--detector", folder / "detector.onnx", "--out", tmp_path / "c.csv")
    assert len(warnings_naming(detect.stderr, "failed validation")) == 1, detect.stderr


def test_the_shipped_models_raise_no_validation_warning(tmp_path):
    from vcorner.models.modelfile import card_of, default_detector_path, default_model_path, read_detector_card

    assert card_of(default_model_path()).validation_warning() is None
    assert read_detector_card(default_detector_path())[0].validation_warning() is None


def test_thresholds_from_a_handful_of_centres_or_at_zero_are_refused_and_floors_hold():
    assert "fewer than the 5" in threshold_refusal(0.2, 4)
    assert "under the floor" in threshold_refusal(0.0, 500)
    assert threshold_refusal(0.087, 500) is None
    assert corner_verdict(0.93, 0.28)["passed"] and not corner_verdict(0.30, 0.28)["passed"]


def test_a_bad_progress_interval_is_one_warning_and_the_default(monkeypatch):
    from vcorner.cli.common import PROGRESS_SECONDS, progress_seconds

    monkeypatch.setenv("VCORNER_PROGRESS_SECONDS", "soon")
    assert progress_seconds() == PROGRESS_SECONDS
    monkeypatch.setenv("VCORNER_PROGRESS_SECONDS", "2.5")
    assert progress_seconds() == 2.5


def test_synth_logs_progress_lines(tmp_path):
    result = invoke("synth", tmp_path / "ph", "--images", 2, "--seed", 3, "--workers", 1, env=EVERY_UPDATE)
    assert result.exit_code == 0, result.output
    assert re.search(r"^synth: phantoms, \d+% \(\d/2\)", result.stderr, re.M), result.stderr
