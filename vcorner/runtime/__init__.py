"""Inference backends behind one small interface: a context manager with ``infer(batch) -> maps``."""
