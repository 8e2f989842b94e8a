"""The work of a Ray batch's tasks and actors: a read task adds each image's file bytes (:func:`read_files`); a
:class:`CornerActor` turns a call's images (bytes and centres) into their outcomes."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from vcorner.backends import ResolvedModel, materialize, open_runner
from vcorner.io.images import read_image_file
from vcorner.io.records import InputError
from vcorner.pipeline.detection import DetectorChoice, open_detector_use
from vcorner.pipeline.outcomes import Failed, Finished
from vcorner.pipeline.ray.codec import outcome_columns, record_from_json
from vcorner.pipeline.run import BatchSettings
from vcorner.pipeline.steps import finish_one, prepare_one
from vcorner.postprocess.kernels import use_serial_kernels
from vcorner.stages.plan import PlannedImage
from vcorner.stages.prepare import ImageJob


def read_files(batch: dict[str, np.ndarray], max_pixels: int | None = None) -> dict[str, list]:
    """A read task: each row's file bytes, after the checks the local reader makes before reading
    (:func:`~vcorner.io.images.read_image_file`); b"" and its one-line reason for a file that fails them."""
    limit = {} if max_pixels is None else {"max_pixels": max_pixels}
    contents, errors = [], []
    for path in batch["path"]:
        try:
            contents.append(read_image_file(Path(str(path)), **limit))
            errors.append("")
        except InputError as err:
            contents.append(b"")
            errors.append(str(err))
    return {"path": list(batch["path"]), "record": list(batch["record"]), "bytes": contents, "error": errors}


class CornerActor:
    """A Ray actor holding one inference session; maps a call's images (bytes and centres) to their outcomes.

    It prepares every image of the call, runs all their patches through the runner together in batches of
    ``batch_size`` (so a GPU actor sees full batches), then finishes each image, writing its requested
    ``--json``/``--vis`` files into ``out_dir`` (shared storage on a cluster). It opens the model and the detector
    the driver resolved, as they are; its only own step is the TensorRT engine of its GPU when that is still
    pending (a plan is built for the GPU that runs it).

    Args:
        resolved: the model, resolved and made on the driver for a worker's capabilities.
        settings: the run's settings.
        out_dir: OUT.
        batch_size: patches per inference batch (the run's).
        workers: threads preparing and finishing images.
        detector: the run's detector (None: every image lists its centres).
    """

    def __init__(self, resolved: ResolvedModel, settings: BatchSettings, out_dir: str, batch_size: int,
                 workers: int, detector: DetectorChoice | None = None) -> None:
        self.card = resolved.card
        self.runner = open_runner(materialize(resolved, steps=("engine",))).__enter__()
        self.settings, self.out_dir, self.batch_size = settings, Path(out_dir), batch_size
        # images listed without centres: this actor's own session of the run's detector (and its finder), held
        # open as long as the actor lives
        self.detector = open_detector_use(detector, extend=True) if detector is not None else None
        self.detect = self.detector.__enter__() if self.detector is not None else None
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="vcorner-actor",
                                       initializer=use_serial_kernels)
        self.inferring = threading.Lock()  # one call infers at a time; the other prepares or finishes meanwhile

    def _prepare(self, path: str, record: str, encoded: bytes, error: str) -> ImageJob | Failed:
        item = PlannedImage(record_from_json(record), Path(path))
        if error:
            return Failed(item.record.file, error)
        return prepare_one(item, self.card, self.settings, self.detect, encoded)

    def _finish(self, job: ImageJob | Failed) -> Finished | Failed:
        return job if isinstance(job, Failed) else finish_one(job, self.card, self.out_dir, self.settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        jobs = list(self.pool.map(self._prepare, batch["path"], batch["record"], map(bytes, batch["bytes"]),
                                  batch["error"]))
        ready = [job for job in jobs if isinstance(job, ImageJob)]
        if ready:
            with self.inferring:
                maps = self.runner.infer_all(np.concatenate([job.patches for job in ready]), self.batch_size)
            for job, part in zip(ready, np.split(maps, np.cumsum([len(j.patches) for j in ready])[:-1]),
                                 strict=True):
                job.maps = part
        return outcome_columns(list(self.pool.map(self._finish, jobs)))
