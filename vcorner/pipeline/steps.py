"""One image's work in a batch, the same in the local threads and in a Ray actor: prepare it (decode, detect,
cut patches) and finish it (maps -> corner rows, with its JSON and overlay written), turning every failure of
that image into a :class:`~vcorner.pipeline.outcomes.Failed` so that it never stops the others."""

from __future__ import annotations

import logging
from pathlib import Path

from vcorner.io.records import InputError
from vcorner.models.card import ModelCard
from vcorner.pipeline.outcomes import Failed, Finished
from vcorner.pipeline.outputs import corner_rows, write_image_json
from vcorner.pipeline.overlay import measurement_labels, overlay_name, write_overlay
from vcorner.pipeline.run import BatchSettings
from vcorner.stages.finish import finish
from vcorner.stages.plan import PlannedImage
from vcorner.stages.prepare import Detect, ImageJob, prepare

log = logging.getLogger(__name__)


def prepare_one(item: PlannedImage, card: ModelCard, settings: BatchSettings, detect: Detect | None = None,
                encoded: bytes | None = None) -> ImageJob | Failed:
    """An image's job (from its file, or the file's ``encoded`` bytes; its centres found by ``detect`` when it
    lists none), or why it cannot be read or cut."""
    try:
        return prepare(item, card, keep_pixels=settings.vis, max_pixels=settings.max_pixels, detect=detect,
                       encoded=encoded)
    except InputError as err:
        return Failed(item.record.file, str(err))
    except (OSError, ValueError, MemoryError) as err:
        return Failed(item.record.file, f"cannot process: {err}")
    except Exception as err:  # anything else (an OpenCV error, say) fails this image only, not the rest
        log.exception("preparing %s", item.record.file)
        return Failed(item.record.file, f"cannot process: {type(err).__name__}: {err}")


def finish_one(item: ImageJob, card: ModelCard, out_dir: Path, settings: BatchSettings) -> Finished | Failed:
    """The corner rows of a job whose maps are filled, with its JSON/overlay written; or why it failed."""
    try:
        corners, accumulated = finish(item, card)
        if not any(s == "network" for v in corners for s in v.source):
            log.warning("%s: the network found no corner; every corner is the prior's guess (confidence 0)",
                        item.name)
        if settings.write_json:
            write_image_json(out_dir, item.name, corners)
        if settings.vis:
            labels = measurement_labels(corners, item.spacing_mm, settings.measure_labels) \
                if settings.measure_labels else None
            write_overlay(out_dir / "vis" / overlay_name(item.name), item.pixels, corners, accumulated, labels,
                          detected=item.detected)
        return Finished(item.name, corner_rows(item.name, corners), len(item.patches), item.detected)
    except OSError as err:  # a JSON or overlay that cannot be written (disk full, say): name the file
        return Failed(item.name, f"cannot write {err.filename or 'an output file'}: {err.strerror or err}")
    except (InputError, ValueError) as err:
        return Failed(item.name, f"post-processing failed: {err}")
    except Exception as err:  # anything else fails this image only: the writer must not stall
        log.exception("post-processing %s", item.name)
        return Failed(item.name, f"post-processing failed: {type(err).__name__}: {err}")
