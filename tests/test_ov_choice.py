"""``--backend auto`` gives a model to OpenVINO only where one sitting on this CPU shows it faster than ONNX
Runtime's graph and the corners within 0.01 mm (models/ov_evidence.py), never without OpenVINO installed; the
refusals of ``--backend ov`` and ``--precision bf16`` name their cause. None of these tests needs openvino."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from vcorner.backends import registry
from vcorner.backends.openvino import rule
from vcorner.hardware.capabilities import Capabilities
from vcorner.hardware.cpu import inference_threads
from vcorner.io.records import InputError, MachineError
from vcorner.models.card import sha256_file
from vcorner.models.evidence import user_results_path
from vcorner.models.ov_evidence import MAX_P2P_CHANGE_MM, ov_decision, ov_wins

SHA, INT8_SHA = "a" * 64, "b" * 64
HERE = {"cpu": "The CPU", "cores": 2, "cpu_flags": ["avx2", "avx512f", "avx512_vnni"]}


def row(backend: str, precision: str, rate: float, delta: float | None, date: str = "1", batch: int = 64,
        machine: dict | None = None, sha: str = SHA, source: str | None = None) -> dict:
    """A benchmark row of the format vcorner benchmark and the self-checks append."""
    return {"backend": backend, "precision": precision, "device": "cpu", "batch": batch, "status": "ok",
            "patches_per_s": rate, "p2p_delta": delta, "model_sha256": sha, "date": date,
            "variant_sha256": INT8_SHA if precision == "int8" else sha, "machine": machine or HERE,
            **({"source": source} if source else {})}


def sitting(bf16_rate: float, bf16_delta: float | None, int8_rate: float = 200.0) -> list[dict]:
    """One sitting: ONNX Runtime FP32 and INT8, OpenVINO BF16."""
    return [row("ort", "fp32", 100.0, 0.0), row("ort", "int8", int8_rate, 0.001),
            row("ov", "bf16", bf16_rate, bf16_delta)]


def test_openvino_wins_only_faster_than_the_fastest_ort_graph_and_within_the_tolerance():
    won = ov_wins(sitting(300.0, 0.004), SHA, INT8_SHA)
    assert won.precision == "bf16" and won.speedup == pytest.approx(1.5) and won.p2p_change == pytest.approx(0.003)
    assert "against ONNX Runtime int8" in won.reason
    assert ov_wins(sitting(210.0, 0.004), SHA, INT8_SHA).precision is None  # 1.05x: not 1.10x
    off = ov_wins(sitting(300.0, 0.001 + MAX_P2P_CHANGE_MM + 0.001), SHA, INT8_SHA)
    assert off.precision is None and "does not win" in off.reason
    assert ov_wins(sitting(300.0, None), SHA, INT8_SHA).precision is None  # no accuracy: never
    assert ov_wins(sitting(300.0, 0.004), SHA, INT8_SHA, offered=("fp32",)).precision is None  # no BF16 here
    # Without an INT8 variant the FP32 graph is what auto runs: the INT8 row does not raise the bar.
    assert ov_wins(sitting(150.0, 0.004, int8_rate=400.0), SHA, None).precision == "bf16"


def test_the_latest_sitting_decides_and_rows_of_another_cpu_never_do(tmp_path):
    path = tmp_path / "rows.jsonl"
    later = [{**r, "date": "2"} for r in sitting(150.0, 0.004)]
    path.write_text("".join(json.dumps(r) + "\n" for r in sitting(300.0, 0.004) + later))
    decide = ov_decision([path], SHA, INT8_SHA, "The CPU", 2, HERE["cpu_flags"], ("bf16", "int8", "fp32"))
    assert decide.precision is None and not decide.check
    other = ov_decision([path], SHA, INT8_SHA, "Another CPU", 2, HERE["cpu_flags"], ("bf16", "int8", "fp32"))
    assert other.precision is None and other.check and other.candidates == ("bf16",)  # accuracy recorded: time it
    fewer = ov_decision([path], SHA, INT8_SHA, "The CPU", 2, ["avx2"], ("bf16", "int8", "fp32"))
    assert fewer.check and fewer.precision is None  # flags differ: another machine
    path.write_text("".join(json.dumps(r) + "\n" for r in sitting(300.0, 0.02)))
    assert not ov_decision([path], SHA, INT8_SHA, "Other", 2, [], ("bf16",)).check  # over the limit: no check


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A copy of the shipped model (no INT8 variant beside it) in an empty user cache, and this machine's caps."""
    from vcorner.models.modelfile import default_model_path

    model = tmp_path / "m.onnx"
    for suffix in ("", ".json"):
        shutil.copy(f"{default_model_path()}{suffix}", f"{model}{suffix}")
    monkeypatch.setenv("VCORNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(rule, "cpu_precisions", lambda: ("bf16", "int8", "fp32"))
    caps = Capabilities(cpu=HERE["cpu"], cpu_flags=tuple(HERE["cpu_flags"]), cores=2,
                        runtimes={"ov": ("cpu",), "ort": ("cpu",)})
    user_results_path().parent.mkdir(parents=True)
    sha = sha256_file(model)
    return model, caps, [{**r, "model_sha256": sha, "variant_sha256": sha} for r in sitting(300.0, 0.004)[::2]]


def write(rows: list[dict]) -> None:
    user_results_path().write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_auto_runs_openvino_where_the_evidence_says_so_and_records_why(shipped):
    model, caps, rows = shipped
    assert registry.resolve_model(model, caps=caps).backend == "ort"  # no rows: ONNX Runtime, no check
    write(rows)
    chosen = registry.resolve_model(model, caps=caps)
    assert (chosen.backend, chosen.precision, chosen.graph, chosen.pending) == ("ov", "bf16", model, ())
    assert "OpenVINO bf16 wins against ONNX Runtime fp32" in chosen.describe()
    # the batch's share of the 2 cores, as for INT8 (BF16 costs like it), for the shipped card's patches per vertebra
    share = inference_threads("int8", chosen.card.sampling.patches_per_vertebra, 2)
    assert chosen.identity.endswith("+bf16") and chosen.threads == share
    assert registry.resolve_model(model, precision="fp32", caps=caps).backend == "ort"  # names ORT's graph
    with pytest.raises(InputError, match="bf16 runs on OpenVINO"):  # only --backend ov runs bf16
        registry.resolve_model(model, precision="bf16", caps=caps)
    write([{**r, "patches_per_s": 105.0} if r["backend"] == "ov" else r for r in rows])  # 1.05x
    assert registry.resolve_model(model, caps=caps).backend == "ort"


def test_without_openvino_installed_auto_never_picks_it_and_backend_ov_names_the_install(shipped):
    model, caps, rows = shipped
    write(rows)
    bare = Capabilities(cpu=caps.cpu, cpu_flags=caps.cpu_flags, cores=2, runtimes={"ort": ("cpu",)})
    assert registry.resolve_model(model, caps=bare).backend == "ort"
    with pytest.raises(MachineError, match=r"^--backend ov needs OpenVINO: pip install 'vcorner\[openvino\]'$"):
        registry.resolve_model(model, "ov", caps=bare)


def test_the_probe_finds_no_openvino_when_it_cannot_be_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert rule.probe(()) == ()


def test_bf16_is_refused_by_name_on_a_cpu_without_it_and_by_onnx_runtime(shipped, monkeypatch):
    model, caps, _ = shipped
    monkeypatch.setattr(rule, "cpu_precisions", lambda: ("int8", "fp32"))
    with pytest.raises(MachineError, match="offers int8, fp32 .*not --precision bf16"):
        registry.resolve_model(model, "ov", precision="bf16", caps=caps)
    with pytest.raises(InputError, match="bf16 runs on OpenVINO"):
        registry.resolve_model(model, "ort", precision="bf16", caps=caps)
    with pytest.raises(InputError, match="no m.int8.onnx beside m.onnx"):
        registry.resolve_model(model, "ov", precision="int8", caps=caps)
    with pytest.raises(InputError, match="runs on the CPU, not cuda:0"):
        registry.resolve_model(model, "ov", device="cuda:0", caps=caps)


def test_a_gpu_provider_or_another_device_keeps_the_model_from_openvino(shipped):
    model, caps, rows = shipped
    write(rows)
    assert rule.choose(model, "cuda:0", caps) is None
    gpu = Capabilities(cpu=caps.cpu, cpu_flags=caps.cpu_flags, cores=2,
                       runtimes={"ov": ("cpu",), "ort": ("cuda", "cpu")})
    assert rule.choose(model, None, gpu) is None
    assert rule.choose(model, "cpu", gpu) is not None


def test_benchmark_skips_bf16_off_openvino_and_openvino_where_it_is_missing(tmp_path):
    from vcorner.benchmark.models import model_files
    from vcorner.benchmark.settings import BenchmarkSettings, Skip
    from vcorner.benchmark.variants import variant_model

    files = model_files(None, tmp_path)
    for backend in ("ort", "torch", "trt"):
        with pytest.raises(Skip, match="BF16 runs on OpenVINO only"):
            variant_model(files, backend, "bf16", tmp_path, BenchmarkSettings(), Capabilities())
    with pytest.raises(Skip, match=r"pip install 'vcorner\[openvino\]'"):
        variant_model(files, "ov", "fp32", tmp_path, BenchmarkSettings(), Capabilities(runtimes={"ort": ("cpu",)}))
