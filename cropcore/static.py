"""Static crops: one fixed window per image (Roboflow's absolute and relative static crop).

Convention: the window is centred on ``(x_center, y_center)``; ``x_min = round(x_center -
width / 2)`` with rounding half to even, ``x_max = x_min + width``; the window is then clamped
to the image, and a window left empty gives ``None``.
"""

from __future__ import annotations

import numpy as np

from cropcore.crops import Crop, CropBatch
from cropcore.windows import absolute_windows, empty_windows, relative_windows

__all__ = ["absolute_static_crop", "crop_window", "relative_static_crop", "static_crop_batch"]


def _image_size_wh(image: np.ndarray) -> tuple[int, int]:
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        shape = getattr(image, "shape", None)
        raise ValueError(f"image must be an H x W or H x W x C array, got {type(image).__name__} "
                         f"with shape {shape}")
    return image.shape[1], image.shape[0]


def crop_window(image: np.ndarray, window) -> Crop | None:
    """The crop of ``image`` at a clamped half-open ``window``, or ``None`` when it is empty."""
    size_wh = _image_size_wh(image)
    window = np.asarray(window, dtype=np.int64).reshape(4)
    if empty_windows(window)[0]:
        return None
    x_min, y_min, x_max, y_max = (int(v) for v in window)
    return Crop(image[y_min:y_max, x_min:x_max], (x_min, y_min, x_max, y_max), size_wh)


def absolute_static_crop(
    image: np.ndarray, x_center: int, y_center: int, width: int, height: int
) -> Crop | None:
    """The ``width x height`` pixel window centred on ``(x_center, y_center)``, clamped.

    Args:
        image (ndarray[H, W] or ndarray[H, W, C]): any dtype.

    Returns:
        a ``Crop`` whose image is a view of ``image``, or ``None`` when the clamped window is
        empty (for example a centre far outside the image).

    Example:
        >>> crop = absolute_static_crop(np.zeros((100, 100, 3), np.uint8), 50, 60, 10, 20)
        >>> crop.window
        (45, 50, 55, 70)
    """
    window = absolute_windows(x_center, y_center, width, height, _image_size_wh(image))[0]
    return crop_window(image, window)


def relative_static_crop(
    image: np.ndarray, x_center: float, y_center: float, width: float, height: float
) -> Crop | None:
    """Like ``absolute_static_crop`` with centre and size given as fractions of the image size.

    The centre and size are rounded to pixels first (``round(W * x_center)``...). Unlike
    Roboflow's block the window is clamped, so a window hanging over the top-left edge gives its
    visible part instead of ``None``.
    """
    window = relative_windows(x_center, y_center, width, height, _image_size_wh(image))[0]
    return crop_window(image, window)


def static_crop_batch(
    image: np.ndarray, x_center, y_center, width, height, *, relative: bool = False
) -> CropBatch:
    """Static windows of one image in one call, with the reason of each window left empty.

    The batched form of ``absolute_static_crop`` (``relative=False``) and
    ``relative_static_crop`` (``relative=True``) the crop job calls.

    Args:
        image (ndarray[H, W] or ndarray[H, W, C]): any dtype.
        x_center, y_center, width, height: numbers or arrays that broadcast to ``(N,)``; pixels,
            or fractions of the image size with ``relative=True``.

    Returns:
        a ``CropBatch``: ``crops[i]`` is a view of ``image``, or ``None`` with reason
        ``"empty_window"`` when the clamped window holds no pixel.

    Convention:
        The same windows as the single-window functions: ``x_min = round(x_center - width /
        2)`` half to even, ``x_max = x_min + width``, clamped (relative values are first
        rounded to pixels).

    Raises:
        ValueError: for a malformed image or a non-finite value.

    Example:
        >>> batch = static_crop_batch(np.zeros((100, 100), np.uint8), [50, 500], 60, 10, 20)
        >>> batch.windows.tolist(), batch.reasons.tolist()
        ([[45, 50, 55, 70], [100, 50, 100, 70]], [None, 'empty_window'])
    """
    size_wh = _image_size_wh(image)
    make = relative_windows if relative else absolute_windows
    windows = make(x_center, y_center, width, height, size_wh)
    empty = empty_windows(windows)
    reasons = np.where(empty, "empty_window", None).astype(object)
    messages = np.full(len(windows), None, dtype=object)
    crops: list = [None] * len(windows)
    for i, window in enumerate(windows.tolist()):
        if empty[i]:
            messages[i] = (f"the window {window} is empty inside a {size_wh[0]}x{size_wh[1]} "
                           f"image")
            continue
        x_min, y_min, x_max, y_max = window
        crops[i] = image[y_min:y_max, x_min:x_max]
    return CropBatch(windows, reasons, messages, crops, [None] * len(windows),
                     np.zeros(len(windows), dtype=bool))
