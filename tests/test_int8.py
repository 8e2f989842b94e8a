"""CPU INT8: static QDQ quantization of the tiny model, and the rule that decides when INT8 is used."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from vcorner.backends.ort.runner import OnnxRuntimeRunner  # noqa: E402
from vcorner.export.int8 import (  # noqa: E402
    calibration_patches,
    quantize_int8,
    tail_nodes,
    upsampling_as_conv,
)
from vcorner.io.records import InputError  # noqa: E402
from vcorner.models.card import sha256_file  # noqa: E402
from vcorner.models.evidence import int8_wins, read_rows  # noqa: E402
from vcorner.models.modelfile import read_model_card  # noqa: E402
from vcorner.models.variants import int8_path  # noqa: E402

NORMALIZATION_OPS = {"Cast", "ReduceMin", "Sub", "ReduceSum", "Add", "Div"}
MAX_REL_DIFF = 0.10
"""INT8 maps stay within 10% of the FP32 map's peak, per pixel (measured: 2-3% on the tiny model)."""
MAX_L1 = 0.05
"""... and within 0.05 in total variation per map (measured: 0.011-0.019)."""


@pytest.fixture(scope="module", params=["s8s8", "u8s8"])
def quantized(request, tiny_onnx, toy_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / f"tiny.{request.param}.onnx"
    return quantize_int8(tiny_onnx, out, toy_dataset, n_patches=48, scheme=request.param), request.param


@pytest.fixture(scope="module")
def patches(tiny_onnx, toy_dataset):
    return calibration_patches(toy_dataset / "centers.csv", read_model_card(tiny_onnx), n_patches=40, seed=7)


def test_graph_is_qdq_with_the_normalization_left_in_fp32(quantized):
    path, scheme = quantized
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert "ConvTranspose" not in ops and ops.count("DepthToSpace") == 4  # upsampling runs as 1x1 Conv
    producer = {o: n for n in graph.node for o in n.output}
    consumers = {i: [n for n in graph.node if i in n.input] for n in graph.node for i in n.output}
    tail = [n for n in graph.node if n.op_type in NORMALIZATION_OPS]
    assert {n.op_type for n in tail} == NORMALIZATION_OPS
    for node in tail:
        assert not any(c.op_type == "QuantizeLinear" for o in node.output for c in consumers.get(o, []))
        if node.op_type != "Cast":  # Cast takes the head's (dequantized) output and makes it FP32
            assert not any(producer[i].op_type == "DequantizeLinear" for i in node.input if i in producer)
    assert producer["maps"].op_type == "Div"
    zero_point = {i.name: i for i in graph.initializer}["patches_zero_point"]  # the input's activation type
    assert zero_point.data_type == (onnx.TensorProto.INT8 if scheme == "s8s8" else onnx.TensorProto.UINT8)


def test_tail_nodes_lists_the_normalization(tiny_onnx):
    graph = onnx.load(str(tiny_onnx)).graph
    by_name = {n.name: n.op_type for n in graph.node}
    tail = tail_nodes(graph, keep_head_fp32=False)
    assert NORMALIZATION_OPS <= {by_name[name] for name in tail}
    assert {by_name[name] for name in tail} <= NORMALIZATION_OPS | {"Constant"}
    assert by_name[tail_nodes(graph, keep_head_fp32=True)[0]] == "Conv"


def test_upsampling_rewrite_is_exact_in_fp32(tiny_onnx, patches, tmp_path):
    graph = onnx.load(str(tiny_onnx))
    assert upsampling_as_conv(graph) == 4
    ops = [n.op_type for n in graph.graph.node]
    assert "ConvTranspose" not in ops and ops.count("DepthToSpace") == 4
    onnx.checker.check_model(graph)
    onnx.save(graph, str(tmp_path / "rewritten.onnx"))
    with OnnxRuntimeRunner(tiny_onnx) as original, OnnxRuntimeRunner(tmp_path / "rewritten.onnx") as rewritten:
        assert np.abs(rewritten.infer(patches) - original.infer(patches)).max() <= 1e-7


def test_maps_stay_close_to_fp32_and_sum_to_one(quantized, tiny_onnx, patches):
    path, _ = quantized
    with OnnxRuntimeRunner(tiny_onnx) as fp32, OnnxRuntimeRunner(path) as int8:
        reference, maps = fp32.infer(patches), int8.infer(patches)
    assert maps.shape == reference.shape and maps.dtype == np.float32
    assert np.abs(maps - reference).max() <= MAX_REL_DIFF * reference.max()
    assert np.abs(maps - reference).sum(axis=(1, 2, 3)).max() <= MAX_L1
    assert np.allclose(maps.sum(axis=(1, 2, 3)), 1.0, atol=1e-5)
    assert maps.min() >= 0.0


def test_card_travels_with_the_int8_model(quantized, tiny_onnx):
    path, scheme = quantized
    card = read_model_card(path)  # sidecar present and its checksum matches
    note = card.training["quantization"]
    assert note["precision"] == "int8" and note["scheme"] == scheme and note["calibration_patches"] == 48
    assert note["upsampling_as_conv"] == 4 and note["source_sha256"] == sha256_file(tiny_onnx)
    assert card.sampling == read_model_card(tiny_onnx).sampling
    path.with_name(f"{path.name}.json").unlink()
    assert read_model_card(path).training["quantization"]["precision"] == "int8"  # from the ONNX metadata


def test_calibration_patches_are_standardized_and_spread_over_images(tiny_onnx, toy_dataset):
    card = read_model_card(tiny_onnx)
    patches = calibration_patches(toy_dataset, card, n_patches=12, seed=0)
    assert patches.shape == (12, 1, 64, 64) and patches.dtype == np.float32
    assert np.allclose(patches.mean(axis=(1, 2, 3)), 0.0, atol=1e-4)
    assert np.allclose(patches.std(axis=(1, 2, 3)), 1.0, atol=1e-2)
    with pytest.raises(InputError, match="calibration"):
        calibration_patches(tiny_onnx.parent, card)


def test_int8_path_sits_beside_the_model(tmp_path):
    assert int8_path(tmp_path / "m.onnx") == tmp_path / "m.int8.onnx"


def _row(precision: str, batch: int, rate: float, delta: float | None = 0.0, sha: str = "abc", **extra) -> dict:
    return {"model_sha256": sha, "backend": "ort", "device": "cpu", "status": "ok", "precision": precision,
            "batch": batch, "patches_per_s": rate, "p2p_delta": delta, **extra}


def test_int8_wins_only_when_faster_by_ten_percent_at_no_accuracy_cost():
    fp32 = [_row("fp32", 64, 400.0), _row("fp32", 256, 420.0)]
    assert int8_wins(fp32 + [_row("int8", 256, 470.0, 0.01)], "abc").use_int8
    slow = int8_wins(fp32 + [_row("int8", 256, 450.0, 0.0)], "abc")
    assert not slow.use_int8 and "fast" in slow.reason and slow.speedup == pytest.approx(450 / 420)
    costly = int8_wins(fp32 + [_row("int8", 256, 700.0, 0.2)], "abc")
    assert not costly.use_int8 and "accuracy" in costly.reason
    assert not int8_wins(fp32 + [_row("int8", 256, 700.0, float("nan"))], "abc").use_int8


def test_int8_decision_uses_the_model_the_batch_and_the_latest_rows():
    rows = [_row("fp32", 64, 400.0), _row("int8", 64, 300.0), _row("int8", 64, 500.0),  # re-measured: wins
            _row("fp32", 256, 400.0), _row("int8", 256, 300.0),
            _row("int8", 64, 900.0, sha="other"), _row("int8", 64, 900.0, status="skipped")]
    assert int8_wins(rows, "abc", batch=64).use_int8
    assert not int8_wins(rows, "abc", batch=256).use_int8
    missing = int8_wins(rows, "nope")
    assert not missing.use_int8 and missing.batch is None and "no INT8" in missing.reason
    assert not int8_wins(rows, "abc", batch=64, int8_sha256="f00").use_int8  # timed another INT8 file
    pinned = [*rows[:3], _row("int8", 64, 500.0, variant_sha256="f00")]
    assert int8_wins(pinned, "abc", batch=64, int8_sha256="f00").use_int8


def test_int8_decision_compares_rows_of_one_run_only():
    first = [_row("fp32", 64, 200.0, date="1"), _row("int8", 64, 400.0, date="1")]
    busy = [_row("fp32", 64, 100.0, date="2")]  # a later FP32-only run on a loaded machine
    decision = int8_wins(first + busy, "abc")
    assert decision.use_int8 and decision.speedup == pytest.approx(2.0)
    later = [_row("fp32", 64, 300.0, date="3"), _row("int8", 64, 310.0, date="3")]
    assert not int8_wins(first + busy + later, "abc").use_int8  # the latest paired run decides


def test_read_rows_skips_bad_lines(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\nnot json\n\n[1, 2]\n{"b": 2}\n', encoding="utf-8")
    assert read_rows(path) == [{"a": 1}, {"b": 2}]
    assert read_rows(tmp_path / "missing.jsonl") == []


def test_evidence_shipped_beside_the_model_decides_and_local_runs_supersede_it(tmp_path):
    import json
    import os

    from vcorner.hardware.cpu import cpu_info
    from vcorner.models.card import sha256_file
    from vcorner.models.evidence import int8_decision
    from vcorner.models.evidence import shipped_evidence_path as evidence_path

    def int8_variant(model, results):
        decision = int8_decision((evidence_path(model), results), sha256_file(model), sha256_file(int8),
                                 cpu_info()[0], os.cpu_count(), cpu_info()[1])
        return int8 if decision.use_int8 else model

    model, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    model.write_bytes(b"fp32 graph")
    int8.write_bytes(b"int8 graph")
    here = {"cpu": cpu_info()[0], "cores": os.cpu_count(), "cpu_flags": cpu_info()[1]}

    def rows(fp32_rate, int8_rate, date, machine):
        common = {"sha": sha256_file(model), "date": date, "machine": machine}
        return [_row("fp32", 64, fp32_rate, variant_sha256=sha256_file(model), **common),
                _row("int8", 64, int8_rate, variant_sha256=sha256_file(int8), **common)]

    def write(path, lines):
        path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")

    assert evidence_path(model) == tmp_path / "m.benchmark.jsonl"
    none = tmp_path / "no-results.jsonl"
    write(evidence_path(model), rows(400.0, 800.0, "1", here))
    assert int8_variant(model, results=none) == int8  # the shipped evidence alone decides
    write(evidence_path(model), rows(400.0, 800.0, "1", {**here, "cpu": "Another CPU"}))
    assert int8_variant(model, results=none) == model  # measured on another machine: does not apply
    write(evidence_path(model), rows(400.0, 800.0, "1", here))
    local = tmp_path / "local.jsonl"
    write(local, rows(400.0, 410.0, "2", here))  # this machine, measured later: INT8 barely faster
    assert int8_variant(model, results=local) == model


def test_the_shipped_evidence_times_exactly_the_shipped_files():
    from vcorner.models.card import sha256_file
    from vcorner.models.evidence import shipped_evidence_path as evidence_path
    from vcorner.models.modelfile import default_model_path

    model = default_model_path()
    rows = read_rows(evidence_path(model))
    assert rows and {r["model_sha256"] for r in rows} == {sha256_file(model)}
    assert {r["variant_sha256"] for r in rows if r["precision"] == "int8"} == {sha256_file(int8_path(model))}


def test_auto_reads_int8_evidence_from_the_documented_places_never_the_current_folder(tmp_path, monkeypatch,
                                                                                      tiny_onnx, toy_dataset):
    import json
    import os
    import shutil

    from vcorner.backends import resolve_model
    from vcorner.hardware.capabilities import Capabilities
    from vcorner.models.evidence import user_results_path

    model = tmp_path / "models" / "m.onnx"
    model.parent.mkdir()
    for suffix in ("", ".json"):
        shutil.copy(f"{tiny_onnx}{suffix}", f"{model}{suffix}")
    int8 = quantize_int8(model, int8_path(model), toy_dataset, n_patches=16)
    caps = Capabilities(cpu="The CPU", cores=os.cpu_count() or 1)
    machine = {"cpu": caps.cpu, "cores": caps.cores}
    winning = [_row("fp32", 64, 400.0, sha=sha256_file(model), date="1", machine=machine,
                    variant_sha256=sha256_file(model)),
               _row("int8", 64, 800.0, sha=sha256_file(model), date="1", machine=machine,
                    variant_sha256=sha256_file(int8))]
    repo = tmp_path / "repo"  # a vcorner checkout holding winning rows: the folder must not matter
    for folder in ("benchmarks/results", "vcorner"):
        (repo / folder).mkdir(parents=True)
    (repo / "pyproject.toml").write_text("", encoding="utf-8")
    (repo / "benchmarks" / "results" / "benchmark.jsonl").write_text("".join(json.dumps(r) + "\n" for r in winning))
    monkeypatch.setenv("VCORNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(repo)
    assert resolve_model(model, caps=caps).graph == model
    user_results_path().parent.mkdir(parents=True)
    user_results_path().write_text("".join(json.dumps(r) + "\n" for r in winning))  # where benchmark appends
    resolved = resolve_model(model, caps=caps)
    assert resolved.graph == int8 and resolved.precision == "int8" and "INT8 wins" in resolved.reason
    assert resolve_model(model, caps=Capabilities(cpu="Another CPU", cores=caps.cores)).graph == model


@pytest.fixture
def model_pair(tmp_path, tiny_onnx, toy_dataset, monkeypatch):
    """A copy of the tiny model with its INT8 variant, an empty user cache, and the INT8 file's accuracy recorded
    by a benchmark on another machine (rows shipped beside the model)."""
    import json
    import shutil

    from vcorner.models.evidence import shipped_evidence_path

    model = tmp_path / "models" / "m.onnx"
    model.parent.mkdir()
    for suffix in ("", ".json"):
        shutil.copy(f"{tiny_onnx}{suffix}", f"{model}{suffix}")
    int8 = quantize_int8(model, int8_path(model), toy_dataset, n_patches=16)
    elsewhere = {"cpu": "AMD EPYC", "cores": 2, "cpu_flags": ["avx2", "avx512f", "avx512_vnni"]}
    rows = [_row("fp32", 64, 400.0, sha=sha256_file(model), date="1", machine=elsewhere,
                 variant_sha256=sha256_file(model)),
            _row("int8", 64, 800.0, 0.002, sha=sha256_file(model), date="1", machine=elsewhere,
                 variant_sha256=sha256_file(int8))]
    shipped_evidence_path(model).write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("VCORNER_CACHE", str(tmp_path / "cache"))
    return model, int8


def this_cpu(*flags: str):
    """This machine's CPU model and cores (as the self-check records them), with the given ISA flags."""
    import os

    from vcorner.hardware.capabilities import Capabilities
    from vcorner.hardware.cpu import cpu_info

    return Capabilities(cpu=cpu_info()[0], cpu_flags=flags, cores=os.cpu_count() or 1)


def test_a_vnni_cpu_without_a_benchmark_gets_a_cached_self_check(model_pair, caplog, monkeypatch):
    import logging

    from vcorner.backends import materialize, resolve_model
    from vcorner.export import int8_check
    from vcorner.models.evidence import read_rows, user_results_path

    model, int8 = model_pair
    caps = this_cpu("avx2", "avx512_vnni")
    monkeypatch.setattr(int8_check, "cpu_info", lambda: (caps.cpu, list(caps.cpu_flags)))  # this CPU, with VNNI
    first = resolve_model(model, caps=caps)
    assert first.pending == ("int8_check",) and first.graph == model and "self-check" in first.reason
    with caplog.at_level(logging.WARNING, logger="vcorner.backends.ort.cache"):
        checked = materialize(first)
    rows = read_rows(user_results_path())
    assert [(r["precision"], r["source"]) for r in rows] == [("fp32", "self-check"), ("int8", "self-check")]
    assert rows[1]["p2p_delta"] == 0.002 and all(r["patches_per_s"] > 0 for r in rows)
    speedup = rows[1]["patches_per_s"] / rows[0]["patches_per_s"]
    assert checked.precision == ("int8" if speedup >= 1.10 else "fp32") and checked.pending == ()
    assert checked.graph == (int8 if checked.precision == "int8" else model)
    assert "INT8 self-check on this CPU" in caplog.text
    again = resolve_model(model, caps=caps)  # the next run decides from the recorded rows, without timing
    assert again.pending == () and again.graph == checked.graph
    other = resolve_model(model, caps=dataclasses.replace(caps, cpu="Another CPU"))
    assert other.pending == ("int8_check",)  # rows of another CPU never apply


def test_a_cpu_without_vnni_or_amx_stays_fp32_with_the_reason(model_pair):
    from vcorner.backends import resolve_model

    model, _ = model_pair
    resolved = resolve_model(model, caps=this_cpu("avx2"))
    assert resolved.graph == model and resolved.pending == () and "no VNNI or AMX" in resolved.reason


def test_without_recorded_accuracy_no_self_check_runs(model_pair):
    from vcorner.backends import resolve_model
    from vcorner.models.evidence import shipped_evidence_path

    model, _ = model_pair
    shipped_evidence_path(model).unlink()
    resolved = resolve_model(model, caps=this_cpu("amx_int8"))
    assert resolved.graph == model and resolved.pending == () and "no recorded accuracy" in resolved.reason


def test_precision_option_overrides_the_choice(model_pair, toy_dataset, tmp_path):
    from typer.testing import CliRunner

    from vcorner.cli import app

    model, _ = model_pair

    def run(precision: str):
        return CliRunner().invoke(app, ["batch", str(toy_dataset), "--centers", str(toy_dataset / "centers.csv"),
                                        "--model", str(model), "--precision", precision,
                                        "--out", str(tmp_path / precision)])

    assert "backend ort-cpu-int8" in run("int8").output.replace("\n", " ")
    fp32 = run("fp32")
    assert fp32.exit_code == 0 and "backend ort-cpu)" in fp32.output.replace("\n", " ")
    assert '"resolved": "ort on cpu: m.onnx (fp32)' in (tmp_path / "fp32" / "run.json").read_text()
    bad = run("int4")
    assert bad.exit_code == 2 and "--precision must be one of auto, fp32, int8" in bad.output


def test_rows_of_a_vnni_cpu_never_decide_for_an_avx2_cpu_of_the_same_name(model_pair):
    """Measured: default.int8.onnx, 1.9x FP32 on a 2-core AVX-512 VNNI "AMD EPYC", ran at 0.97x FP32 and 0.10 mm
    worse mean P2P on a 2-core AVX2-only "AMD EPYC"; name and core count alone matched them."""
    from vcorner.backends import resolve_model
    from vcorner.hardware.capabilities import Capabilities

    model, int8 = model_pair
    vnni = Capabilities(cpu="AMD EPYC", cores=2, cpu_flags=("avx2", "avx512f", "avx512_vnni"))
    assert resolve_model(model, caps=vnni).graph == int8  # the shipped rows were recorded on this kind of CPU
    avx2 = Capabilities(cpu="AMD EPYC", cores=2, cpu_flags=("avx2",))
    resolved = resolve_model(model, caps=avx2)
    assert resolved.graph == model and "no VNNI or AMX" in resolved.reason


def test_batch_on_an_avx2_cpu_named_like_the_benchmarked_vnni_one_runs_fp32_and_says_why(model_pair, toy_dataset,
                                                                                         tmp_path, monkeypatch):
    """The case seen: rows of a VNNI "AMD EPYC" made `vcorner batch` run INT8 on an AVX2-only "AMD EPYC"."""
    import json
    import os

    from typer.testing import CliRunner

    from vcorner.cli import app
    from vcorner.hardware import capabilities
    from vcorner.models.evidence import shipped_evidence_path

    model, _ = model_pair
    rows = [json.loads(line) for line in shipped_evidence_path(model).read_text().splitlines()]
    for row in rows:  # recorded on a VNNI machine with this machine's name and core count
        row["machine"] = {"cpu": "AMD EPYC", "cores": os.cpu_count(), "cpu_flags": ["avx2", "avx512_vnni"]}
    shipped_evidence_path(model).write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(capabilities, "cpu_info", lambda: ("AMD EPYC", ["avx2"]))
    monkeypatch.chdir(tmp_path)  # and the folder the command runs in holds nothing it reads
    result = CliRunner().invoke(app, ["batch", str(toy_dataset), "--centers", str(toy_dataset / "centers.csv"),
                                      "--model", str(model), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "backend ort-cpu)" in result.output.replace("\n", " ")
    resolved = json.loads((tmp_path / "out" / "run.json").read_text())["resolved"]
    assert "m.onnx (fp32)" in resolved and "no VNNI or AMX" in resolved


def test_cpu_inference_gets_its_share_of_the_cores_and_an_explicit_thread_count_is_kept(model_pair):
    """The resolved CPU graph runs on inference's share of the cores for its precision and the card's patches per
    vertebra (the split itself: test_batch.py); an explicit count is kept."""
    from vcorner.backends import resolve_model
    from vcorner.hardware.capabilities import Capabilities
    from vcorner.hardware.cpu import inference_threads
    from vcorner.models.modelfile import read_model_card

    model, int8 = model_pair
    per_vertebra = read_model_card(model).sampling.patches_per_vertebra
    for cores in (1, 2, 16):
        caps = Capabilities(cpu="Some CPU", cores=cores)
        quantized = resolve_model(model, caps=caps, precision="int8")
        expected = inference_threads("int8", per_vertebra, cores)
        assert quantized.graph == int8 and quantized.threads == expected
        assert f"{expected} inference thread(s) of {cores} core(s)" in quantized.reason
        assert resolve_model(model, caps=caps, precision="fp32").threads == inference_threads("fp32", per_vertebra,
                                                                                                cores)
        assert resolve_model(model, caps=caps, precision="int8", threads=3).threads == 3
    assert inference_threads("int8", per_vertebra, 16) < inference_threads("fp32", per_vertebra, 16) < 16
