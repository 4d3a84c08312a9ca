"""Crop windows: rounding, clamping and offset arithmetic, vectorized over boxes.

Convention: a window is ``(x_min, y_min, x_max, y_max)`` in integer pixels, half-open:
it covers columns ``x_min .. x_max - 1`` and rows ``y_min .. y_max - 1``, so it selects
``image[y_min:y_max, x_min:x_max]``. Rounding is half to even (Python's ``round``), never
truncation. Sizes are ``(width, height)`` and named ``size_wh``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "INVERTED",
    "NOT_FINITE",
    "absolute_windows",
    "box_faults",
    "clamp_windows",
    "empty_windows",
    "relative_windows",
    "round_half_even",
    "windows_from_xyxy",
]


def round_half_even(values: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, ties to even (``np.round``), as int64.

    Args:
        values (ndarray[...] float): coordinates; must be finite.
    """
    return _rounded(np.asarray(values, dtype=np.float64)).astype(np.int64)


def clamp_windows(windows: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Clamp integer windows ``(N, 4)`` to ``[0, width] x [0, height]``; returns a new array."""
    width, height = size_wh
    out = np.array(windows, dtype=np.int64, copy=True).reshape(-1, 4)
    np.clip(out[:, 0::2], 0, width, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, height, out=out[:, 1::2])
    return out


def empty_windows(windows: np.ndarray) -> np.ndarray:
    """Boolean ``(N,)``: True where a window selects no pixel (``x_max <= x_min`` or
    ``y_max <= y_min``)."""
    windows = np.asarray(windows).reshape(-1, 4)
    return (windows[:, 2] <= windows[:, 0]) | (windows[:, 3] <= windows[:, 1])


#: ``box_faults`` values: a coordinate is null, NaN or infinite / ``x_max < x_min`` or
#: ``y_max < y_min``. Both make the detection's reason ``invalid_box``.
NOT_FINITE = "not_finite"
INVERTED = "inverted"


def box_faults(boxes_xyxy: np.ndarray) -> np.ndarray:
    """Why each box cannot be cropped at all, whatever the image: ``""`` for a valid box.

    Args:
        boxes_xyxy (ndarray[N, 4] float): pixel boxes; NaN stands for a null coordinate.

    Returns:
        ndarray[N] str: ``NOT_FINITE`` where a coordinate is NaN or infinite, else ``INVERTED``
        where ``x_max < x_min`` or ``y_max < y_min``, else ``""``.

    Convention:
        A zero-area box (``x_max == x_min``) is not a fault: it gives an empty window, which is
        a fact about the box and the image together (see ``empty_windows``).

    Example:
        >>> box_faults(np.array([[0, 0, 1, 1], [2, 0, 1, 1], [np.nan, 0, 1, 1.0]])).tolist()
        ['', 'inverted', 'not_finite']
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=1)
    inverted = finite & ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    return np.where(~finite, NOT_FINITE, np.where(inverted, INVERTED, ""))


def windows_from_xyxy(boxes_xyxy: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Clamped integer windows of float pixel boxes: each coordinate rounded half to even.

    Args:
        boxes_xyxy (ndarray[N, 4] float): ``x_min, y_min, x_max, y_max`` in parent pixels;
            finite, of any magnitude.
        size_wh: the parent's ``(width, height)``.

    Returns:
        ndarray[N, 4] int64, clamped; empty windows are left in place (see ``empty_windows``).

    Convention:
        Coordinates beyond ``2 * max(width, height) + 2`` pixels from the origin are limited to
        that first: the clamped window is the same, and rounding stays exact (``1e300`` does
        not overflow int64).

    Raises:
        ValueError: for a NaN or infinite coordinate.
    """
    boxes_xyxy = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return clamp_windows(_limited(_rounded(boxes_xyxy), size_wh), size_wh)


def absolute_windows(
    x_center: np.ndarray,
    y_center: np.ndarray,
    width: np.ndarray,
    height: np.ndarray,
    size_wh: tuple[int, int],
) -> np.ndarray:
    """Clamped windows of centre/size boxes in pixels (Roboflow's absolute static crop).

    ``x_min = round(x_center - width / 2)``, ``x_max = x_min + width`` (likewise y), so the
    window keeps the requested size before clamping. Arguments broadcast against each other.

    Returns:
        ndarray[N, 4] int64, clamped.
    """
    xc, yc, w, h = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64).reshape(-1) for v in (x_center, y_center, width, height))
    )
    # In float64, where integers are exact up to 2^53 and a sum that lands near the image is
    # exact too; then limited like windows_from_xyxy, so 1e20 cannot overflow int64.
    x_min = _rounded(xc - w / 2)
    y_min = _rounded(yc - h / 2)
    x_max = x_min + _rounded(w)
    y_max = y_min + _rounded(h)
    return clamp_windows(_limited(np.stack([x_min, y_min, x_max, y_max], axis=1), size_wh),
                         size_wh)


def _rounded(values: np.ndarray) -> np.ndarray:
    """Finite float64 ``values`` rounded half to even, kept as float64 (any magnitude)."""
    if not np.all(np.isfinite(values)):
        raise ValueError(f"coordinates must be finite, got {values[~np.isfinite(values)][:4]}")
    return np.round(values)


def _limited(coordinates: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Whole-pixel float coordinates as int64, those beyond ``2 * max(width, height) + 2``
    pixels from the origin limited to that: the clamped window is the same, and no magnitude
    overflows int64."""
    limit = float(2 * max(int(size_wh[0]), int(size_wh[1])) + 2)
    return np.clip(coordinates, -limit, limit).astype(np.int64)


def relative_windows(
    x_center: np.ndarray,
    y_center: np.ndarray,
    width: np.ndarray,
    height: np.ndarray,
    size_wh: tuple[int, int],
) -> np.ndarray:
    """Clamped windows of centre/size boxes given as fractions of the parent's size.

    The centre and size are first rounded to pixels (half to even), then treated as an
    absolute crop; unlike Roboflow's block the result is clamped (see crop-semantics.md).
    """
    image_w, image_h = size_wh
    xc, yc, w, h = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64).reshape(-1) for v in (x_center, y_center, width, height))
    )
    return absolute_windows(
        _rounded(image_w * xc),
        _rounded(image_h * yc),
        _rounded(image_w * w),
        _rounded(image_h * h),
        size_wh,
    )
