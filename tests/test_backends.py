"""The backend registry (vcorner/backends/registry.py): resolution, the cache step and the runner factory iterate
over the registered BackendSpecs and never name one; and the typed words (Precision, CpuPrecision, Step) read and
serialize as the plain strings they replaced."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import pytest

from vcorner.backends import registry
from vcorner.backends.base import BackendSpec, ModelRequest, ResolvedModel, Step
from vcorner.hardware.capabilities import Capabilities
from vcorner.io.records import InputError
from vcorner.models.modelfile import card_of, default_model_path
from vcorner.models.precision import CpuPrecision, Precision, cpu_precision
from vcorner.models.profiles import get_profile


def fake_spec(name: str, takes: bool, calls: list[str] | None = None) -> BackendSpec:
    """A backend that takes every model when ``takes``, records its cache steps and opening in ``calls``."""
    calls = [] if calls is None else calls

    def step(which: Step):
        def make(resolved: ResolvedModel) -> ResolvedModel:
            calls.append(str(which))
            return replace(resolved, pending=tuple(p for p in resolved.pending if p != which))
        return make

    def resolve(request: ModelRequest, caps: Capabilities, why: str) -> ResolvedModel:
        card = card_of(default_model_path())
        return ResolvedModel(Path(request.model), name, "cpu", Path(request.model), Precision.fp32, card, "a", "a",
                             "c", why, pending=(Step.engine, Step.fp16))

    return BackendSpec(name, ("cpu",), lambda gpus: ("cpu",), lambda model, device, caps: f"{name} takes it" if takes
                       else None, resolve, lambda resolved: calls.append("open") or "runner",
                       {Step.fp16: step(Step.fp16), Step.engine: step(Step.engine)})


def test_auto_asks_the_backends_in_their_order_and_the_first_that_takes_the_model_runs_it(monkeypatch):
    monkeypatch.setattr(registry, "BACKENDS", (fake_spec("first", False), fake_spec("second", True),
                                               fake_spec("third", True)))
    spec, why = registry.choose_backend(Path("m.onnx"), "auto", None, Capabilities())
    assert (spec.name, why) == ("second", "second takes it")
    spec, why = registry.choose_backend(Path("m.onnx"), "first", None, Capabilities())
    assert (spec.name, why) == ("first", "--backend first")
    with pytest.raises(InputError, match="no backend 'fourth'"):
        registry.spec_of("fourth")


def test_the_cache_step_makes_only_pending_steps_asked_for_in_the_backends_order_and_open_refuses_pending_work(
        monkeypatch):
    calls: list[str] = []
    spec = fake_spec("fake", True, calls)
    monkeypatch.setattr(registry, "BACKENDS", (spec,))
    resolved = spec.resolve(ModelRequest(Path("m.onnx")), Capabilities(), "why")
    with pytest.raises(InputError, match="engine and fp16 not made yet"):
        registry.open_runner(resolved)
    partly = registry.materialize(resolved, steps=(Step.engine,))
    assert calls == ["engine"] and partly.pending == (Step.fp16,)
    calls.clear()
    ready = registry.materialize(resolved)
    assert calls == ["fp16", "engine"] and ready.pending == ()  # the spec's order, not the pending tuple's
    assert registry.open_runner(ready) == "runner" and calls[-1] == "open"


def test_the_backend_choices_and_device_kinds_come_from_the_registry():
    names = [spec.name for spec in registry.BACKENDS]
    assert [b.value for b in registry.Backend] == ["auto", *names] and names == ["torch", "trt", "ov", "ort"]
    assert registry.DEVICE_KINDS == ("cpu", "cuda", "tensorrt")
    with pytest.raises(InputError, match=r"--device must be cpu, cuda\[:N\], tensorrt\[:N\] or N, got 'npu'"):
        registry.check_device("npu")
    registry.check_device("tensorrt:1")


def test_a_resolved_model_keeps_its_backend_and_types_through_pickle_and_prints_as_before(tiny_onnx):
    resolved = registry.resolve_model(tiny_onnx, "ort", "cpu", caps=Capabilities(cpu="This CPU"))
    assert resolved.backend is registry.Backend.ort and resolved.precision is Precision.fp32
    shipped = pickle.loads(pickle.dumps(resolved))  # as Ray ships it to every actor
    assert shipped.backend is registry.Backend.ort and shipped.precision is Precision.fp32
    assert (shipped.describe(), shipped.identity) == (resolved.describe(), resolved.identity)
    assert resolved.describe().startswith(f"ort on cpu: {tiny_onnx.name} (fp32); --backend ort on the CPU")
    assert json.dumps([resolved.backend, resolved.precision, Step.int8_check]) == '["ort", "fp32", "int8_check"]'


def test_precision_words_are_checked_once_with_a_named_refusal():
    assert cpu_precision("int8") is CpuPrecision.int8 and f"{CpuPrecision.auto}" == "auto"
    with pytest.raises(InputError, match=r"--precision must be one of auto, fp32, int8, bf16, got 'int4'"):
        cpu_precision("int4")
    with pytest.raises(InputError, match="--precision must be one of auto, fp32, int8"):
        registry.resolve_model(default_model_path(), precision="fp16", caps=Capabilities())
    assert get_profile("gpu").precision is Precision.fp16


def test_a_card_recording_an_unknown_precision_is_refused_not_run_as_fp32():
    from vcorner.models.variants import card_precision

    card = card_of(default_model_path())
    odd = replace(card, training={**card.training, "quantization": {"precision": "bf16"}})
    with pytest.raises(InputError, match="precision 'bf16' is none of fp32, fp16, int8"):
        card_precision(odd)
