"""Clinical measurements from vertebral corners, as pure vectorised functions (README.md, Measurements).

Every function takes corners ``xy`` of shape (..., V, 4, 2) in image pixels, in the order of
``vcorner.CORNER_NAMES`` (superior_left, superior_right, inferior_left, inferior_right: the vertebra's own
frame, cranial side up), so that the same code computes a value from the found corners and from thousands
of Monte Carlo samples of them at once (:mod:`vcorner.measure.intervals`). ``anterior`` says which side of
the frame is anterior: ``right`` (a lateral film with the patient facing right, the default) or ``left``.
Lengths come out in the unit of ``xy`` (pixels; the caller multiplies by the pixel spacing, after stretching
the corners to square pixels when the spacing is anisotropic: :func:`vcorner.measure.intervals.measure_image`).
"""

from __future__ import annotations

import numpy as np

SUPERIOR_LEFT, SUPERIOR_RIGHT, INFERIOR_LEFT, INFERIOR_RIGHT = range(4)
GENANT_LOSS = (0.20, 0.25, 0.40)
"""Height loss at which Genant's semi-quantitative grades 1, 2 and 3 start (mild, moderate, severe)."""
MEYERDING_STEP_PCT = 25.0
"""Width of one Meyerding grade, percent of the lower endplate (grade V: more than 100%)."""


def corner_sides(anterior: str = "right") -> tuple[int, int, int, int]:
    """Indices of the (superior posterior, superior anterior, inferior posterior, inferior anterior) corners.

    Raises:
        ValueError: ``anterior`` is neither ``right`` nor ``left``.
    """
    if anterior == "right":
        return SUPERIOR_LEFT, SUPERIOR_RIGHT, INFERIOR_LEFT, INFERIOR_RIGHT
    if anterior == "left":
        return SUPERIOR_RIGHT, SUPERIOR_LEFT, INFERIOR_RIGHT, INFERIOR_LEFT
    raise ValueError(f"anterior must be 'right' or 'left', got {anterior!r}")


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(v * v, axis=-1))


def heights(xy: np.ndarray, anterior: str = "right") -> dict[str, np.ndarray]:
    """(..., V) anterior, posterior and middle heights, in the unit of ``xy``.

    anterior = |superior_anterior - inferior_anterior|, posterior likewise, middle = distance between the
    midpoints of the superior and inferior endplates.
    """
    sp, sa, ip, ia = corner_sides(anterior)
    middle = 0.5 * (xy[..., sp, :] + xy[..., sa, :]) - 0.5 * (xy[..., ip, :] + xy[..., ia, :])
    return {"anterior_height": _norm(xy[..., sa, :] - xy[..., ia, :]),
            "posterior_height": _norm(xy[..., sp, :] - xy[..., ip, :]),
            "middle_height": _norm(middle)}


def height_loss(h: dict[str, np.ndarray]) -> np.ndarray:
    """(..., V) Genant height loss: 1 - (smallest of the three heights) / reference, as a fraction.

    The reference is the larger of the vertebra's own posterior height and the mean tallest height of its
    neighbours in the list, so that a wedge (anterior loss) and a crush (every height lost) both show.
    """
    tallest = np.maximum(np.maximum(h["anterior_height"], h["posterior_height"]), h["middle_height"])
    count = tallest.shape[-1]
    total, n = np.zeros_like(tallest), np.zeros(count)
    if count > 1:
        total[..., 1:] += tallest[..., :-1]
        total[..., :-1] += tallest[..., 1:]
        n[1:] += 1
        n[:-1] += 1
    neighbours = np.divide(total, n, out=np.zeros_like(total), where=n > 0)
    reference = np.maximum(h["posterior_height"], neighbours)
    smallest = np.minimum(np.minimum(h["anterior_height"], h["posterior_height"]), h["middle_height"])
    return 1.0 - smallest / reference


def genant_grade(loss: np.ndarray) -> np.ndarray:
    """(...) Genant grade 0-3 of height-loss fractions."""
    return np.searchsorted(np.asarray(GENANT_LOSS), loss, side="right")


def listhesis(xy: np.ndarray, anterior: str = "right") -> tuple[np.ndarray, np.ndarray]:
    """(..., V - 1) slip of each upper vertebra on the next one, in the unit of ``xy``, and as percent of the lower
    superior endplate.

    The upper vertebra's inferior posterior corner minus the lower's superior posterior corner, projected on
    the lower superior endplate's direction (posterior -> anterior): positive for an anterior slip.
    """
    sp, sa, ip, _ = corner_sides(anterior)
    upper, lower = xy[..., :-1, :, :], xy[..., 1:, :, :]
    endplate = lower[..., sa, :] - lower[..., sp, :]
    length = _norm(endplate)
    slip = np.sum((upper[..., ip, :] - lower[..., sp, :]) * endplate, axis=-1) / length
    return slip, 100.0 * slip / length


def meyerding_grade(pct: np.ndarray) -> np.ndarray:
    """(...) Meyerding grade: 0 without anterior slip, I (up to 25%) ... IV (up to 100%), V beyond."""
    return np.where(pct > 0, np.clip(np.ceil(pct / MEYERDING_STEP_PCT), 1, 5), 0).astype(int)


def _signed_angle(e1: np.ndarray, e2: np.ndarray, gap_anterior: np.ndarray, gap_posterior: np.ndarray) -> np.ndarray:
    """Angle between two directed endplates, degrees; positive when the gap opens anteriorly (lordosis)."""
    cross = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    angle = np.degrees(np.arctan2(np.abs(cross), np.sum(e1 * e2, axis=-1)))
    return np.where(gap_anterior >= gap_posterior, angle, -angle)


def segmental_angle(xy: np.ndarray, anterior: str = "right") -> np.ndarray:
    """(..., V - 1) angle between each upper vertebra's inferior endplate and the next one's superior
    endplate, degrees: positive when the disc opens anteriorly (lordosis), negative when it opens
    posteriorly (kyphosis)."""
    sp, sa, ip, ia = corner_sides(anterior)
    upper, lower = xy[..., :-1, :, :], xy[..., 1:, :, :]
    return _signed_angle(upper[..., ia, :] - upper[..., ip, :], lower[..., sa, :] - lower[..., sp, :],
                         _norm(upper[..., ia, :] - lower[..., sa, :]), _norm(upper[..., ip, :] - lower[..., sp, :]))


def global_angle(xy: np.ndarray, anterior: str = "right") -> np.ndarray:
    """(...) angle from the first vertebra's superior endplate to the last one's inferior endplate, degrees:
    positive when the anterior column is the longer (lordosis, e.g. C3-C7 on a lateral film)."""
    sp, sa, ip, ia = corner_sides(anterior)
    first, last = xy[..., 0, :, :], xy[..., -1, :, :]
    return _signed_angle(first[..., sa, :] - first[..., sp, :], last[..., ia, :] - last[..., ip, :],
                         _norm(first[..., sa, :] - last[..., ia, :]), _norm(first[..., sp, :] - last[..., ip, :]))


def endplate_width(xy: np.ndarray) -> np.ndarray:
    """(..., V) mean length of the superior and inferior endplates, in the unit of ``xy``: on an AP film the
    vertebral body's width (left to right), on a lateral film its depth."""
    return 0.5 * (_norm(xy[..., SUPERIOR_RIGHT, :] - xy[..., SUPERIOR_LEFT, :])
                  + _norm(xy[..., INFERIOR_RIGHT, :] - xy[..., INFERIOR_LEFT, :]))


def lateral_tilt(xy: np.ndarray) -> np.ndarray:
    """(..., V) tilt of each vertebra on an AP film, degrees: the angle from the image's horizontal to the mean
    direction of its superior and inferior endplates (left corner to right corner), positive when the
    vertebra's right side lies lower on the image (clockwise as the film is viewed)."""
    superior = xy[..., SUPERIOR_RIGHT, :] - xy[..., SUPERIOR_LEFT, :]
    inferior = xy[..., INFERIOR_RIGHT, :] - xy[..., INFERIOR_LEFT, :]
    direction = superior / _norm(superior)[..., None] + inferior / _norm(inferior)[..., None]
    return np.degrees(np.arctan2(direction[..., 1], direction[..., 0]))


def coronal_angle(xy: np.ndarray) -> np.ndarray:
    """(..., V - 1) angle between each upper vertebra's inferior endplate and the next one's superior endplate
    on an AP film, degrees: positive when the disc is wider on the image's right (the side of the frame's
    right corners), negative when wider on the left (:func:`segmental_angle` with right and left for
    anterior and posterior)."""
    return segmental_angle(xy, "right")


def endplate_angles(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., V) directions of each vertebra's superior and inferior endplates (left corner to right), degrees."""
    superior = xy[..., SUPERIOR_RIGHT, :] - xy[..., SUPERIOR_LEFT, :]
    inferior = xy[..., INFERIOR_RIGHT, :] - xy[..., INFERIOR_LEFT, :]
    return (np.degrees(np.arctan2(superior[..., 1], superior[..., 0])),
            np.degrees(np.arctan2(inferior[..., 1], inferior[..., 0])))


def angle_between(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """|first - second| of two directions in degrees, folded into [0, 180]."""
    return np.abs((first - second + 180.0) % 360.0 - 180.0)


def cobb_between(xy: np.ndarray, upper: int, lower: int) -> np.ndarray:
    """(...) angle between vertebra ``upper``'s superior endplate and vertebra ``lower``'s inferior endplate,
    degrees: the Cobb angle once its end vertebrae are chosen."""
    superior, _ = endplate_angles(xy[..., upper : upper + 1, :, :])
    _, inferior = endplate_angles(xy[..., lower : lower + 1, :, :])
    return angle_between(superior[..., 0], inferior[..., 0])


def cobb_angle(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(...) main Cobb angle of an AP film, degrees: the largest angle between the superior endplate of one
    vertebra and the inferior endplate of the same or a lower one; and the (...) indices of those two."""
    theta_s, theta_i = endplate_angles(xy)  # (..., V)
    diff = angle_between(theta_s[..., :, None], theta_i[..., None, :])  # (..., V, V)
    count = xy.shape[-3]
    diff = np.where(np.triu(np.ones((count, count), dtype=bool)), diff, -1.0)
    flat = diff.reshape(*diff.shape[:-2], -1)
    best = np.argmax(flat, axis=-1)
    return np.take_along_axis(flat, best[..., None], -1)[..., 0], best // count, best % count
