"""Crop: a crop's pixels together with where it came from.

Convention: ``window = (x_min, y_min, x_max, y_max)`` is half-open and already clamped to the
parent; ``offset`` is its top-left corner; sizes are ``(width, height)``. Nested crops carry the
offset of their origin in the root image (offsets add up), so their predictions can be mapped
back to the root.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cropcore.detections import Detections

__all__ = ["Crop", "CropBatch", "REASONS", "root_windows"]

#: Why a detection or a static window gives no crop (the job's error reasons of stage "crop"):
#: ``invalid_box`` (a coordinate not finite, or ``x_max < x_min`` / ``y_max < y_min``),
#: ``empty_window`` (the clamped window holds no pixel), ``invalid_mask`` (its RLE mask or, for
#: background removal, its polygon cannot be used).
REASONS = ("invalid_box", "empty_window", "invalid_mask")


@dataclass(frozen=True, eq=False)
class Crop:
    """One crop of a parent image.

    Attributes:
        image (ndarray[h, w, C]): the crop's pixels; a view of the parent unless the background
            was replaced.
        window: ``(x_min, y_min, x_max, y_max)`` in parent pixels, half-open, clamped.
        parent_size: the parent's ``(width, height)``.
        detections: for dynamic crops, the crop's own detection in crop coordinates.
        root_offset: ``(x, y)`` of this crop's origin in the root image; equal to ``offset``
            unless the parent was itself a crop (see ``nested_in``).
        root_size: the root image's ``(width, height)``; equal to ``parent_size`` by default.
    """

    image: np.ndarray
    window: tuple[int, int, int, int]
    parent_size: tuple[int, int]
    detections: Detections | None = None
    root_offset: tuple[int, int] | None = None
    root_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", tuple(int(v) for v in self.window))
        object.__setattr__(self, "parent_size", tuple(int(v) for v in self.parent_size))
        if self.root_offset is None:
            object.__setattr__(self, "root_offset", self.offset)
        if self.root_size is None:
            object.__setattr__(self, "root_size", self.parent_size)

    @property
    def offset(self) -> tuple[int, int]:
        """``(x_min, y_min)`` of the window in the parent."""
        return self.window[0], self.window[1]

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the crop."""
        return self.window[2] - self.window[0], self.window[3] - self.window[1]

    @property
    def root_window(self) -> tuple[int, int, int, int]:
        """The window in root-image pixels."""
        (x, y), (w, h) = self.root_offset, self.size
        return x, y, x + w, y + h

    def nested_in(self, parent: Crop) -> Crop:
        """This crop, taken from ``parent.image``, with its root geometry composed from
        ``parent``'s: root offsets add up and the root size is the parent's root size."""
        (px, py), (x, y) = parent.root_offset, self.offset
        return replace(self, root_offset=(px + x, py + y), root_size=parent.root_size)

    def detections_in_root(self) -> Detections | None:
        """The crop's detections mapped back to the root image: boxes, oriented boxes, keypoints
        and polygons shifted by the root offset, masks pasted into a root-sized canvas."""
        if self.detections is None:
            return None
        return self.detections.in_parent(self.root_offset, self.root_size)


@dataclass(frozen=True, eq=False)
class CropBatch:
    """The crops of one image in one call: one entry per detection (or static window).

    Attributes:
        windows (ndarray[N, 4] int64): clamped half-open windows in parent pixels; rows whose
            box is invalid hold zeros.
        reasons (ndarray[N] object): ``None`` where a crop was made, else one of ``REASONS``.
        messages (ndarray[N] object): ``None`` or the sentence explaining the reason.
        crops (list[ndarray | None]): the crop pixels (a view of the image unless the background
            was blended), ``None`` where ``reasons`` is set.
        masks (list[dict | None]): the detection's RLE mask cut to its window, in the crop frame
            (``None`` without an RLE mask).
        unmasked (ndarray[N] bool): background removal was asked for but the detection had
            neither mask nor polygon, so the crop keeps its background.

    Convention:
        Predictions move into a crop's frame by ``-offsets[i]`` (the window's top-left corner);
        ``cropcore.detections.to_crop_frame`` does it for many crops at once.
    """

    windows: np.ndarray
    reasons: np.ndarray
    messages: np.ndarray
    crops: list
    masks: list
    unmasked: np.ndarray

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def cropped(self) -> np.ndarray:
        """ndarray[N] bool: True where a crop was made."""
        return np.equal(self.reasons, None)

    @property
    def offsets(self) -> np.ndarray:
        """ndarray[N, 2] float64: each window's ``(x_min, y_min)``."""
        return self.windows[:, :2].astype(np.float64)


def root_windows(windows: np.ndarray, root_offsets: np.ndarray) -> np.ndarray:
    """Windows moved into root-image pixels, vectorized ``Crop.root_window``.

    Args:
        windows (ndarray[N, 4] int): windows in parent pixels.
        root_offsets (ndarray[N, 2] int): each parent's origin in its root image (zeros where
            the parent is the root).

    Returns:
        ndarray[N, 4] int64: ``windows + (x, y, x, y)`` of each row's offset.

    Example:
        >>> root_windows(np.array([[1, 2, 5, 6]]), np.array([[10, 20]])).tolist()
        [[11, 22, 15, 26]]
    """
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
    offsets = np.asarray(root_offsets, dtype=np.int64).reshape(-1, 2)
    if len(offsets) != len(windows):
        raise ValueError(f"root_offsets must have shape ({len(windows)}, 2), got {offsets.shape}")
    return windows + np.tile(offsets, 2)
