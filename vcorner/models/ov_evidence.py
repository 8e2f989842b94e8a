"""Whether ``--backend auto`` runs a model on OpenVINO on this CPU, decided from recorded rows (no measuring here).

OpenVINO takes a model only where one sitting on this CPU model, core count and flags (a ``vcorner benchmark``
run or OpenVINO's self-check, ``vcorner/backends/openvino/cache.py``: every variant timed in interleaved
rounds) shows an OpenVINO precision at least :data:`vcorner.models.evidence.MIN_SPEEDUP` times as fast as the
fastest ONNX Runtime graph ``auto`` could run instead (FP32, or the INT8 variant where it exists), with a mean
P2P change against that graph of at most :data:`MAX_P2P_CHANGE_MM` on the benchmark's phantom set. Rows come
from :func:`vcorner.models.evidence.evidence_files` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vcorner.models.evidence import INT8_FLAGS, MIN_SPEEDUP, read_rows, this_machine

MAX_P2P_CHANGE_MM = 0.01
"""Largest mean P2P increase (mm; px for phantoms without spacing) OpenVINO may cost against ONNX Runtime's graph."""
OV_PRECISIONS = ("bf16", "int8", "fp32")


@dataclass(frozen=True)
class OvDecision:
    """The verdict and the evidence behind it.

    Attributes:
        precision: the OpenVINO precision to run (``bf16``, ``int8``, ``fp32``), None: ONNX Runtime runs it.
        reason: one line for logs and ``run.json``.
        speedup: OpenVINO's patches/s over the fastest ONNX Runtime graph's, same sitting and batch.
        p2p_change: OpenVINO's mean P2P minus that graph's (mm).
        check: no sitting on this CPU yet, but OpenVINO's accuracy is recorded within the limit for
            ``candidates``: the self-check times them here.
        candidates: the OpenVINO precisions worth timing (with ``check``).
    """

    precision: str | None
    reason: str
    speedup: float | None = None
    p2p_change: float | None = None
    check: bool = False
    candidates: tuple[str, ...] = ()


def usable(row: dict[str, Any], sha256: str, int8_sha256: str | None) -> bool:
    """A CPU row of the model, of ONNX Runtime or OpenVINO, that ran; INT8 rows only of that very INT8 file."""
    if (row.get("model_sha256") != sha256 or row.get("backend") not in ("ort", "ov") or row.get("status") != "ok"
            or row.get("device", "cpu") != "cpu" or row.get("batch") is None or not row.get("patches_per_s")):
        return False
    return row.get("precision") != "int8" or (int8_sha256 is not None and row.get("variant_sha256") == int8_sha256)


def sittings(rows: Iterable[dict[str, Any]], sha256: str,
             int8_sha256: str | None) -> list[dict[tuple[str, str, int], dict[str, Any]]]:
    """Rows per sitting (one ``date``), keyed (backend, precision, batch), in file order; only sittings that
    timed ONNX Runtime and OpenVINO at one batch size."""
    found: dict[Any, dict[tuple[str, str, int], dict[str, Any]]] = {}
    for row in rows:
        if usable(row, sha256, int8_sha256):
            found.setdefault(row.get("date"), {})[(row["backend"], row["precision"], int(row["batch"]))] = row
    return [s for s in found.values() if both_at_one_batch(s)]


def both_at_one_batch(sitting: dict[tuple[str, str, int], dict[str, Any]]) -> bool:
    """Whether a sitting timed ONNX Runtime and OpenVINO at one batch size."""
    batches = {backend: {n for b, _, n in sitting if b == backend} for backend in ("ort", "ov")}
    return bool(batches["ort"] & batches["ov"])


def delta(row: dict[str, Any]) -> float:
    """A row's mean P2P change against FP32 ONNX Runtime (NaN when not recorded)."""
    value = row.get("p2p_delta")
    return float("nan") if value is None else float(value)


def ov_wins(rows: Iterable[dict[str, Any]], sha256: str, int8_sha256: str | None,
            offered: Iterable[str] = OV_PRECISIONS, *, min_speedup: float = MIN_SPEEDUP,
            max_change: float = MAX_P2P_CHANGE_MM) -> OvDecision:
    """Decide from the latest sitting of ``rows`` (already this machine's) timing both runtimes.

    At each batch size the sitting timed, OpenVINO's rows of the ``offered`` precisions are compared with the
    fastest ONNX Runtime row (FP32, or the INT8 file ``int8_sha256``); the batch is the one where that ONNX
    Runtime row is fastest; the fastest OpenVINO precision that passes both limits wins.
    """
    found = sittings(rows, sha256, int8_sha256)
    if not found:
        return OvDecision(None, "no sitting timing OpenVINO and ONNX Runtime on this CPU for this model")
    sitting = found[-1]
    ort_rows = {n: max((r for (b, _, m), r in sitting.items() if b == "ort" and m == n),
                       key=lambda r: float(r["patches_per_s"])) for (b, _, n) in sitting if b == "ort"}
    batch = max((n for n in ort_rows if any(b == "ov" and m == n for b, _, m in sitting)),
                key=lambda n: float(ort_rows[n]["patches_per_s"]))
    base = ort_rows[batch]
    verdicts = []
    for (backend, precision, n), row in sitting.items():
        if backend != "ov" or n != batch or precision not in set(offered):
            continue
        speedup = float(row["patches_per_s"]) / max(float(base["patches_per_s"]), 1e-9)
        verdicts.append((precision, speedup, delta(row) - delta(base)))
    if not verdicts:
        return OvDecision(None, f"no OpenVINO precision this CPU offers was timed ({', '.join(offered)})")
    ok = [v for v in verdicts if v[1] >= min_speedup and v[2] <= max_change]  # NaN fails
    against = f"ONNX Runtime {base['precision']} at batch {batch}"
    text = "; ".join(f"OpenVINO {p} {s:.2f}x, mean P2P change {c:+.4f}" for p, s, c in verdicts)
    if not ok:
        return OvDecision(None, f"OpenVINO does not win against {against} ({text}; needs {min_speedup:.2f}x and "
                                f"at most {max_change:+.2f})")
    precision, speedup, change = max(ok, key=lambda v: v[1])
    return OvDecision(precision, f"OpenVINO {precision} wins against {against} ({text})", speedup, change)


def ov_accuracy(rows: Iterable[dict[str, Any]], sha256: str, precision: str, int8_sha256: str | None) -> float | None:
    """The largest mean P2P change (against FP32 ONNX Runtime) recorded for OpenVINO in ``precision`` on this
    model by a ``vcorner benchmark`` run on any machine (INT8: only machines with VNNI or AMX, as
    :func:`vcorner.models.evidence.accuracy_delta`); None when never measured."""
    values = [delta(r) for r in rows if r.get("model_sha256") == sha256 and r.get("backend") == "ov"
              and r.get("precision") == precision and r.get("status") == "ok" and r.get("p2p_delta") is not None
              and r.get("source") != "self-check"
              and (precision != "int8" or (r.get("variant_sha256") == int8_sha256
                                           and set(r.get("machine", {}).get("cpu_flags") or ()) & set(INT8_FLAGS)))]
    return max(values) if values else None


def ov_decision(files: Iterable, sha256: str, int8_sha256: str | None, cpu: str, cores: int,
                flags: Iterable[str], offered: tuple[str, ...]) -> OvDecision:
    """Whether OpenVINO, in which of the ``offered`` precisions, runs the model with ``sha256`` on this CPU.

    A sitting on this CPU model, core count and flags decides (:func:`ov_wins`). Without one, the precisions
    whose accuracy a benchmark recorded within :data:`MAX_P2P_CHANGE_MM` are left to a self-check
    (``check=True``); none recorded: ONNX Runtime runs it.
    """
    rows = [row for path in files for row in read_rows(path)]
    here = this_machine(rows, cpu, cores, flags)
    if sittings(here, sha256, int8_sha256):
        return ov_wins(here, sha256, int8_sha256, offered)
    recorded = {p: ov_accuracy(rows, sha256, p, int8_sha256) for p in offered}
    candidates = tuple(p for p, d in recorded.items() if d is not None and d <= MAX_P2P_CHANGE_MM)
    if not candidates:
        return OvDecision(None, "no recorded OpenVINO accuracy within the limit for this model (vcorner benchmark "
                                "--backend ort,ov --precision fp32,int8,bf16 records it)")
    return OvDecision(None, f"no OpenVINO timing on this CPU: a self-check times {', '.join(candidates)} against "
                            "ONNX Runtime", check=True, candidates=candidates)
