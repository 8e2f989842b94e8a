"""Issue #28's one output rule on the commands beside batch, detect, report, convert and train: measure, evaluate,
export and synth never replace a file the user had (an earlier output of the same command is rewritten), never
write over an input, and keep the earlier file in previous-<time>/ with --force."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vcorner.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "xrays"


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def refused(result) -> str:
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture(scope="module")
def batch_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rule") / "out"
    assert run_cli("batch", EXAMPLES, "--centers", EXAMPLES / "centers.csv", "--out", out).exit_code == 0
    return out


def test_measure_keeps_a_users_measurements_csv_and_rewrites_its_own(batch_out, tmp_path):
    mine = tmp_path / "measurements.csv"
    mine.write_text("my own notes\n")
    result = run_cli("measure", batch_out / "corners.csv", "--out", tmp_path)
    assert "--force" in refused(result) and mine.read_text() == "my own notes\n"
    assert run_cli("measure", batch_out / "corners.csv", "--out", tmp_path, "--force").exit_code == 0
    assert next(tmp_path.glob("previous-*/measurements.csv")).read_text() == "my own notes\n"
    first = mine.read_bytes()
    assert run_cli("measure", batch_out / "corners.csv", "--out", tmp_path).exit_code == 0  # its own: rewritten
    assert mine.read_bytes() == first and len(list(tmp_path.glob("previous-*"))) == 1


def test_measure_never_writes_over_its_corners(tmp_path, batch_out):
    corners = tmp_path / "measurements.csv"
    shutil.copy(batch_out / "corners.csv", corners)
    before = corners.read_bytes()
    assert "is an input" in refused(run_cli("measure", corners, "--out", tmp_path, "--force"))
    assert corners.read_bytes() == before


def test_evaluate_keeps_a_users_files_in_out_and_rewrites_its_own(batch_out, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text('{"mine": true}')
    args = ("evaluate", batch_out / "corners.csv", EXAMPLES / "annotations.json", "--out", out)
    assert "--force" in refused(run_cli(*args))
    assert (out / "metrics.json").read_text() == '{"mine": true}'
    assert run_cli(*args, "--force").exit_code == 0
    assert next(out.glob("previous-*/metrics.json")).read_text() == '{"mine": true}'
    assert run_cli(*args).exit_code == 0  # an earlier evaluate's files are its own
    assert len(list(out.glob("previous-*"))) == 1


def test_evaluate_never_writes_over_its_predictions(batch_out, tmp_path):
    predictions = tmp_path / "metrics.json"
    shutil.copy(batch_out / "corners.csv", predictions)
    assert "is an input" in refused(run_cli("evaluate", predictions, EXAMPLES / "annotations.json", "--out",
                                            tmp_path, "--force"))


@pytest.mark.parametrize("mine", ["annotations.json", "truth.json"])
def test_synth_keeps_a_users_annotations_and_rewrites_its_own_dataset(tmp_path, mine):
    data = tmp_path / "data"
    data.mkdir()
    (data / mine).write_text("clicked by hand")
    assert "--force" in refused(run_cli("synth", data, "--images", 1))
    assert (data / mine).read_text() == "clicked by hand"
    assert run_cli("synth", data, "--images", 1, "--force").exit_code == 0
    assert next(data.glob(f"previous-*/{mine}")).read_text() == "clicked by hand"
    assert run_cli("synth", data, "--images", 1, "--seed", 3).exit_code == 0  # its own dataset: rewritten


def tiny_checkpoint(folder: Path) -> Path:
    """``folder`` holding ``model.safetensors`` of an untrained tiny UNet with its card (skips without torch)."""
    pytest.importorskip("torch")
    from tests.conftest import make_spine
    from vcorner.models.card import DecodeConfig, GroundTruthConfig, ModelCard, SamplingConfig
    from vcorner.network.checkpoint import save_model
    from vcorner.network.unet import create_model
    from vcorner.postprocess.prior import fit_prior

    model = create_model("tiny").eval()
    card = ModelCard(model.constructor_args(), SamplingConfig(), GroundTruthConfig(), DecodeConfig(),
                     fit_prior([make_spine()]), {"data": "test"})
    folder.mkdir()
    save_model(folder / "model.safetensors", model, card)
    return folder


def test_export_rewrites_its_run_but_keeps_a_model_elsewhere(tmp_path):
    run = tiny_checkpoint(tmp_path / "run")
    assert run_cli("export", run, "--no-check").exit_code == 0
    assert run_cli("export", run, "--no-check").exit_code == 0  # RUN/model.onnx is the run's own export
    elsewhere = tmp_path / "shipped.onnx"
    elsewhere.write_bytes(b"a model I keep")
    assert "--force" in refused(run_cli("export", run, "--no-check", "--out", elsewhere))
    assert elsewhere.read_bytes() == b"a model I keep"
    assert run_cli("export", run, "--no-check", "--out", elsewhere, "--force").exit_code == 0
    assert next(tmp_path.glob("previous-*/shipped.onnx")).read_bytes() == b"a model I keep"
    weights = run / "model.safetensors"
    assert "is an input" in refused(run_cli("export", run, "--no-check", "--out", weights, "--force"))


def test_baseline_keeps_a_batch_out_and_lists_left_out_vertebrae_like_the_batch(batch_out, tmp_path):
    """A baseline into a batch's OUT would have replaced the network's corners.csv; and, as vcorner batch, a
    vertebra left out for a bad centre is listed in errors.csv with exit code 1 (issue #32 point 5)."""
    corners = (batch_out / "corners.csv").read_bytes()
    result = run_cli("baseline", EXAMPLES, "--centers", EXAMPLES / "centers.csv", "--method", "prior",
                     "--out", batch_out)
    assert "--force" in refused(result) and (batch_out / "corners.csv").read_bytes() == corners

    rows = (EXAMPLES / "centers.csv").read_text(encoding="utf-8").splitlines()
    header, first = rows[0], rows[1].split(",")
    twin = rows[2].split(",")
    twin[2:4] = first[2:4]  # the second vertebra clicked on the first one's centre
    centres = tmp_path / "centers.csv"
    centres.write_text("\n".join([header, rows[1], ",".join(twin), *rows[3:]]) + "\n", encoding="utf-8")
    out = tmp_path / "prior"
    result = run_cli("baseline", EXAMPLES, "--centers", centres, "--method", "prior", "--out", out)
    assert result.exit_code == 1, result.output
    errors = (out / "errors.csv").read_text(encoding="utf-8")
    assert f"{twin[0]},{twin[1]}," in errors and "coincides" in errors
    again = run_cli("baseline", EXAMPLES, "--centers", centres, "--method", "prior", "--out", out)
    assert again.exit_code == 1  # its own earlier output is rewritten


def test_tune_keeps_a_users_file_at_report_and_shows_progress_in_a_log(toy_dataset, tiny_onnx, tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copy(tiny_onnx, model)
    shutil.copy(f"{tiny_onnx}.json", f"{model}.json")
    mine = tmp_path / "notes.json"
    mine.write_text('{"mine": 1}')
    result = run_cli("tune", model, toy_dataset, "--report", mine)
    assert "--force" in refused(result) and mine.read_text() == '{"mine": 1}'
    card = (tmp_path / "m.onnx.json").read_bytes()
    result = run_cli("tune", model, toy_dataset, "--report", tmp_path / "m.onnx.json", "--force")
    assert "is an input" in refused(result) and (tmp_path / "m.onnx.json").read_bytes() == card
    import os

    os.environ["VCORNER_PROGRESS_SECONDS"] = "0"
    try:
        done = run_cli("tune", model, toy_dataset, "--report", tmp_path / "tune.json")
        again = run_cli("tune", model, toy_dataset, "--report", tmp_path / "tune.json")  # its own: rewritten
    finally:
        del os.environ["VCORNER_PROGRESS_SECONDS"]
    assert done.exit_code == 0 and again.exit_code == 0, done.output
    assert "tune: network maps" in done.output


def test_export_keeps_a_foreign_model_that_sits_beside_the_checkpoint(tmp_path):
    """A review found that any model.onnx in the checkpoint's folder counted as the run's own export."""
    folder = tiny_checkpoint(tmp_path / "downloads")
    (folder / "model.onnx").write_bytes(b"someone else's model")
    assert "--force" in refused(run_cli("export", folder / "model.safetensors", "--no-check"))
    assert (folder / "model.onnx").read_bytes() == b"someone else's model"


def test_batch_keeps_files_of_its_names_that_vcorner_did_not_write(tmp_path):
    """A review found that a batch into a folder holding the user's own corners.csv or measurements.csv replaced
    them; a batch's own files (its header, run.json) are still resumed and rewritten."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "corners.csv").write_text("patient,score\nA,3\n")
    (out / "measurements.csv").write_text("my notes\n")
    args = ("batch", EXAMPLES, "--centers", EXAMPLES / "centers.csv", "--out", out, "--measure")
    line = refused(run_cli(*args))
    assert "--force" in line and "corners.csv" in line and "measurements.csv" in line
    assert (out / "corners.csv").read_text() == "patient,score\nA,3\n"
    assert run_cli(*args, "--force").exit_code == 0
    kept = next(out.glob("previous-*"))
    assert (kept / "corners.csv").read_text() == "patient,score\nA,3\n" and (kept / "measurements.csv").is_file()
    assert run_cli(*args).exit_code == 0  # its own outputs now: resumed
