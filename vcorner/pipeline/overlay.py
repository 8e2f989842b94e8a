"""``--vis`` overlays: the image, each vertebra's accumulated probability map, corners and 95% ellipses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from vcorner.io.atomic import write_bytes_atomic
from vcorner.io.formats import SUPPORTED_SUFFIXES
from vcorner.measure.definitions import heights, lateral_tilt, listhesis
from vcorner.measure.intervals import SLIP_MM, adjacent_pairs
from vcorner.postprocess.decode import AccumulatedMap, VertebraCorners
from vcorner.stages.detect import DetectedCentres

CORNER_COLOURS = ((255, 80, 80), (80, 200, 255), (255, 200, 0), (120, 255, 120))
"""RGB per corner, in CORNER_NAMES order."""
CHI2_95 = 2.4477  # sqrt of the chi-square(2) 95% quantile: 1-sigma ellipse -> 95% ellipse


def heat_overlay(grey: np.ndarray, accumulated: Sequence[AccumulatedMap]) -> np.ndarray:
    """(H, W, 3) uint8: the image in grey with the accumulated maps blended in as a heat map."""
    rgb = np.repeat((np.clip(grey, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    heat = np.zeros(grey.shape, np.float32)
    for m in accumulated:
        x0, y0 = m.origin
        h, w = m.acc.shape
        np.maximum(heat[y0:y0 + h, x0:x0 + w], m.acc, out=heat[y0:y0 + h, x0:x0 + w])
    colour = cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
    alpha = np.clip(heat * 1.5, 0, 0.75)[..., None]
    return (rgb * (1 - alpha) + colour * alpha).astype(np.uint8)


def draw_corners(rgb: np.ndarray, corners: Sequence[VertebraCorners],
                 labels: Sequence[str] | None = None) -> np.ndarray:
    """Draw each corner (filled dot: network, ring: prior fallback), its 95% ellipse and the vertebra's label
    (its name, or ``labels``), in place."""
    scale = max(1, round(max(rgb.shape[:2]) / 800))
    for index, v in enumerate(corners):
        for k, ((x, y), (major, minor, angle)) in enumerate(zip(v.xy, v.ellipses(), strict=True)):
            colour = CORNER_COLOURS[k]
            centre = (int(round(x)), int(round(y)))
            axes = (max(1, int(round(CHI2_95 * major))), max(1, int(round(CHI2_95 * minor))))
            cv2.ellipse(rgb, centre, axes, float(angle), 0, 360, colour, scale, cv2.LINE_AA)
            cv2.circle(rgb, centre, 2 * scale, colour, -1 if v.source[k] == "network" else scale, cv2.LINE_AA)
        label_at = (int(v.xy[:, 0].max()) + 6 * scale, int(v.xy[:, 1].mean()))
        text = labels[index] if labels else v.name
        cv2.putText(rgb, text, label_at, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (255, 255, 255), scale,
                    cv2.LINE_AA)
    return rgb


def measurement_labels(corners: Sequence[VertebraCorners], spacing_mm: float | None,
                       anterior: str = "right") -> list[str]:
    """Per vertebra, a short label of its heights (anterior/posterior) and of its slip on the next one when
    it is at least 3 mm (``vcorner batch --vis --measure``); with ``anterior`` = ``ap`` (an AP film, which shows
    no anterior or posterior side) its lateral tilt in degrees instead."""

    xy = np.stack([v.xy for v in corners])
    if anterior == "ap":
        return [f"{v.name} tilt {t:+.1f} deg" for v, t in zip(corners, lateral_tilt(xy), strict=True)]
    scale, unit = (spacing_mm, "mm") if spacing_mm else (1.0, "px")
    h = heights(xy, anterior)
    labels = [f"{v.name} {h['anterior_height'][i] * scale:.1f}/{h['posterior_height'][i] * scale:.1f} {unit}"
              for i, v in enumerate(corners)]
    if len(corners) > 1 and spacing_mm:
        slip = listhesis(xy, anterior)[0] * scale
        for i in adjacent_pairs([v.name for v in corners]):
            if abs(slip[i]) >= SLIP_MM:
                labels[i] += f", slip {slip[i]:+.1f} mm"
    return labels


_SUFFIXES = frozenset(s.lstrip(".") for s in SUPPORTED_SUFFIXES)


def _looks_encoded(stem: str) -> bool:
    """True when a PNG's stem ends as an encoded overlay name does (``_`` or ``_jpg``, ``_dcm``...)."""
    head, sep, tail = stem.rpartition("_")
    return bool(sep) and (not tail or tail.lower() in _SUFFIXES)


def overlay_name(image: str) -> str:
    """Overlay file (under ``vis/``) for an image path relative to DIR, in the image's folder: ``a/b.png`` ->
    ``a/b.png``, ``a/b.jpg`` -> ``a/b_jpg.png`` (so ``b.jpg`` and ``b.png`` never share one), ``a/b.dcm`` ->
    ``a/b_dcm.png``; a name without a known image suffix gets ``_.png`` (``scan`` -> ``scan_.png``).

    One to one: a PNG whose stem ends as an encoded name does (``b_jpg.png``) is encoded too
    (``b_jpg_png.png``), so no two image names give one overlay name."""
    folder, slash, base = image.rpartition("/")
    stem, dot, suffix = base.rpartition(".")
    if not dot or not stem or suffix.lower() not in _SUFFIXES:
        name = f"{base}_.png"
    elif suffix.lower() == "png" and not _looks_encoded(stem):
        name = base
    else:
        name = f"{stem}_{suffix}.png"
    return f"{folder}{slash}{name}"


def legacy_overlay_name(image: str) -> str:
    """The overlay name of runs before 2027 (``a/b.jpg`` -> ``a/b.jpg.png``), found and renamed on resume."""
    return image if image.lower().endswith(".png") else f"{image}.png"


def adopt_legacy_overlays(out_dir: Path, images: Sequence[str]) -> int:
    """Rename the overlays an earlier vcorner wrote under :func:`legacy_overlay_name` to :func:`overlay_name`
    (unless that legacy name is another listed image's overlay), so a resumed run keeps them; how many."""
    vis, taken = Path(out_dir) / "vis", {overlay_name(i) for i in images}
    moved = 0
    for image in images:
        old, new = legacy_overlay_name(image), overlay_name(image)
        if old != new and old not in taken and (vis / old).is_file() and not (vis / new).exists():
            (vis / old).rename(vis / new)
            moved += 1
    return moved


def draw_detected(rgb: np.ndarray, detected: DetectedCentres) -> np.ndarray:
    """Draw the detector's centres (a cross, with name and confidence on the left; magenta when the sequence
    checks left it out) in place."""
    scale = max(1, round(max(rgb.shape[:2]) / 800))
    for v in detected.listed.vertebrae:
        x, y = (int(round(c)) for c in v.center)
        colour = (255, 0, 255) if v.name in detected.left_out else (0, 255, 255)
        cv2.drawMarker(rgb, (x, y), colour, cv2.MARKER_CROSS, 10 * scale, scale, cv2.LINE_AA)
        text = f"{v.name} {detected.confidence[v.name]:.2f}"
        (width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, scale)
        cv2.putText(rgb, text, (x - width - 8 * scale, y + 4 * scale), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale,
                    colour, scale, cv2.LINE_AA)
    return rgb


def shared_flags(corners: Sequence[VertebraCorners]) -> list[str]:
    """The flags every vertebra of the image carries (the image's own: ``levels_uncertain``, ``view_uncertain``,
    ``view_contradicted``), in their order."""
    if not corners:
        return []
    return [f for f in corners[0].flags if all(f in v.flags for v in corners[1:])]


def draw_flags(rgb: np.ndarray, flags: Sequence[str]) -> np.ndarray:
    """Write the image's ``flags`` in orange in its top-left corner, in place (nothing without a flag)."""
    if not flags:
        return rgb
    scale = max(1, round(max(rgb.shape[:2]) / 800))
    text = "flagged: " + ", ".join(flags)
    (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.55 * scale, scale)
    cv2.rectangle(rgb, (0, 0), (width + 12 * scale, height + base + 12 * scale), (0, 0, 0), -1)
    cv2.putText(rgb, text, (6 * scale, height + 6 * scale), cv2.FONT_HERSHEY_SIMPLEX, 0.55 * scale, (255, 150, 0),
                scale, cv2.LINE_AA)
    return rgb


def write_overlay(path: Path, grey: np.ndarray, corners: Sequence[VertebraCorners],
                  accumulated: Sequence[AccumulatedMap], labels: Sequence[str] | None = None,
                  detected: DetectedCentres | None = None) -> None:
    """Write the overlay PNG for one image atomically (``labels``: one per vertebra, else their names; with
    ``detected``, also the detector's centres and confidences; the image's own flags in its top-left corner)."""
    rgb = draw_corners(heat_overlay(grey, accumulated), corners, labels)
    if detected is not None:
        draw_detected(rgb, detected)
    draw_flags(rgb, shared_flags(corners))
    ok, data = cv2.imencode(".png", rgb[..., ::-1])
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed")
    write_bytes_atomic(path, data.tobytes())
