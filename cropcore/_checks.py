"""Argument checks shared by the kernels: one definition of "an integer" and of "an image"."""

from __future__ import annotations

import numpy as np

__all__ = ["image_size_wh", "is_int"]


def is_int(value) -> bool:
    """Whether ``value`` is a Python or NumPy integer; ``bool`` is not one.

    >>> [is_int(v) for v in (3, np.int64(3), True, np.bool_(True), 3.0, "3")]
    [True, True, False, False, False, False]
    """
    return type(value) is int or (  # the common case first: this runs for every window
        isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)))


def image_size_wh(image) -> tuple[int, int]:
    """``(width, height)`` of an ``H x W`` or ``H x W x C`` array; ``ValueError`` naming the
    type and shape received for anything else.

    >>> image_size_wh(np.zeros((480, 640, 3), np.uint8))
    (640, 480)
    """
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise ValueError(f"image must be an H x W or H x W x C array, got {type(image).__name__} "
                         f"with shape {getattr(image, 'shape', None)}")
    return image.shape[1], image.shape[0]
