"""Detections: boxes, ids, masks, keypoints, polygons and per-detection data kept aligned.

Convention: ``xyxy`` are float pixel boxes ``(x_min, y_min, x_max, y_max)`` in the frame of the
image they were detected on; keypoints are ``(x, y[, confidence])`` and polygon vertices
``(x, y)`` pixels in the same frame; masks are boolean ``(H, W)`` per detection, covering that
whole frame, dense in ``mask`` or COCO RLE in ``data["mask_rle"]``. Oriented
boxes are four ``(x, y)`` corners per detection in ``data["xyxyxyxy"]``, where supervision and
Roboflow keep them, so code written against ``sv.Detections`` finds them in the same place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np

from cropcore.masks import cut_rle, decode_rle, encode_rle

__all__ = ["MASK_RLE", "ORIENTED_BOX_COORDINATES", "Detections", "to_crop_frame"]

#: The ``data`` key of oriented boxes, ``(N, 4, 2)`` float corners; the same key as
#: ``supervision.config.ORIENTED_BOX_COORDINATES``.
ORIENTED_BOX_COORDINATES = "xyxyxyxy"
#: The ``data`` key of COCO RLE masks (``dict`` or ``None`` per detection), decoded only inside
#: each window (``cut_rle``) instead of a dense ``(N, H, W)`` ``mask``.
MASK_RLE = "mask_rle"


def _as_1d(name: str, value, n: int, dtype=None) -> np.ndarray:
    array = np.asarray(value, dtype=dtype)
    if array.ndim != 1 or len(array) != n:
        raise ValueError(f"{name} must have shape ({n},) to match xyxy, got {array.shape}")
    return array


def _oriented_boxes(value, n: int) -> np.ndarray:
    try:
        corners = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"data['xyxyxyxy'] (oriented boxes) must be numbers of shape ({n}, 4, 2), got "
            f"{type(value).__name__}: {error}"
        ) from None
    if corners.size == 0 and n == 0:
        return corners.reshape(0, 4, 2)
    if corners.shape != (n, 4, 2):
        raise ValueError(
            f"data['xyxyxyxy'] (oriented boxes) must have shape ({n}, 4, 2), got {corners.shape}"
        )
    return corners


def _polygon(value, index: int) -> np.ndarray:
    """A polygon as ``(P, 2)`` float64 vertices; a flat ``[x0, y0, x1, y1, ...]`` is paired up."""
    polygon = np.asarray(value, dtype=np.float64)
    if polygon.ndim == 1 and len(polygon) % 2 == 0:
        return polygon.reshape(-1, 2)
    if polygon.ndim != 2 or polygon.shape[1] != 2:
        raise ValueError(f"polygons[{index}] must have shape (P, 2) (x, y vertices) or be a flat "
                         f"x, y list, got shape {polygon.shape}")
    return polygon


@dataclass(frozen=True, eq=False)
class Detections:
    """N detections on one image, every field aligned on the first axis.

    Attributes:
        xyxy (ndarray[N, 4] float64): boxes in pixels, ``x_min, y_min, x_max, y_max``.
        detection_id (ndarray[N] object | None): one string id per detection.
        mask (ndarray[N, H, W] bool | None): instance masks in the image frame (another dtype
            is read as ``mask > 0``, as Roboflow's overlay reads one).
        keypoints (ndarray[N, K, 2 or 3] float64 | None): ``x, y[, confidence]`` per keypoint.
        polygons (list[ndarray[P_i, 2] float64] | None): one outline per detection (a flat
            ``[x0, y0, x1, y1, ...]`` list is paired up; other shapes raise ``ValueError``).
        class_name (ndarray[N] object | None), class_id (ndarray[N] int64 | None),
        confidence (ndarray[N] float64 | None): copied unchanged by every geometric operation.
        data (dict[str, ndarray[N, ...]]): any other per-detection values, kept aligned.
            ``data["xyxyxyxy"]`` (ndarray[N, 4, 2] float64), when present, holds oriented boxes:
            it is validated, and every geometric operation moves it like the keypoints.
            ``data["mask_rle"]`` (ndarray[N] object of COCO RLE dicts or ``None``) holds masks
            as RLE: ``in_window`` and ``in_parent`` cut and paste them like ``mask``.

    Convention:
        Oriented-box corners are pixels in the same frame as ``xyxy``, in the order the
        detector gave them (supervision and YOLO-OBB give them clockwise from any corner); they
        are translated, never clipped, so corners may lie outside the crop they travel with.
    """

    xyxy: np.ndarray
    detection_id: np.ndarray | None = None
    mask: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    polygons: list[np.ndarray] | None = None
    class_name: np.ndarray | None = None
    class_id: np.ndarray | None = None
    confidence: np.ndarray | None = None
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float64)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            if xyxy.size == 0:
                xyxy = xyxy.reshape(0, 4)
            else:
                raise ValueError(f"xyxy must have shape (N, 4), got {xyxy.shape}")
        n = len(xyxy)
        set_ = object.__setattr__
        set_(self, "xyxy", xyxy)
        if self.detection_id is not None:
            set_(self, "detection_id", _as_1d("detection_id", self.detection_id, n, object))
        if self.class_name is not None:
            set_(self, "class_name", _as_1d("class_name", self.class_name, n, object))
        if self.class_id is not None:
            set_(self, "class_id", _as_1d("class_id", self.class_id, n, np.int64))
        if self.confidence is not None:
            set_(self, "confidence", _as_1d("confidence", self.confidence, n, np.float64))
        if self.mask is not None:
            mask = np.asarray(self.mask)
            if mask.ndim != 3 or len(mask) != n:
                raise ValueError(f"mask must have shape ({n}, H, W), got {mask.shape}")
            # as Roboflow's overlay reads a mask: above 0 is the object (so -1 and NaN are not)
            set_(self, "mask", mask if mask.dtype == bool else mask > 0)
        if self.keypoints is not None:
            keypoints = np.asarray(self.keypoints, dtype=np.float64)
            if keypoints.ndim != 3 or len(keypoints) != n or keypoints.shape[2] not in (2, 3):
                raise ValueError(
                    f"keypoints must have shape ({n}, K, 2) or ({n}, K, 3), got {keypoints.shape}"
                )
            set_(self, "keypoints", keypoints)
        if self.polygons is not None:
            if len(self.polygons) != n:
                raise ValueError(f"polygons must hold {n} outlines, got {len(self.polygons)}")
            set_(self, "polygons", [_polygon(p, i) for i, p in enumerate(self.polygons)])
        data = {}
        for key, value in self.data.items():
            if key == ORIENTED_BOX_COORDINATES:
                data[key] = _oriented_boxes(value, n)
                continue
            array = np.asarray(value) if not isinstance(value, np.ndarray) else value
            if array.ndim == 0:
                raise ValueError(f"data[{key!r}] must have length {n}, got a scalar {array!r}")
            if len(array) != n:
                raise ValueError(f"data[{key!r}] must have length {n}, got {len(array)}")
            data[key] = array
        set_(self, "data", data)

    @property
    def xyxyxyxy(self) -> np.ndarray | None:
        """The oriented boxes, ``data["xyxyxyxy"]`` (ndarray[N, 4, 2] float64), or None."""
        return self.data.get(ORIENTED_BOX_COORDINATES)

    @classmethod
    def empty(cls) -> Detections:
        """No detections."""
        return cls(xyxy=np.empty((0, 4), dtype=np.float64))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Detections:
        """Select detections by position, slice, integer array or boolean mask; stays aligned."""
        if isinstance(index, (int, np.integer)):
            position = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= position < len(self):
                raise IndexError(f"index {index} is out of range for {len(self)} detections")
            index = slice(position, position + 1)
        if isinstance(index, slice):
            # Basic slicing keeps views: no copy of the (N, H, W) masks.
            return self._select(index, lambda items: items[index])
        index = np.asarray(index)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise IndexError(f"boolean index must have shape ({len(self)},), got {index.shape}")
            index = np.flatnonzero(index)
        return self._select(index, lambda items: [items[i] for i in index])

    def _select(self, index, select_list) -> Detections:
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                values[f.name] = None
            elif f.name == "polygons":
                values[f.name] = select_list(value)
            elif f.name == "data":
                values[f.name] = {k: v[index] for k, v in value.items()}
            else:
                values[f.name] = value[index]
        return Detections(**values)

    def moved(self, offset_xy: tuple[float, float]) -> Detections:
        """Boxes, oriented boxes, keypoints and polygons shifted by ``-offset`` (into a frame
        whose origin is at ``offset_xy`` in this one). Nothing is clipped; masks are left as
        they are."""
        dx, dy = (float(v) for v in offset_xy)
        keypoints = None
        if self.keypoints is not None:
            keypoints = self.keypoints.copy()
            keypoints[..., 0] -= dx
            keypoints[..., 1] -= dy
        polygons = None
        if self.polygons is not None:
            polygons = [p - (dx, dy) for p in self.polygons]
        data = self.data
        if ORIENTED_BOX_COORDINATES in data:
            data = {**data, ORIENTED_BOX_COORDINATES: data[ORIENTED_BOX_COORDINATES] - (dx, dy)}
        return replace(
            self,
            xyxy=self.xyxy - (dx, dy, dx, dy),
            keypoints=keypoints,
            polygons=polygons,
            data=data,
        )

    def in_window(self, window: tuple[int, int, int, int]) -> Detections:
        """These detections seen from the crop ``window = (x_min, y_min, x_max, y_max)``:
        coordinates move to the crop's origin and masks are cut to the window."""
        x_min, y_min, x_max, y_max = window = tuple(int(v) for v in window)
        moved = self.moved((x_min, y_min))
        if self.mask is not None:
            moved = replace(moved, mask=self.mask[:, y_min:y_max, x_min:x_max])
        return moved._with_rles(lambda rle: cut_rle(rle, window)[1])

    def in_parent(self, offset_xy: tuple[int, int], parent_size_wh: tuple[int, int]) -> Detections:
        """The inverse of ``in_window``: coordinates shifted by ``+offset`` and masks pasted into
        a ``parent_size_wh`` canvas at the offset (parts falling outside are cut)."""
        dx, dy = (int(v) for v in offset_xy)
        width, height = parent_size_wh
        moved = self.moved((-dx, -dy))

        def pasted(masks: np.ndarray) -> np.ndarray:
            canvas = np.zeros((len(masks), height, width), dtype=bool)
            h, w = masks.shape[1:]
            x0, y0 = max(dx, 0), max(dy, 0)
            x1, y1 = min(dx + w, width), min(dy + h, height)
            if x1 > x0 and y1 > y0:
                canvas[:, y0:y1, x0:x1] = masks[:, y0 - dy : y1 - dy, x0 - dx : x1 - dx]
            return canvas

        if self.mask is not None:
            moved = replace(moved, mask=pasted(self.mask))
        return moved._with_rles(lambda rle: encode_rle(pasted(decode_rle(rle)[None])[0]))

    def _with_rles(self, change) -> Detections:
        """These detections with ``change`` applied to each RLE mask in ``data["mask_rle"]``."""
        rles = self.data.get(MASK_RLE)
        if rles is None:
            return self
        changed = np.empty(len(rles), dtype=object)
        changed[:] = [None if rle is None else change(rle) for rle in rles]
        return replace(self, data={**self.data, MASK_RLE: changed})


def to_crop_frame(values: np.ndarray, owners: np.ndarray, axes: np.ndarray | int,
                  offsets_xy: np.ndarray) -> np.ndarray:
    """Coordinates of many detections moved into their crops' frames at once.

    The flat form of ``Detections.moved`` for ragged geometry (keypoints, polygons, oriented
    boxes of a whole shard, each detection with its own crop).

    Args:
        values (ndarray[M] float): coordinates, NaN allowed (it stays NaN).
        owners (ndarray[M] int): the crop (row of ``offsets_xy``) each value belongs to.
        axes (ndarray[M] int or int): 0 where a value is an x, 1 where it is a y.
        offsets_xy (ndarray[N, 2] float): each crop's window origin ``(x_min, y_min)``.

    Returns:
        ndarray[M] float64: ``values - offsets_xy[owners, axes]``.

    Convention:
        Coordinates are translated, never clipped: they may lie outside the crop.

    Example:
        >>> to_crop_frame(np.array([5.0, 7.0, 5.0]), np.array([0, 0, 1]), np.array([0, 1, 0]),
        ...               np.array([[1.0, 2.0], [4.0, 0.0]])).tolist()
        [4.0, 5.0, 1.0]
    """
    values = np.asarray(values, dtype=np.float64)
    owners = np.asarray(owners, dtype=np.int64)
    offsets = np.asarray(offsets_xy, dtype=np.float64).reshape(-1, 2)
    if owners.shape != values.shape:
        raise ValueError(f"owners must have shape {values.shape}, got {owners.shape}")
    if len(owners) and (owners.min() < 0 or owners.max() >= len(offsets)):
        raise ValueError(f"owners must index the {len(offsets)} offsets, got values from "
                         f"{owners.min()} to {owners.max()}")
    return values - offsets[owners, np.broadcast_to(np.asarray(axes, dtype=np.int64),
                                                    values.shape)]
