"""OpenVINO on the CPU (optional extra ``pip install 'vcorner[openvino]'``): its runner (`runner.py`); not yet in
:data:`vcorner.backends.registry.BACKENDS` (issue #34)."""
