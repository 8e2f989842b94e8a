#!/usr/bin/env bash
# The GPU checks, in one command on a lent GPU machine (README, "GPU: TensorRT FP16"). Its image has torch,
# onnxruntime, numba, OpenCV, typer and cuda-python, but not pydicom or onnxconverter-common: carry those as
# wheels in .whl/ (fetched where pip works, see below). Writes logs and JSON lines under $OUT.
#
#   here:  echo /.whl/ >> .git/info/exclude
#          python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#              --platform manylinux2014_x86_64 -d .whl pydicom onnxconverter-common
#   there: bash benchmarks/gpu_check.sh          (with .whl carried)
set -uo pipefail
OUT=${OUT:-/tmp/vcorner-gpu}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/vcorner-site .whl/*.whl || exit 1
fi
export PYTHONPATH="$PWD:/tmp/vcorner-site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "no nvidia-smi") | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -m gpu -rs -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu_tests.log"
# H100 SXM: 989 TFLOP/s dense FP16 tensor core, 67 TFLOP/s FP32 (NVIDIA datasheet); pass others for other cards.
python3 benchmarks/gpu_throughput.py --recipe lite --batches 64 256 1024 4096 --compile \
    --peak-tflops "${PEAK_FP16:-989}" --peak-tflops-fp32 "${PEAK_FP32:-67}" \
    --out "$OUT/gpu_throughput.jsonl" 2>&1 | tee "$OUT/gpu_throughput.log"
