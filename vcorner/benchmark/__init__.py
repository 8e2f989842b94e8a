"""``vcorner benchmark``: patches/s per backend, precision and batch size, with accuracy deltas.

Each (backend, precision) that can run here maps every patch of a small fixed phantom set and is timed per
batch size; then the maps are compared with FP32 ONNX Runtime's and decoded (``stages.finish``) into corners
scored against ``annotations.json`` (mean P2P). Combinations that cannot run here come back as ``skipped``
rows with the reason. Rows carry the machine, library versions and date, for a JSON-lines file.

Modules: :mod:`~vcorner.benchmark.settings` (what to measure), :mod:`~vcorner.benchmark.models` (the model
under test), :mod:`~vcorner.benchmark.variants` (the resolved model and runner per backend and precision),
:mod:`~vcorner.benchmark.timing`, :mod:`~vcorner.benchmark.accuracy`, :mod:`~vcorner.benchmark.run` (the
table), :mod:`~vcorner.benchmark.machine` (machine, versions, date and the results file). The names below are
what the CLI and the scripts in ``benchmarks/`` use.
"""

from vcorner.benchmark.accuracy import PhantomSet, phantom_set
from vcorner.benchmark.machine import busy_cores, gpu_names, stamp
from vcorner.benchmark.models import model_files, random_model
from vcorner.benchmark.run import run_benchmark
from vcorner.benchmark.settings import BACKENDS, PRECISIONS, BenchmarkSettings, Skip
from vcorner.benchmark.timing import speed, stage_seconds
from vcorner.models.evidence import append_rows as append_jsonl

__all__ = ["BACKENDS", "PRECISIONS", "BenchmarkSettings", "PhantomSet", "Skip", "append_jsonl", "busy_cores",
           "gpu_names", "model_files", "phantom_set", "random_model", "run_benchmark", "speed", "stage_seconds",
           "stamp"]
