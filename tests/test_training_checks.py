"""``vcorner train`` keeps what the user had and refuses data that cannot train (issue #28, cases 4, 12, 15b):
an earlier run needs --resume or --force (its files then kept in previous-<time>/), data without one training
step per epoch or a validation image of its own is refused before any epoch, and --resume refuses a changed
recipe or a checkpoint that does not fit, each in one line, exit code 2, the earlier files byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from vcorner.cli import app  # noqa: E402

CORNER = ('name = "tiny"\n[model]\nrecipe = "tiny"\n[sampling]\npatch_size = {size}\ngrid_steps = 2\nscales = [1.0]\n'
          'rotations_deg = [0.0]\n[train]\nepochs = 1\nbatch_size = {batch}\npatches_per_vertebra = 4\n'
          'val_patches_per_vertebra = 2\n')
DETECTOR = ('task = "detector"\nname = "tiny-detector"\n[model]\nrecipe = "tiny"\n[detection]\ninput_size = {size}\n'
            '[augment]\nnegatives = 0.0\n[train]\nepochs = 1\nbatch_size = {batch}\nval_fraction = 0.25\n')
RECIPES = {"corner": CORNER, "detector": DETECTOR}


def recipe(folder: Path, kind: str, size: int = 32, batch: int = 3, extra: str = "") -> Path:
    path = folder / f"{kind}-{size}-{batch}.toml"
    text = RECIPES[kind].format(size=size, batch=batch)
    path.write_text(text.replace("[model]\n", f"[model]\n{extra}") if extra else text)
    return path


def train(data: Path, config: Path, out: Path, *options: str):
    return CliRunner().invoke(app, ["train", str(data), "--config", str(config), "--out", str(out), *options])


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error(result, *words: str) -> str:
    """The one ``error:`` line of a refused command (exit code 2, no traceback), which names ``words``."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def subset(toy_dataset: Path, folder: Path, n: int) -> Path:
    """A dataset of the first ``n`` toy images."""
    from vcorner.io.annotations import read_annotations, write_annotations

    records = read_annotations(toy_dataset / "annotations.json")[:n]
    folder.mkdir()
    for record in records:
        shutil.copy(toy_dataset / record.file, folder / record.file)
    write_annotations(folder / "annotations.json", records)
    return folder


@pytest.fixture(scope="module")
def earlier(toy_dataset, tmp_path_factory) -> dict[str, Path]:
    """One finished 1-epoch run of each recipe (the corner one uncalibrated), plus an exported model's files."""
    folder = tmp_path_factory.mktemp("earlier")
    runs = {}
    for kind in RECIPES:
        out = folder / kind
        result = train(toy_dataset, recipe(folder, kind), out, "--no-calibrate")
        assert result.exit_code == 0, result.output
        (out / "model.onnx").write_bytes(b"exported " + kind.encode())
        (out / "model.onnx.json").write_text("{}")
        runs[kind] = out
    return runs


def copy_run(earlier: dict[str, Path], kind: str, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    out = shutil.copytree(earlier[kind], tmp_path / "run")
    return out, files(out)


@pytest.mark.parametrize("kind", list(RECIPES))
def test_training_into_an_earlier_run_needs_resume_or_force(toy_dataset, earlier, tmp_path, kind):
    """Case 4: a second run into the same RUN used to replace the best model and last.pt and append to
    metrics.jsonl; it is now refused in one line naming both options, and every file stays as it was."""
    out, before = copy_run(earlier, kind, tmp_path)
    one_error(train(toy_dataset, recipe(tmp_path, kind), out), str(out), "--resume", "--force", "last.pt",
              "metrics.jsonl")
    assert files(out) == before


@pytest.mark.parametrize("kind", list(RECIPES))
def test_force_starts_over_and_keeps_every_earlier_run_file(toy_dataset, earlier, tmp_path, kind):
    """Case 4: --force moves the model, last.pt, metrics.jsonl, recipe.json and the exported model with its card
    into RUN/previous-<time>/, byte for byte; a file of the user's own stays where it was."""
    out, before = copy_run(earlier, kind, tmp_path)
    (out / "notes.txt").write_text("mine")
    result = train(toy_dataset, recipe(tmp_path, kind), out, "--force", "--no-calibrate")
    assert result.exit_code == 0, result.output
    kept = [p for p in out.iterdir() if p.name.startswith("previous-")]
    assert len(kept) == 1 and f"kept in {kept[0]}" in result.output.replace("\n", "")
    assert files(kept[0]) == before
    assert (out / "notes.txt").read_text() == "mine"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # this run's epoch only
    assert not (out / "model.onnx").exists()


def test_resume_and_force_together_are_refused(toy_dataset, earlier, tmp_path):
    out, before = copy_run(earlier, "corner", tmp_path)
    one_error(train(toy_dataset, recipe(tmp_path, "corner"), out, "--resume", "--force"), "--resume", "--force")
    assert files(out) == before


@pytest.mark.parametrize(("kind", "images", "batch", "named"), [
    ("corner", 1, 3, "1 usable annotated image"),    # the validation image would be the training image
    ("detector", 1, 3, "1 usable annotated image"),
    ("detector", 2, 3, "1 view(s)"),                 # 1 training view: no optimizer step in any epoch
    ("corner", 4, 1, "batch_size = 1"),              # batches of 1 are skipped: no step either
])
def test_data_that_cannot_train_is_refused_before_any_epoch(toy_dataset, tmp_path, kind, images, batch, named):
    """Case 12: 1 or 2 images used to run epochs of 0 optimizer steps (or validate on the training image) and
    write an untrained model with exit code 0; now one line before anything is written."""
    data = subset(toy_dataset, tmp_path / "data", images)
    out = tmp_path / "run"
    one_error(train(data, recipe(tmp_path, kind, batch=batch), out), named)
    assert not out.exists()


@pytest.mark.parametrize(("kind", "change", "field"), [
    ("corner", {"size": 48}, "sampling.patch_size was 32, now 48"),
    ("detector", {"size": 48}, "detection.input_size was 32, now 48"),
    ("corner", {"extra": "widths = [8, 8, 16, 16, 32]\n"},  # case 15b: another architecture
     "model.widths was unset, now [8, 8, 16, 16, 32]"),
    ("detector", {"batch": 2}, "train.batch_size"),
])
def test_resume_refuses_a_changed_recipe(toy_dataset, earlier, tmp_path, kind, change, field):
    """Cases 12 and 15b: --resume after changing patch_size trained epochs at two sizes and compared their BC;
    with other widths it printed a 157-line state_dict traceback. Now one line naming the first changed field."""
    out, before = copy_run(earlier, kind, tmp_path)
    one_error(train(toy_dataset, recipe(tmp_path, kind, **change), out, "--resume"), "recipe.json", field)
    assert files(out) == before


def test_resume_may_change_epochs(toy_dataset, earlier, tmp_path):
    out, _ = copy_run(earlier, "corner", tmp_path)
    result = train(toy_dataset, recipe(tmp_path, "corner"), out, "--resume", "--epochs", "2", "--no-calibrate")
    assert result.exit_code == 0, result.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_checkpoint_that_does_not_fit_the_model_ends_in_one_line(toy_dataset, earlier, tmp_path):
    """Case 15b: a last.pt of another architecture (same recipe.json) is refused in one line naming it."""
    from vcorner.network.unet import create_model
    from vcorner.training.checkpoint import save_resume_state

    out, _ = copy_run(earlier, "corner", tmp_path)
    other = create_model("tiny", widths=[8, 8, 16, 16, 32])
    save_resume_state(out / "last.pt", other, torch.optim.AdamW(other.parameters()), 1, [])
    before = files(out)
    one_error(train(toy_dataset, recipe(tmp_path, "corner"), out, "--resume"), "last.pt", "do not fit")
    assert files(out) == before


def test_resume_without_a_run_is_refused(toy_dataset, tmp_path):
    one_error(train(toy_dataset, recipe(tmp_path, "corner"), tmp_path / "none", "--resume"), "nothing to resume")


@pytest.mark.parametrize("kind", ["corner", "detector"])
def test_an_unknown_model_recipe_is_one_line_naming_the_known_ones(toy_dataset, tmp_path, kind):
    config = recipe(tmp_path, kind)
    config.write_text(config.read_text().replace('recipe = "tiny"', 'recipe = "tinny"'))
    one_error(train(toy_dataset, config, tmp_path / "run"), "'tinny'", "tiny")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("device", ["foo", "cuda:7", "meta", "mps"])
def test_a_bad_device_is_one_line_before_anything_is_written(toy_dataset, tmp_path, device):
    one_error(train(toy_dataset, recipe(tmp_path, "corner"), tmp_path / "run", "--device", device), device)
    assert not (tmp_path / "run").exists()


def test_init_through_the_cli_fine_tunes_a_corner_run_or_refuses_a_detector_in_one_line(toy_dataset, earlier,
                                                                                         tmp_path):
    """`vcorner train --init` on a corner recipe: a corner checkpoint starts the run and is recorded in the card; a
    detector's checkpoint is refused in one line and nothing is written."""
    from vcorner.models.modelfile import read_checkpoint_card

    start = earlier["corner"] / "model.safetensors"
    out = tmp_path / "tuned"
    result = train(toy_dataset, recipe(tmp_path, "corner"), out, "--no-calibrate", "--init", str(start))
    assert result.exit_code == 0, result.output
    training = read_checkpoint_card(out / "model.safetensors").training
    assert training["init"]["checkpoint"] == str(start) and 0.0 < training["init"]["val_bc"] <= 1.0
    refused = tmp_path / "refused"
    one_error(train(toy_dataset, recipe(tmp_path, "corner"), refused, "--init",
                    str(earlier["detector"] / "model.safetensors")), "model.safetensors")
    assert not refused.exists()
