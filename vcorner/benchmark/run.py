"""``run_benchmark``: every (backend, precision, batch size) of the settings, one row each."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from vcorner.backends import open_runner, probe
from vcorner.benchmark.accuracy import Accuracy, PhantomSet, compare, evaluate, phantom_set
from vcorner.benchmark.machine import stamp
from vcorner.benchmark.models import ModelFiles, model_files
from vcorner.benchmark.settings import BenchmarkSettings, Skip
from vcorner.benchmark.timing import describe, rates, time_in_turns
from vcorner.benchmark.variants import Variant, open_variant, ort_model, variant_fields
from vcorner.hardware.capabilities import Capabilities
from vcorner.io.records import InputError, MachineError
from vcorner.models.card import ModelCard

log = logging.getLogger(__name__)


def reference_maps(files: ModelFiles, phantoms: PhantomSet, scratch: Path, settings: BenchmarkSettings,
                   caps: Capabilities) -> np.ndarray | None:
    """FP32 ONNX Runtime maps of the phantom patches (the reference of every delta); None if it cannot run."""
    try:
        with open_runner(ort_model(files, "fp32", scratch, settings, caps)) as runner:
            return runner.infer_all(phantoms.patches, 64).astype(np.float32)
    except (Skip, InputError, MachineError) as err:
        log.warning("no FP32 ONNX Runtime reference: %s", err)
        return None


def run_benchmark(settings: BenchmarkSettings, on_step: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Measure every combination of ``settings``; one row per (backend, precision, batch) or per skipped pair.

    Rows hold: model, model_sha256, backend, precision, device, variant (file run), variant_sha256, batch,
    status (``ok``/``skipped``/``failed``), reason, patches_per_s, p50_ms, p95_ms, max_abs_diff (maps vs
    FP32 ORT), p2p_mean, p2p_delta, corner_shift_px, images, patches, seed, seconds, rounds, batches_timed,
    machine, versions, date.

    Raises:
        InputError: the model cannot be read.
    """
    step = on_step or (lambda message: None)
    common = {"images": settings.images, "seed": settings.seed, "seconds": settings.seconds,
              "rounds": settings.rounds, **stamp()}
    done: list[Variant | dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vcorner-bench-") as tmp, ExitStack() as stack:
        scratch = Path(tmp)
        files = model_files(settings.model, scratch)
        common.update(model=files.named.name, model_sha256=files.sha256)
        step(f"phantom set: {settings.images} image(s), seed {settings.seed}")
        phantoms = phantom_set(scratch / "phantoms", files.card, settings.images, settings.seed)
        common["patches"] = len(phantoms.patches)
        caps = probe()
        reference = reference_maps(files, phantoms, scratch, settings, caps)
        for backend, precision in ((b, p) for b in settings.backends for p in settings.precisions):
            step(f"loading {backend} {precision}")
            ident = {"backend": backend, "precision": precision}
            try:
                runner = stack.enter_context(open_variant(files, backend, precision, scratch, settings, caps))
                maps = runner.infer_all(phantoms.patches, 64).astype(np.float32)
                done.append(Variant(ident, runner, variant_fields(runner), maps))
            except Skip as why:
                done.append({**ident, "batch": None, "status": "skipped", "reason": str(why)})
            except Exception as err:  # a backend failing here must not stop the rest of the table
                log.warning("%s %s failed: %s", backend, precision, err)
                done.append({**ident, "batch": None, "status": "failed", "reason": describe(err)})
        step(f"timing in {settings.rounds} turn(s)")
        time_in_turns([v for v in done if isinstance(v, Variant)], phantoms.patches, settings)
    step("decoding corners")  # after all timing: numba's OpenMP workers slow torch down when they ran first
    ref = evaluate(reference, phantoms, files.card) if reference is not None else None
    rows = []
    for variant in done:
        if isinstance(variant, dict):
            rows.append({**variant, **common})
        elif variant.error is not None:
            rows.append({**variant.ident, "batch": None, "status": "failed", "reason": variant.error, **common})
        else:
            rows += variant_rows(variant, ref, phantoms, files.card, common)
    return rows


def variant_rows(variant: Variant, ref: Accuracy | None, phantoms: PhantomSet, card: ModelCard,
                 common: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per batch size of a timed variant, with its accuracy columns."""
    same = ref is not None and np.array_equal(variant.maps, ref.maps)  # FP32 ORT: decoded once
    columns = compare(ref if same else evaluate(variant.maps, phantoms, card), ref)
    return [{**variant.ident, **variant.fields, "batch": b, **rates(b, t), "status": "ok", **columns, **common}
            for b, t in variant.times.items()]
