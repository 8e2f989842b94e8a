"""Numba kernels of the post-processing (docs/design.md section 2, step 7).

:func:`backproject` warps patch maps back onto an image region and averages them; :func:`quadrant_argmax`
finds the prior-weighted maximum of an accumulated map in each quadrant of a vertebra frame; :func:`refine_corner`
refines one maximum to sub-pixel precision and measures its spread. Each public
function checks and converts its arguments, then calls one compiled kernel with a single type signature, so
numba compiles once and caches the machine code on disk, in vcorner's user cache folder
(:func:`vcorner.io.cache.user_cache_dir` ``/numba``), never inside the installed package: an install folder may be
read-only, and files left there shadow a later editable install of the same package. Plain NumPy references are in
:mod:`vcorner.postprocess.reference`.
"""

from __future__ import annotations

import threading
import types

import numba
import numpy as np

from vcorner.io.cache import numba_cache_dir

_NUMBA_CACHE_DIR = numba.config.CACHE_DIR
"""The process's own setting (``$NUMBA_CACHE_DIR``), restored at the end of this module: numba reads it when a
kernel is decorated, so these kernels cache in vcorner's folder and other packages' kernels where they did."""
numba.config.CACHE_DIR = _NUMBA_CACHE_DIR or str(numba_cache_dir())

_LOCK = threading.Lock()
"""Serializes calls of the parallel kernels: numba's fallback ``workqueue`` threading layer aborts when two
Python threads launch parallel kernels at once, and each kernel already uses every numba thread."""
_MODE = threading.local()


def use_serial_kernels(serial: bool = True) -> None:
    """Make this thread call the single-threaded kernels, which need no lock: N such threads, each on its own
    images, scale where one parallel kernel per small region would not (the batch's finisher threads)."""
    _MODE.serial = serial


def _serial() -> bool:
    return getattr(_MODE, "serial", False)


@numba.njit(cache=True, fastmath=False, nogil=True)
def _span(slope: float, offset: float, upper: float) -> tuple[float, float]:
    """Interval of x where ``0 <= slope * x + offset <= upper``; empty when the first bound exceeds the second."""
    if slope > 0.0:
        return (0.0 - offset) / slope, (upper - offset) / slope
    if slope < 0.0:
        return (upper - offset) / slope, (0.0 - offset) / slope
    if 0.0 <= offset <= upper:
        return -np.inf, np.inf
    return np.inf, -np.inf


@numba.njit(cache=True, fastmath=False, nogil=True)
def _inside(slope_u: float, offset_u: float, slope_v: float, offset_v: float, x: float, last: float) -> bool:
    """Whether image column ``x`` of a row falls within [0, last] on both patch axes."""
    u = slope_u * x + offset_u
    v = slope_v * x + offset_v
    return 0.0 <= u <= last and 0.0 <= v <= last


@numba.njit(cache=True, fastmath=False, nogil=True)
def _row_columns(
    slope_u: float, offset_u: float, slope_v: float, offset_v: float, x0: int, width: int, last: float
) -> tuple[int, int]:
    """Columns ``[first, stop)`` of a region row whose pixels fall inside a patch, exactly.

    Along the row, patch coordinates are ``u = slope_u * x + offset_u`` and ``v = slope_v * x + offset_v``.
    The interval solved in closed form gets one pixel of slack on each side, then is trimmed with the very
    expressions the sampling loop evaluates (monotone in x even when rounded, so the covered set is one run).
    """
    lo_u, hi_u = _span(slope_u, offset_u, last)
    lo_v, hi_v = _span(slope_v, offset_v, last)
    lo = max(lo_u, lo_v) - x0
    hi = min(hi_u, hi_v) - x0
    if lo > hi:
        return 0, 0
    first = max(0, int(np.ceil(min(max(lo, -2.0), width + 2.0))) - 1)
    stop = min(width, int(np.floor(min(max(hi, -2.0), width + 2.0))) + 2)
    while first < stop and not _inside(slope_u, offset_u, slope_v, offset_v, float(x0 + first), last):
        first += 1
    while stop > first and not _inside(slope_u, offset_u, slope_v, offset_v, float(x0 + stop - 1), last):
        stop -= 1
    return first, max(first, stop)


@numba.njit(parallel=True, cache=True, fastmath=False, nogil=True)
def _backproject(
    padded: np.ndarray, n: int, to_patch: np.ndarray, x0: int, y0: int, height: int, width: int
) -> np.ndarray:
    """Kernel of :func:`backproject` on (P, (N + 1) ** 2) maps flattened with a zero last row and column.

    The zero margin lets a sample at u or v = N - 1 read its (zero-weighted) right or lower neighbour
    without a clamp. Per row and patch, one loop computes indices and fractions (float64 coordinates,
    float32 fractions), a second gathers and blends in float32.
    """
    out = np.zeros((height, width), dtype=np.float32)
    n_patches = padded.shape[0]
    if n_patches == 0:
        return out
    stride = n + 1
    last = n - 1.0
    one, down = np.uintp(1), np.uintp(stride)  # unsigned indices skip the wraparound check (about 10%)
    for i in numba.prange(height):
        y = float(y0 + i)
        row = np.zeros(width, dtype=np.float32)
        index = np.empty(width, dtype=np.uintp)
        frac_u = np.empty(width, dtype=np.float32)
        frac_v = np.empty(width, dtype=np.float32)
        for k in range(n_patches):
            a = to_patch[k]
            cu = a[0, 1] * y + a[0, 2]
            cv = a[1, 1] * y + a[1, 2]
            first, stop = _row_columns(a[0, 0], cu, a[1, 0], cv, x0, width, last)
            # Loops over views from 0: a loop from a run-time start keeps numba's negative-index wraparound
            # and is not vectorized (measured 5x slower).
            at_, fu_, fv_, sum_ = index[first:stop], frac_u[first:stop], frac_v[first:stop], row[first:stop]
            for t in range(stop - first):
                x = float(x0 + first + t)
                u = a[0, 0] * x + cu
                v = a[1, 0] * x + cv
                iu = int(u)
                iv = int(v)
                fu_[t] = np.float32(u - iu)
                fv_[t] = np.float32(v - iv)
                at_[t] = np.uintp(iv * stride + iu)
            m = padded[k]
            for t in range(stop - first):
                at = at_[t]
                below = at + down
                top = m[at] + fu_[t] * (m[at + one] - m[at])
                bottom = m[below] + fu_[t] * (m[below + one] - m[below])
                sum_[t] += top + fv_[t] * (bottom - top)
        for j in range(width):
            out[i, j] = row[j] / n_patches
    return out


def backproject(
    maps: np.ndarray, to_patch: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]
) -> np.ndarray:
    """Mean of patch maps warped back onto an image region.

    Region pixel ``(i, j)`` is image pixel ``(x0 + j, y0 + i)``; each patch contributes its bilinearly
    interpolated map at that pixel's patch coordinates when they lie within [0, N - 1] on both axes, and
    nothing otherwise. Per region row, each patch's run of covered columns is solved from its affine, so
    a patch that misses a row costs O(1). Coordinates are float64, interpolation float32 (relative error
    about 1e-7). Parallel over rows; the GIL is released.

    Args:
        maps: (P, N, N) patch maps, N >= 2 (converted to float32).
        to_patch: (P, 2, 3) image-to-patch affines (image pixel -> patch column, row).
        origin: ``(x0, y0)`` image pixel of the region's first pixel.
        shape: ``(H, W)`` of the region.

    Returns:
        (H, W) float32 sum over patches divided by P (all zero when P == 0).
    """
    maps = np.asarray(maps)
    to_patch = np.ascontiguousarray(to_patch, dtype=np.float64)
    if maps.ndim != 3 or maps.shape[1] != maps.shape[2] or (len(maps) and maps.shape[1] < 2):
        raise ValueError(f"maps must be (P, N, N) with N >= 2, got {maps.shape}")
    if to_patch.shape != (len(maps), 2, 3):
        raise ValueError(f"to_patch must be ({len(maps)}, 2, 3), got {to_patch.shape}")
    count, n = maps.shape[:2]
    padded = np.zeros((count, n + 1, n + 1), dtype=np.float32)
    padded[:, :n, :n] = maps
    flat = padded.reshape(count, (n + 1) ** 2)
    height, width = (max(0, int(s)) for s in shape)
    if _serial():
        return _backproject_serial(flat, n, to_patch, int(origin[0]), int(origin[1]), height, width)
    with _LOCK:
        return _backproject(flat, n, to_patch, int(origin[0]), int(origin[1]), height, width)


@numba.njit(parallel=True, cache=True, fastmath=False, nogil=True)
def _quadrant_rows(
    acc: np.ndarray, x0: int, y0: int, center: np.ndarray, axes: np.ndarray, reach: float,
    means: np.ndarray, inv_cov: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    height, width = acc.shape
    best = np.full((height, 4), -1.0)
    column = np.full((height, 4), -1, dtype=np.int64)
    for i in numba.prange(height):
        y = float(y0 + i)
        dy = y - center[1]
        for j in range(width):
            x = float(x0 + j)
            dx = x - center[0]
            if dx * dx + dy * dy > reach * reach:
                continue
            qx = axes[0, 0] * dx + axes[1, 0] * dy
            qy = axes[0, 1] * dx + axes[1, 1] * dy
            k = (2 if qy >= 0.0 else 0) + (1 if qx >= 0.0 else 0)
            ex = x - means[k, 0]
            ey = y - means[k, 1]
            m = inv_cov[k, 0, 0] * ex * ex + (inv_cov[k, 0, 1] + inv_cov[k, 1, 0]) * ex * ey
            m += inv_cov[k, 1, 1] * ey * ey
            value = acc[i, j]
            if 0.0 <= value <= best[i, k] and m >= 0.0:  # exp(-0.5 m) <= 1: cannot beat the row's best, exactly
                continue
            score = value * np.exp(-0.5 * m)
            if score > best[i, k]:
                best[i, k] = score
                column[i, k] = j
    return best, column


def quadrant_argmax(
    acc: np.ndarray, origin: tuple[int, int], center: np.ndarray, axes: np.ndarray, size: float,
    prior_means: np.ndarray, prior_inv_cov: np.ndarray, radius: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Prior-weighted maximum of an accumulated map in each quadrant of a vertebra frame.

    Pixels within ``radius * size`` of the centre take part. A pixel's frame coordinates ``q`` (frame x to
    the image right of the spine, y caudal) pick its quadrant: superior when ``q_y < 0``, left when
    ``q_x < 0``; the order is ``vcorner.CORNER_NAMES``. Its score is
    ``acc * exp(-0.5 * d^T inv_cov_k d)`` with ``d`` = pixel - ``prior_means[k]``. Ties go to the first
    pixel in row-major order.

    Args:
        acc: (H, W) accumulated map of the region (converted to float32).
        origin: ``(x0, y0)`` image pixel of ``acc[0, 0]``.
        center: (2,) vertebra centre, image pixels.
        axes: (2, 2) frame axes as columns (x, y).
        size: vertebra size, pixels.
        prior_means: (4, 2) prior corner means, image pixels.
        prior_inv_cov: (4, 2, 2) inverse prior covariances, 1 / px^2.
        radius: search radius in vertebra sizes.

    Returns:
        peaks: (4, 2) int64 ``(row, col)`` of each quadrant's maximum in ``acc``; ``(-1, -1)`` when no
            pixel of the region lies in that quadrant within the radius.
        values: (4,) float64 weighted score at each peak; -1 where there is no pixel.
    """
    acc = np.ascontiguousarray(acc, dtype=np.float32)
    if acc.ndim != 2:
        raise ValueError(f"acc must be (H, W), got {acc.shape}")
    args = (acc, int(origin[0]), int(origin[1]), np.ascontiguousarray(center, dtype=np.float64).reshape(2),
            np.ascontiguousarray(axes, dtype=np.float64).reshape(2, 2), float(radius * size),
            np.ascontiguousarray(prior_means, dtype=np.float64).reshape(4, 2),
            np.ascontiguousarray(prior_inv_cov, dtype=np.float64).reshape(4, 2, 2))
    if _serial():
        best, column = _quadrant_rows_serial(*args)
    else:
        with _LOCK:
            best, column = _quadrant_rows(*args)
    peaks = np.full((4, 2), -1, dtype=np.int64)
    values = np.full(4, -1.0)
    if len(best) == 0:
        return peaks, values
    rows = np.argmax(best, axis=0)  # first row holding the maximum: row-major tie order
    for k, row in enumerate(rows):
        if best[row, k] >= 0.0:
            peaks[k] = row, column[row, k]
            values[k] = best[row, k]
    return peaks, values


@numba.njit(cache=True, fastmath=False, nogil=True)
def _log_or_same(f: np.ndarray) -> np.ndarray:
    """``log f`` when every value is positive, else ``f`` (a copy)."""
    for value in f.ravel():
        if not value > 0.0:
            return f.copy()
    return np.log(f)


@numba.njit(cache=True, fastmath=False, nogil=True)
def _refine(
    acc: np.ndarray, x0: int, y0: int, row: int, col: int, mean: np.ndarray, inv_cov: np.ndarray, reach: int,
    radius: float, scale: float, floor: float, subpixel: bool,
) -> tuple[np.ndarray, np.ndarray]:
    top, left = max(row - reach, 0), max(col - reach, 0)
    bottom, right = min(row + reach + 1, acc.shape[0]), min(col + reach + 1, acc.shape[1])
    height, width = bottom - top, right - left
    score = np.empty((height, width))
    for i in range(height):
        ey = float(y0 + top + i) - mean[1]
        for j in range(width):
            ex = float(x0 + left + j) - mean[0]
            m = ex * (inv_cov[0, 0] * ex + inv_cov[0, 1] * ey) + ey * (inv_cov[1, 0] * ex + inv_cov[1, 1] * ey)
            score[i, j] = float(acc[top + i, left + j]) * np.exp(-0.5 * m)
    r, c = row - top, col - left
    px, py = float(x0 + col), float(y0 + row)
    low = np.inf  # minimum of the score over the disc of ``radius`` around the peak (which holds the peak)
    for i in range(height):
        for j in range(width):
            dx, dy = float(x0 + left + j) - px, float(y0 + top + i) - py
            if dx * dx + dy * dy <= radius * radius and score[i, j] < low:
                low = score[i, j]
    weight = np.zeros((height, width))
    total = sx = sy = 0.0
    for i in range(height):
        for j in range(width):
            dx, dy = float(x0 + left + j) - px, float(y0 + top + i) - py
            if dx * dx + dy * dy <= radius * radius:
                w = score[i, j] - low
                weight[i, j] = w
                total += w
                sx += w * float(x0 + left + j)
                sy += w * float(y0 + top + i)
    cov = np.zeros((2, 2))
    if total > 0.0:
        mx, my = sx / total, sy / total
        for i in range(height):
            for j in range(width):
                dx, dy = float(x0 + left + j) - mx, float(y0 + top + i) - my
                cov[0, 0] += weight[i, j] * dx * dx
                cov[0, 1] += weight[i, j] * dx * dy
                cov[1, 1] += weight[i, j] * dy * dy
        cov /= total
        cov[1, 0] = cov[0, 1]
    cov *= scale * scale
    cov[0, 0] += floor
    cov[1, 1] += floor
    xy = np.array([px, py])
    if subpixel and 0 < r < height - 1 and 0 < c < width - 1:
        f = _log_or_same(score[r - 1 : r + 2, c - 1 : c + 2])
        gx, gy = 0.5 * (f[1, 2] - f[1, 0]), 0.5 * (f[2, 1] - f[0, 1])
        hxx, hyy = f[1, 2] - 2.0 * f[1, 1] + f[1, 0], f[2, 1] - 2.0 * f[1, 1] + f[0, 1]
        hxy = 0.25 * (f[2, 2] - f[2, 0] - f[0, 2] + f[0, 0])
        det = hxx * hyy - hxy * hxy
        if hxx < 0.0 and det > 0.0:
            xy[0] += min(max(-(hyy * gx - hxy * gy) / det, -1.0), 1.0)
            xy[1] += min(max(-(hxx * gy - hxy * gx) / det, -1.0), 1.0)
    return xy, cov


def refine_corner(
    acc: np.ndarray, origin: tuple[int, int], peak: np.ndarray, mean: np.ndarray, inv_cov: np.ndarray,
    reach: int, radius: float, scale: float, floor: float, subpixel: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Refined position and covariance of one corner from the prior-weighted map around its peak.

    The map ``acc`` times the prior weight ``exp(-0.5 d^T inv_cov d)`` (``d`` = pixel - ``mean``) is taken in
    the window of ``reach`` pixels around ``peak``. With ``subpixel`` (and the peak not on the window's edge) the
    position moves by the maximum of a quadratic fit to the log of that weighted map on the 3 x 3 neighbourhood
    (on the map itself when a value is not positive), clamped to +-1 px per axis. The covariance is the second
    moment of the weighted map minus its minimum over the disc of ``radius`` around the peak, about its weighted
    mean, times ``scale ** 2``, plus ``floor`` on the diagonal.

    Args:
        acc: (H, W) accumulated map of the region.
        origin: ``(x0, y0)`` image pixel of ``acc[0, 0]``.
        peak: ``(row, col)`` of the corner's maximum in ``acc``.
        mean: (2,) prior mean, image pixels. inv_cov: (2, 2) inverse (inflated) prior covariance, 1 / px^2.
        reach: half-width of the window, pixels (>= 1). radius: of the covariance disc, pixels.
        scale: covariance scale. floor: variance added to the diagonal, px^2.

    Returns:
        xy: (2,) image pixels. cov: (2, 2) px^2.
    """
    return _refine(np.ascontiguousarray(acc, dtype=np.float32), int(origin[0]), int(origin[1]), int(peak[0]),
                   int(peak[1]), np.ascontiguousarray(mean, dtype=np.float64).reshape(2),
                   np.ascontiguousarray(inv_cov, dtype=np.float64).reshape(2, 2), int(reach), float(radius),
                   float(scale), float(floor), bool(subpixel))


def _renamed(function, name: str):
    """A copy of ``function`` under another name (numba's disk cache is keyed by the function's name)."""
    copy = types.FunctionType(function.__code__, function.__globals__, name, function.__defaults__,
                              function.__closure__)
    copy.__qualname__ = name
    return copy


# Single-threaded builds of the same kernels (``prange`` runs as ``range``), for :func:`use_serial_kernels`.
_backproject_serial = numba.njit(cache=True, fastmath=False, nogil=True)(
    _renamed(_backproject.py_func, "_backproject_serial"))
_quadrant_rows_serial = numba.njit(cache=True, fastmath=False, nogil=True)(
    _renamed(_quadrant_rows.py_func, "_quadrant_rows_serial"))
numba.config.CACHE_DIR = _NUMBA_CACHE_DIR


def warm_up() -> None:
    """Load (or compile) every kernel, serial and parallel, on tiny inputs of the batch's types, so that their
    one-time cost is not counted as the first image's work."""
    maps, to_patch = np.zeros((1, 2, 2), np.float32), np.zeros((1, 2, 3))
    means, inv_cov = np.zeros((4, 2)), np.tile(np.eye(2), (4, 1, 1))
    acc = np.zeros((3, 3), np.float32)
    serial = _serial()
    try:
        for mode in (False, True):
            use_serial_kernels(mode)
            backproject(maps, to_patch, (0, 0), (3, 3))
            quadrant_argmax(acc, (0, 0), np.ones(2), np.eye(2), 1.0, means, inv_cov, 2.0)
        refine_corner(acc, (0, 0), np.ones(2, np.int64), np.ones(2), np.eye(2), 1, 1.0, 1.0, 0.0, True)
    finally:
        use_serial_kernels(serial)
