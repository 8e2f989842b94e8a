"""vcorner: vertebral corners in X-ray images by probabilistic spatial regression.

The inference path (``import vcorner``, ``vcorner batch``) needs numpy, numba, OpenCV, ONNX Runtime and
pydicom only; torch, TensorRT and Ray are imported lazily by the modules that need them.
"""

__version__ = "0.1.0"

CORNER_NAMES: tuple[str, str, str, str] = ("superior_left", "superior_right", "inferior_left", "inferior_right")
"""Corner order everywhere in vcorner, in the vertebra's own frame (cranial side up)."""
