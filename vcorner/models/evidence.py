"""Whether CPU INT8 wins for a model, decided from recorded ``vcorner benchmark`` rows (no measuring here).

``--backend auto`` runs a model's INT8 variant only where the benchmark showed it at least
``min_speedup`` times as fast as FP32 ONNX Runtime at the same batch size, with a mean P2P change on the
benchmark's phantom set of at most ``max_p2p_delta`` (mm, or px where the phantoms had no pixel spacing).

The evidence is read from two documented places only (:func:`evidence_files`), never from the folder a command
runs in: the rows shipped beside the model (``m.benchmark.jsonl``) and the user's own results
(``$VCORNER_CACHE/benchmark.jsonl``, where ``vcorner benchmark`` appends by default). Rows count only when
keyed by both files' SHA-256 and recorded on a machine with this CPU model and core count.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vcorner.hardware.cpu import CPU_FLAGS
from vcorner.io.cache import user_cache_dir

log = logging.getLogger(__name__)

MIN_SPEEDUP = 1.10
MAX_P2P_DELTA_MM = 0.05
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
"""CPU flags (``/proc/cpuinfo``) of the INT8 dot-product instructions that make a u8s8 graph pay."""


@dataclass(frozen=True)
class Int8Decision:
    """The verdict and the evidence behind it.

    Attributes:
        use_int8: run the INT8 variant.
        reason: one line for logs and ``--verbose``.
        batch: batch size compared (None without evidence).
        speedup: INT8 patches/s over FP32 patches/s at that batch.
        p2p_delta: INT8 mean P2P minus FP32 mean P2P on the benchmark phantoms.
        check: see below.
    """

    use_int8: bool
    reason: str
    batch: int | None = None
    speedup: float | None = None
    p2p_delta: float | None = None
    check: bool = False
    """No speed evidence for this CPU, but it has INT8 instructions and the INT8 variant's accuracy is recorded:
    a self-check (:mod:`vcorner.export.int8_check`) times it here and decides."""


def paired_rows(rows: Iterable[dict[str, Any]], sha256: str,
                int8_sha256: str | None = None) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
    """(FP32, INT8) CPU ONNX Runtime rows per batch size, both from the latest run that measured the pair.

    Rows of one ``vcorner benchmark`` run share their ``date``; ratios are taken within a run (timed side by
    side), never across runs. With ``int8_sha256``, INT8 rows count only when they timed that very INT8 file
    (``variant_sha256``).
    """
    runs: dict[Any, dict[tuple[str, int], dict[str, Any]]] = {}
    for row in rows:
        if (row.get("model_sha256") != sha256 or row.get("backend") != "ort" or row.get("status") != "ok"
                or row.get("device", "cpu") != "cpu" or row.get("batch") is None):
            continue
        if int8_sha256 is not None and row.get("precision") == "int8" and row.get("variant_sha256") != int8_sha256:
            continue
        runs.setdefault(row.get("date"), {})[(row.get("precision", ""), int(row["batch"]))] = row  # later wins
    pairs: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    for found in runs.values():  # in file order: later runs replace earlier ones
        for (precision, batch), row in found.items():
            if precision == "int8" and ("fp32", batch) in found:
                pairs[batch] = (found[("fp32", batch)], row)
    return pairs


def int8_wins(rows: Iterable[dict[str, Any]], sha256: str, batch: int | None = None, *,
              int8_sha256: str | None = None, min_speedup: float = MIN_SPEEDUP,
              max_p2p_delta: float = MAX_P2P_DELTA_MM) -> Int8Decision:
    """Decide from benchmark rows whether INT8 beats FP32 for the model with ``sha256``.

    Args:
        rows: benchmark JSON lines (any models, any order; later runs supersede earlier ones).
        sha256: SHA-256 of the FP32 model the rows were recorded for (``model_sha256``).
        batch: the batch size that will run; None compares at the batch size where FP32 is fastest.
        int8_sha256: SHA-256 of the INT8 file that would run (None: any INT8 row of the model counts).
        min_speedup: INT8 must reach this many times FP32's patches/s (1.10: 10% faster).
        max_p2p_delta: largest acceptable increase of the mean P2P (mm).

    Returns:
        The decision; ``use_int8`` is False whenever evidence is missing.
    """
    pairs = paired_rows(rows, sha256, int8_sha256)
    if batch is not None:
        pairs = {b: pair for b, pair in pairs.items() if b == batch}
    if not pairs:
        return Int8Decision(False, "no INT8 and FP32 ONNX Runtime benchmark at the same batch size for this model")
    chosen = max(pairs, key=lambda b: pairs[b][0].get("patches_per_s") or 0.0)
    fp32, int8 = pairs[chosen]
    speedup = float(int8["patches_per_s"]) / max(float(fp32["patches_per_s"]), 1e-9)
    delta = int8.get("p2p_delta")
    if delta is None:
        return Int8Decision(False, "the INT8 row has no P2P change", chosen, speedup)
    delta = float(delta)
    evidence = f"batch {chosen}: {speedup:.2f}x FP32, mean P2P change {delta:+.4f}"
    if speedup < min_speedup:
        return Int8Decision(False, f"INT8 not fast enough ({evidence}; needs {min_speedup:.2f}x)", chosen, speedup,
                            delta)
    if not delta <= max_p2p_delta:  # NaN fails too
        return Int8Decision(False, f"INT8 costs accuracy ({evidence}; limit {max_p2p_delta})", chosen, speedup,
                            delta)
    return Int8Decision(True, f"INT8 wins ({evidence})", chosen, speedup, delta)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """JSON lines of a results file; missing file: []; unreadable lines are skipped with a warning."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s: line %d is not JSON; ignored", path, number)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def shipped_evidence_path(model: Path) -> Path:
    """Benchmark rows shipped beside a model (``m.benchmark.jsonl``): the evidence its INT8 variant won, recorded
    where the model was made; rows of a machine unlike this one are ignored like any others."""
    return Path(model).with_name(Path(model).name.removesuffix(".onnx") + ".benchmark.jsonl")


def user_results_path() -> Path:
    """``benchmark.jsonl`` in the user cache (``$VCORNER_CACHE``, ``$XDG_CACHE_HOME/vcorner`` or
    ``~/.cache/vcorner``): where ``vcorner benchmark`` appends by default and ``--backend auto`` reads."""
    return user_cache_dir() / "benchmark.jsonl"


def evidence_files(model: Path) -> tuple[Path, Path]:
    """Where INT8 evidence for ``model`` is read, in order (later rows supersede earlier ones)."""
    return shipped_evidence_path(model), user_results_path()


def this_machine(rows: Iterable[dict[str, Any]], cpu: str, cores: int,
                 flags: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Benchmark rows recorded on a machine like this one: same CPU model name, core count and, when ``flags`` are
    given, the same instruction-set flags of :data:`vcorner.hardware.cpu.CPU_FLAGS`.

    The flags matter: cloud CPUs share names like ``AMD EPYC`` across generations, and an INT8 graph that is
    1.9x faster with VNNI ran slower than FP32, and 0.1 mm less accurate, on an AVX2-only ``AMD EPYC`` of the
    same name and core count (measured; see the README's performance section).
    """
    wanted = None if flags is None else sorted(set(flags) & set(CPU_FLAGS))
    return [r for r in rows if r.get("machine", {}).get("cpu") == cpu and r.get("machine", {}).get("cores") == cores
            and (wanted is None or sorted(set(r["machine"].get("cpu_flags") or ()) & set(CPU_FLAGS)) == wanted)]


def accuracy_delta(rows: Iterable[dict[str, Any]], sha256: str, int8_sha256: str) -> float | None:
    """The largest mean P2P change recorded for this very INT8 file against its FP32 model on any machine with VNNI
    or AMX (their INT8 dot products do not saturate, so the arithmetic is the same on all of them); None when no
    such benchmark measured it. Rows of AVX2-only machines do not count: there u8s8 products can saturate."""
    deltas = [float(r["p2p_delta"]) for r in rows if r.get("model_sha256") == sha256 and r.get("precision") == "int8"
              and r.get("variant_sha256") == int8_sha256 and r.get("status") == "ok" and r.get("p2p_delta") is not None
              and r.get("source") != "self-check"
              and set(r.get("machine", {}).get("cpu_flags") or ()) & set(INT8_FLAGS)]
    return max(deltas) if deltas else None


def int8_decision(files: Iterable[Path], sha256: str, int8_sha256: str, cpu: str, cores: int,
                  flags: Iterable[str] = ()) -> Int8Decision:
    """Whether the INT8 file with ``int8_sha256`` wins over the FP32 model with ``sha256`` on this CPU.

    Rows of ``files`` (:func:`evidence_files`) recorded on this CPU model and core count decide when they pair
    FP32 and INT8. Without them: a CPU without VNNI or AMX (``flags``) stays FP32; one with them gets a
    self-check (``check=True``) when the INT8 file's accuracy is recorded and within the limit.
    """
    rows = [row for path in files for row in read_rows(path)]
    here = this_machine(rows, cpu, cores, flags)
    if paired_rows(here, sha256, int8_sha256):
        return int8_wins(here, sha256, int8_sha256=int8_sha256)
    have = [f for f in INT8_FLAGS if f in set(flags)]
    if not have:
        return Int8Decision(False, "no INT8 benchmark on this CPU and it has no VNNI or AMX, so FP32 (vcorner "
                                   "benchmark --backend ort --precision fp32,int8 measures it here)")
    delta = accuracy_delta(rows, sha256, int8_sha256)
    if delta is None:
        return Int8Decision(False, "no recorded accuracy of this INT8 variant, so FP32 (vcorner benchmark --backend "
                                   "ort --precision fp32,int8 records it)")
    if not delta <= MAX_P2P_DELTA_MM:
        return Int8Decision(False, f"INT8 costs accuracy (mean P2P change {delta:+.4f}; limit {MAX_P2P_DELTA_MM})",
                            p2p_delta=delta)
    return Int8Decision(False, f"no INT8 benchmark on this CPU; it has {', '.join(have)}: a self-check times it",
                        p2p_delta=delta, check=True)


def append_rows(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Append ``rows`` as JSON lines to ``path`` (folders created): the format :func:`read_rows` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return path
