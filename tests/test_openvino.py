"""OpenVINO runner: parity with ONNX Runtime on real phantom patches (shipped models), BF16 and INT8 within stated
bounds, batch and hint modes alike, and the one-line refusals."""

from __future__ import annotations

import copy
import sys
import threading
import time

import numpy as np
import pytest

openvino = pytest.importorskip("openvino")

from vcorner.backends import open_detector  # noqa: E402
from vcorner.backends.openvino.runner import INSTALL, OpenVinoRunner, check_precision, split_batch  # noqa: E402
from vcorner.backends.ort.runner import OnnxRuntimeRunner  # noqa: E402
from vcorner.evaluation.metrics import match, table1_row  # noqa: E402
from vcorner.evaluation.tune import as_predictions, decode_jobs, infer_records  # noqa: E402
from vcorner.geometry.patches import build_pyramid  # noqa: E402
from vcorner.io.annotations import read_annotations  # noqa: E402
from vcorner.io.images import read_image  # noqa: E402
from vcorner.io.records import InputError, MachineError  # noqa: E402
from vcorner.models.modelfile import default_detector_path, default_model_path, read_model_card  # noqa: E402
from vcorner.models.variants import int8_path  # noqa: E402
from vcorner.phantoms.dataset import synthesize_dataset  # noqa: E402
from vcorner.stages.detect import detect_centres  # noqa: E402

FP32_REL = 1e-4
"""OpenVINO FP32 maps within 1e-4 of ONNX Runtime FP32's peak, per pixel: the same FP32 arithmetic in another
summation order (measured: 7e-7 on these phantoms)."""
BF16_REL = 0.05
"""BF16 maps within 5% of the FP32 peak, per pixel: BF16 keeps 8 mantissa bits (0.4% per rounding) through ~20
layers (measured: 0.9% on these phantoms, 1.0% on 40, benchmarks/results/openvino_check.md)."""
P2P_CHANGE_MM = 0.01
"""Mean P2P change allowed to a faster path (issue #34's tolerance for choosing one)."""
INT8_REL = 0.02
"""OpenVINO and ONNX Runtime on the same QDQ graph: the same int8 arithmetic, requantized with roundings of
their own; maps within 2% of the peak of each other (measured: 0.6%)."""


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """(root, records, card, jobs with ONNX Runtime FP32 maps) of 3 training-renderer phantoms."""
    root = tmp_path_factory.mktemp("ov-phantoms")
    synthesize_dataset(root, 3, seed=3434, workers=1)
    records = read_annotations(root / "annotations.json")
    card = read_model_card(default_model_path())
    with OnnxRuntimeRunner(default_model_path(), threads=1) as runner:
        jobs = infer_records(root, records, runner, card, batch_size=64)
    return root, records, card, jobs


def relative_difference(maps: np.ndarray, reference: np.ndarray) -> float:
    """Largest per-patch max |maps - reference| over that patch's reference peak."""
    flat, ref = maps.reshape(len(maps), -1), reference.reshape(len(reference), -1)
    return float((np.abs(flat - ref).max(axis=1) / ref.max(axis=1)).max())


def with_runner(jobs, runner) -> list:
    """Copies of ``jobs`` whose maps ``runner`` made."""
    out = []
    for job, record in jobs:
        job = copy.copy(job)
        job.maps = runner.infer_all(job.patches, 64)
        out.append((job, record))
    return out


def mean_p2p(jobs, records, card) -> float:
    return table1_row(match(as_predictions(decode_jobs(jobs, card, card.decode)), records))["p2p_mean"]


def test_fp32_maps_match_onnxruntime(phantoms):
    _, _, _, jobs = phantoms
    with OpenVinoRunner(default_model_path(), "fp32", threads=1, patch_size=64) as runner:
        assert runner.name == "ov-cpu-fp32"
        for job, _ in jobs:
            assert relative_difference(runner.infer(job.patches), job.maps) <= FP32_REL


def test_bf16_maps_and_corners_stay_close(phantoms):
    _, records, card, jobs = phantoms
    with OpenVinoRunner(default_model_path(), "bf16", threads=1) as runner:
        assert runner.identity().endswith("+bf16")
        mine = with_runner(jobs, runner)
    differences = [relative_difference(job.maps, ref.maps) for (job, _), (ref, _) in zip(mine, jobs, strict=True)]
    assert 0 < max(differences) <= BF16_REL  # BF16 really ran: FP32 would differ by < FP32_REL
    assert abs(mean_p2p(mine, records, card) - mean_p2p(jobs, records, card)) <= P2P_CHANGE_MM


def test_int8_runs_the_qdq_graph_as_onnxruntime_does(phantoms):
    _, records, card, jobs = phantoms
    with OnnxRuntimeRunner(int8_path(default_model_path()), threads=1) as ort_int8:
        reference = with_runner(jobs, ort_int8)
    with OpenVinoRunner(int8_path(default_model_path()), "int8", threads=1) as runner:
        mine = with_runner(jobs, runner)
    for (job, _), (ref, _) in zip(mine, reference, strict=True):
        assert relative_difference(job.maps, ref.maps) <= INT8_REL
    assert abs(mean_p2p(mine, records, card) - mean_p2p(jobs, records, card)) <= P2P_CHANGE_MM


def test_fixed_batch_and_throughput_hint_give_the_same_maps(phantoms):
    _, _, _, jobs = phantoms
    patches = np.concatenate([job.patches for job, _ in jobs])[:21]
    with OpenVinoRunner(default_model_path(), "fp32", threads=2, hint="LATENCY") as dynamic:
        expected = dynamic.infer(patches)
    with OpenVinoRunner(default_model_path(), "fp32", threads=2, batch=8) as fixed:
        assert fixed.max_batch == 8
        got = fixed.infer_all(patches, fixed.max_batch)  # 8 + 8 + 5, the last padded
        with pytest.raises(InputError, match="takes 8"):
            fixed.infer(patches[:9])
    assert relative_difference(got, expected) <= FP32_REL
    with OpenVinoRunner(default_model_path(), "fp32", threads=2, hint="THROUGHPUT") as streams:
        assert relative_difference(streams.infer(patches), expected) <= FP32_REL


def test_the_centre_detector_finds_the_same_centres(phantoms):
    root, records, _, _ = phantoms
    ort_runner, card = open_detector(default_detector_path())
    image = read_image(root / records[0].file)
    pyramid = build_pyramid(image.pixels)
    ov_runner, _ = open_detector(default_detector_path(), backend="ov")  # through the registry
    assert isinstance(ov_runner, OpenVinoRunner) and ov_runner.hint == "LATENCY"
    with ort_runner, ov_runner:
        found = [detect_centres(pyramid, image.pixels.shape, records[0].file, None, card, runner.infer)
                 for runner in (ort_runner, ov_runner)]
    ort_found, ov_found = (f.record for f in found)
    assert [v.name for v in ov_found.vertebrae] == [v.name for v in ort_found.vertebrae] != []
    for a, b in zip(ov_found.vertebrae, ort_found.vertebrae, strict=True):
        assert np.allclose(a.center, b.center, atol=1e-2)


def test_split_batch_keeps_every_patch_in_order():
    batch = np.arange(21)
    chunks = split_batch(batch, 4)
    assert [len(c) for c in chunks] == [6, 6, 6, 3]
    assert np.array_equal(np.concatenate(chunks), batch)
    assert [len(c) for c in split_batch(batch[:2], 4)] == [1, 1]


def test_without_the_extra_construction_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(MachineError) as err:
        OpenVinoRunner(default_model_path())
    assert INSTALL in str(err.value) and "\n" not in str(err.value)


def test_bf16_is_refused_by_name_on_a_cpu_without_it(monkeypatch):
    with pytest.raises(MachineError, match="no BF16"):
        check_precision("bf16", ["FP32", "INT8"])
    check_precision("bf16", ["BF16", "FP32"])
    with pytest.raises(InputError, match="fp16"):
        check_precision("fp16", ["BF16", "FP16"])

    class NoBf16Core(openvino.Core):
        def get_property(self, device, name):
            if name == "OPTIMIZATION_CAPABILITIES":
                return ["FP32", "INT8"]
            return super().get_property(device, name)

    monkeypatch.setattr(openvino, "Core", NoBf16Core)
    with pytest.raises(MachineError, match="no BF16.*FP32, INT8"):
        OpenVinoRunner(default_model_path(), "bf16")
    OpenVinoRunner(default_model_path(), "fp32")  # the other precisions stay open


def test_an_unreadable_model_is_refused_in_one_line(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a graph at all" * 10)
    with pytest.raises(InputError) as err, OpenVinoRunner(junk):
        pass
    assert "OpenVINO cannot read it" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("graph", "precision", "message"), [
    ("fp32", "int8", "needs the quantized graph"),
    ("int8", "fp32", "runs as int8"),
    ("int8", "bf16", "runs as int8"),
])
def test_a_precision_the_graph_does_not_carry_is_refused(graph, precision, message):
    model = int8_path(default_model_path()) if graph == "int8" else default_model_path()
    with pytest.raises(InputError, match=message), OpenVinoRunner(model, precision):
        pass


def test_a_card_of_another_patch_size_is_refused():
    with pytest.raises(InputError, match="card says 32x32"), OpenVinoRunner(default_model_path(), patch_size=32):
        pass


def test_a_fixed_batch_with_the_throughput_hint_is_refused():
    with pytest.raises(InputError, match="LATENCY"):
        OpenVinoRunner(default_model_path(), batch=8, hint="THROUGHPUT")


@pytest.mark.parametrize("hint", ["LATENCY", "THROUGHPUT"])
def test_cancel_stops_a_running_batch(hint):
    patches = np.random.default_rng(0).standard_normal((2048, 1, 64, 64)).astype(np.float32)  # seconds of work
    outcome = {}

    def run(runner) -> None:
        started.set()
        try:
            runner.infer(patches)
            outcome["error"] = None
        except (RuntimeError, MachineError) as err:
            outcome["error"] = err

    with OpenVinoRunner(default_model_path(), "fp32", threads=2, hint=hint) as runner:
        started = threading.Event()
        thread = threading.Thread(target=run, args=(runner,))
        thread.start()
        started.wait()
        time.sleep(0.2)
        runner.cancel()
        thread.join()
    assert outcome["error"] is not None


def test_the_self_check_times_openvino_here_records_it_and_runs_what_wins(tmp_path, monkeypatch, caplog):
    """The cache step of auto where OpenVINO's accuracy is recorded (by a benchmark elsewhere) but not its speed
    here: rows of every graph timed in interleaved rounds, then OpenVINO or ONNX Runtime as those rows decide."""
    import json
    import logging
    import os
    import shutil

    from vcorner.backends import materialize, probe, resolve_model
    from vcorner.backends.openvino import cache
    from vcorner.models.card import sha256_file
    from vcorner.models.evidence import read_rows, shipped_evidence_path, user_results_path
    from vcorner.models.ov_evidence import ov_wins

    model = tmp_path / "m.onnx"
    for suffix in ("", ".json"):
        shutil.copy(f"{default_model_path()}{suffix}", f"{model}{suffix}")
    elsewhere = {"cpu": "Another CPU", "cores": 64, "cpu_flags": ["amx_int8"]}
    sha = sha256_file(model)
    shipped_evidence_path(model).write_text(json.dumps(
        {"backend": "ov", "precision": "fp32", "device": "cpu", "batch": 64, "status": "ok", "patches_per_s": 1.0,
         "p2p_delta": 0.0, "model_sha256": sha, "variant_sha256": sha, "date": "1", "machine": elsewhere}) + "\n")
    monkeypatch.setenv("VCORNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "SECONDS", 0.05)
    monkeypatch.setattr(cache, "ROUNDS", 2)
    first = resolve_model(model, caps=probe())
    assert (first.backend, first.precision, first.pending) == ("ov", "fp32", ("ov_check",))
    assert first.threads is None  # left to whichever backend wins
    with caplog.at_level(logging.WARNING, logger="vcorner.backends.openvino.cache"):
        checked = materialize(first)
    rows = read_rows(user_results_path())
    assert [(r["backend"], r["precision"], r["source"], len(r["rates"])) for r in rows] == [
        ("ort", "fp32", "self-check", 2), ("ov", "fp32", "self-check", 2)]
    assert rows[0]["machine"]["cores"] == os.cpu_count() and rows[1]["p2p_delta"] == 0.0
    expected = ov_wins(rows, sha, None, ("fp32",))
    assert checked.pending == () and checked.threads is not None
    assert (checked.backend, checked.precision) == (("ov", "fp32") if expected.precision else ("ort", "fp32"))
    assert "OpenVINO self-check on this CPU" in caplog.text and expected.reason in checked.reason
    again = resolve_model(model, caps=probe())  # decided from the recorded rows, no second check
    assert again.pending == () and again.backend == checked.backend
