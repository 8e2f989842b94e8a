"""The one small interface every inference backend's runner implements (``base.py``): a context manager with
``infer(batch) -> maps``; the runners themselves live in their backend's folder (``vcorner/backends/<name>/``)."""
