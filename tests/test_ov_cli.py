"""OpenVINO's refusals as a user meets them (issue #34, "Bad input"): ``vcorner batch --backend ov`` without the
extra, and ``--precision bf16`` on ONNX Runtime, each end in one line and exit code 2 or 3, with nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "xrays"
WITHOUT_OPENVINO = "import sys; sys.modules['openvino'] = None; from vcorner.cli import app; app()"
"""``vcorner`` in a process where ``import openvino`` fails, as on a machine without the extra."""


def run(args: list[str], code: str = "from vcorner.cli import app; app()") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_backend_ov_without_the_extra_names_the_install_command(tmp_path):
    done = run(["batch", str(EXAMPLES), "--centers", str(EXAMPLES / "centers.csv"), "--out", str(tmp_path / "out"),
                "--backend", "ov"], WITHOUT_OPENVINO)
    assert done.returncode == 3, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'vcorner[openvino]'" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out" / "corners.csv").exists()


def test_bf16_on_onnx_runtime_is_refused_by_name(tmp_path):
    done = run(["batch", str(EXAMPLES), "--centers", str(EXAMPLES / "centers.csv"), "--out", str(tmp_path / "out"),
                "--backend", "ort", "--precision", "bf16"])
    assert done.returncode == 2, done.stderr
    assert "bf16 runs on OpenVINO" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "corners.csv").exists()
