"""``vcorner batch``: outputs, bad input, resume, exit codes, CLI and subprocess without torch."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vcorner.cli import app
from vcorner.pipeline.outputs import CORNER_COLUMNS, CornerJournal


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def xrays(tmp_path, toy_dataset):
    """A copy of the toy dataset plus a corrupt image, a missing one, and an escaping path in the CSV."""
    root = tmp_path / "xrays"
    shutil.copytree(toy_dataset, root)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with open(root / "centers.csv", "a", encoding="utf-8") as handle:
        handle.write("broken.png,C3,100,100\nbroken.png,C4,100,160\n")
        handle.write("gone.png,C3,100,100\ngone.png,C4,100,160\n")
        handle.write("../outside.png,C3,100,100\n../outside.png,C4,100,160\n")
    return root


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_batch_writes_every_corner_and_lists_failures(xrays, tiny_onnx, tmp_path):
    out = tmp_path / "out"
    result = run_cli("batch", xrays, "--centers", xrays / "centers.csv", "--out", out, "--model", tiny_onnx,
                     "--json", "--vis")
    assert result.exit_code == 1, result.output  # some images failed
    rows = read_rows(out / "corners.csv")
    assert list(rows[0]) == list(CORNER_COLUMNS)
    assert len(rows) == 4 * 5 * 4  # 4 good images x 5 vertebrae x 4 corners
    assert {r["image"] for r in rows} == {f"toy{i}.png" for i in range(4)}
    for r in rows:
        assert 0.0 <= float(r["confidence"]) <= 1.0 and r["source"] in ("network", "prior")
        assert float(r["sd_major_px"]) >= float(r["sd_minor_px"]) > 0
    errors = {r["image"]: r["reason"] for r in read_rows(out / "errors.csv")}
    assert set(errors) == {"broken.png", "gone.png", "../outside.png"}
    assert "outside" in errors["../outside.png"] or ".." in errors["../outside.png"]
    assert all("\n" not in reason for reason in errors.values())
    assert json.loads((out / "json" / "toy0.png.json").read_text())["vertebrae"][0]["name"] == "C3"
    assert (out / "vis" / "toy0.png").stat().st_size > 1000
    assert not (tmp_path / "outside.png").exists()


def test_resume_skips_finished_images_without_duplicates(toy_dataset, tiny_onnx, tmp_path):
    out = tmp_path / "out"
    args = ("batch", toy_dataset, "--centers", toy_dataset / "centers.csv", "--out", out, "--model", tiny_onnx)
    assert run_cli(*args).exit_code == 0
    first = (out / "corners.csv").read_text()
    # Simulate a kill mid-write: a partial trailing row of an extra image.
    with open(out / "corners.csv", "a", encoding="utf-8") as handle:
        handle.write("toy9.png,C3,superior_left,1.0")
    second = run_cli(*args)
    assert second.exit_code == 0
    assert (out / "corners.csv").read_text() == first


def test_journal_keeps_only_complete_images(tmp_path):
    path = tmp_path / "corners.csv"
    row = ["a.png", "C3", "superior_left", "1", "2", "0.5", "1", "1", "0", "network", ""]
    path.write_text(",".join(CORNER_COLUMNS) + "\n" + "\n".join(",".join(row) for _ in range(4)) + "\n"
                    + ",".join(["b.png"] + row[1:]) + "\n")
    journal = CornerJournal(path, {"a.png": 4, "b.png": 4}, resume=True)
    journal.close()
    assert journal.done == {"a.png"}
    assert len(read_rows(path)) == 4


def test_usage_errors_exit_2_with_one_line(tmp_path, tiny_onnx):
    result = run_cli("batch", tmp_path / "nope", "--centers", tmp_path / "c.csv", "--model", tiny_onnx,
                     "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert "no such directory" in result.output and "Traceback" not in result.output
    (tmp_path / "d").mkdir()
    (tmp_path / "c.csv").write_text("image,x,y\na.png,1,2\n")
    result = run_cli("batch", tmp_path / "d", "--centers", tmp_path / "c.csv", "--model", tiny_onnx,
                     "--out", tmp_path / "o")
    assert result.exit_code == 2 and "missing column(s) vertebra" in result.output


def test_batch_subprocess_never_imports_torch(toy_dataset, tiny_onnx, tmp_path):
    script = (
        "import sys\n"
        "from vcorner.cli import main\n"
        f"sys.argv = ['vcorner', 'batch', {str(toy_dataset)!r}, '--centers', {str(toy_dataset / 'centers.csv')!r},"
        f" '--out', {str(tmp_path / 'out')!r}, '--model', {str(tiny_onnx)!r}]\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    code = exit.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(read_rows(tmp_path / "out" / "corners.csv")) == 4 * 5 * 4


def test_more_cpu_workers_give_the_same_outputs(xrays, tiny_onnx, tmp_path):
    def run(workers: int):
        out = tmp_path / f"w{workers}"
        result = run_cli("batch", xrays, "--centers", xrays / "centers.csv", "--out", out, "--model", tiny_onnx,
                         "--workers", workers, "--json")
        assert result.exit_code == 1  # the broken, missing and escaping images
        return [(out / name).read_text() for name in ("corners.csv", "errors.csv", "json/toy2.png.json")]

    assert run(3) == run(1)


def test_cpu_workers_default_to_the_cores_cpu_inference_leaves_and_all_cores_beside_gpu():
    import os

    from vcorner.hardware.cpu import inference_threads
    from vcorner.pipeline.local import MAX_DEFAULT_WORKERS, available_cores, cpu_workers
    from vcorner.pipeline.run import BatchSettings
    from vcorner.runtime.base import Runner

    class Fake(Runner):
        def infer(self, batch):
            return batch

    cpu, gpu = Fake(), Fake()
    gpu.on_gpu = True
    cores = min(available_cores(), MAX_DEFAULT_WORKERS)
    assert cpu_workers(cpu, BatchSettings()) == 1 and cpu_workers(gpu, BatchSettings()) == cores
    cpu.threads = 1
    assert cpu_workers(cpu, BatchSettings()) == max(1, cores - 1)
    assert cpu_workers(gpu, BatchSettings(workers=2)) == 2 and 1 <= available_cores() <= (os.cpu_count() or 1)
    # the loaders find the centres: the detector is most of the work, every core loads
    assert cpu_workers(cpu, BatchSettings(), detecting=True) == cores
    assert cpu_workers(cpu, BatchSettings(workers=1), detecting=True) == 1
    # the shipped sampling, 2 patches per vertebra: INT8 costs about what decoding and corner search do, FP32 twice
    assert [inference_threads("int8", 2, n) for n in (1, 2, 3, 4, 16)] == [1, 1, 2, 2, 8]
    assert [inference_threads("fp32", 2, n) for n in (1, 2, 3, 4, 16)] == [1, 2, 2, 3, 11]
    assert inference_threads("int8", 18, 2) == 2  # 18 patches per vertebra: inference is most of the work


def _toy_run(toy_dataset, tiny_onnx, out, workers: int, runner=None):
    from vcorner.backends.ort.runner import OnnxRuntimeRunner
    from vcorner.models.modelfile import read_model_card
    from vcorner.pipeline.executor import run_batch
    from vcorner.pipeline.local import ThreadExecutor
    from vcorner.pipeline.run import BatchRun, BatchSettings
    from vcorner.stages.plan import make_plan

    plan = make_plan(toy_dataset, toy_dataset / "centers.csv")
    run = BatchRun(plan, out, read_model_card(tiny_onnx), BatchSettings(resume=False, workers=workers), batch_size=16)
    with runner or OnnxRuntimeRunner(tiny_onnx) as entered:
        return run_batch(run, ThreadExecutor(entered))


@pytest.mark.parametrize("workers", [1, 3])
def test_a_failed_write_fails_only_its_image(toy_dataset, tiny_onnx, tmp_path, monkeypatch, workers):
    calls = []
    add = CornerJournal.add

    def flaky(self, rows):
        calls.append(rows[0][0])
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        add(self, rows)

    monkeypatch.setattr(CornerJournal, "add", flaky)
    summary = _toy_run(toy_dataset, tiny_onnx, tmp_path / "out", workers)
    full = f"cannot write {tmp_path / 'out' / 'corners.csv'}: No space left on device"  # names the file
    assert summary.done == 3 and list(summary.failed.values()) == [full]
    written = {r["image"] for r in read_rows(tmp_path / "out" / "corners.csv")}
    assert written == set(calls) - set(summary.failed) and len(written) == 3


@pytest.mark.parametrize("workers", [1, 3])
def test_an_unexpected_error_preparing_an_image_fails_only_that_image(toy_dataset, tiny_onnx, tmp_path,
                                                                      monkeypatch, workers):
    from vcorner.pipeline import steps

    prepare = steps.prepare

    def broken(item, *args, **kwargs):
        if item.record.file == "toy1.png":
            raise RuntimeError("cv2.error: (-215) assertion failed")
        return prepare(item, *args, **kwargs)

    monkeypatch.setattr(steps, "prepare", broken)
    summary = _toy_run(toy_dataset, tiny_onnx, tmp_path / "out", workers)
    assert summary.done == 3 and "RuntimeError: cv2.error" in summary.failed["toy1.png"]


def test_failing_inference_leaves_no_loader_threads(toy_dataset, tiny_onnx, tmp_path):
    import threading

    from vcorner.io.records import MachineError
    from vcorner.runtime.base import Runner

    class Broken(Runner):
        on_gpu = True  # several loader threads

        def infer(self, batch):
            if len(batch) == 1:  # the warm-up's blank patch: the device is lost later, amid the images
                return batch.copy()
            raise RuntimeError("device lost")

    with pytest.raises(MachineError, match="inference failed on .*RuntimeError: device lost"):
        _toy_run(toy_dataset, tiny_onnx, tmp_path / "out", 3, Broken())
    alive = [t.name for t in threading.enumerate() if t.name.startswith("vcorner-")]
    assert not alive, alive


def test_exit_codes_tell_the_users_options_and_files_apart_from_the_machine(xrays, tiny_onnx, tmp_path, monkeypatch):
    """Bad options exit 2 before OUT exists; bad image files exit 1, each listed in errors.csv; a runtime that fails
    amid the images exits 3 with one line, keeping the images finished before it (not 2: the command was right)."""
    from vcorner.backends.ort.runner import OnnxRuntimeRunner

    base = ("batch", xrays, "--centers", xrays / "centers.csv", "--model", tiny_onnx, "--batch-size", 8)
    bad_option = run_cli(*base, "--out", tmp_path / "o2", "--precision", "int4")
    assert bad_option.exit_code == 2 and "--precision must be one of" in bad_option.output
    assert not (tmp_path / "o2").exists()

    bad_files = run_cli(*base, "--out", tmp_path / "o1")
    assert bad_files.exit_code == 1, bad_files.output
    errors = (tmp_path / "o1" / "errors.csv").read_text()
    assert all(name in errors for name in ("broken.png", "gone.png", "outside.png"))

    calls = []
    infer = OnnxRuntimeRunner.infer

    def lost(self, batch):
        calls.append(len(batch))
        if len(calls) > 5:  # the warm-up and 4 batches of 8 pass (some images whole); the device is then lost
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore lines")
        return infer(self, batch)

    monkeypatch.setattr(OnnxRuntimeRunner, "infer", lost)
    machine = run_cli(*base, "--out", tmp_path / "o3", "--workers", 1)
    assert machine.exit_code == 3, machine.output
    assert "inference failed on ort-cpu: RuntimeError: CUDA error: an illegal memory access" in machine.output
    assert "not of your input" in machine.output and "more lines" not in machine.output
    kept = {row["image"] for row in read_rows(tmp_path / "o3" / "corners.csv")}
    assert kept and kept < {row["image"] for row in read_rows(tmp_path / "o1" / "corners.csv")}


def test_a_full_disk_is_the_machines_failure_and_a_missing_folder_the_users(toy_dataset, tiny_onnx, tmp_path,
                                                                          monkeypatch):
    import errno

    from vcorner.pipeline import session

    base = ("batch", toy_dataset, "--centers", toy_dataset / "centers.csv", "--model", tiny_onnx)
    missing = run_cli("batch", tmp_path / "nowhere", "--centers", toy_dataset / "centers.csv", "--out",
                      tmp_path / "o2", "--model", tiny_onnx)
    assert missing.exit_code == 2, missing.output

    def full(path, *args):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(session, "write_errors", full)
    result = run_cli(*base, "--out", tmp_path / "o3")
    assert result.exit_code == 3, result.output
    assert "errors.csv: No space left on device (a failure of this machine" in result.output
