"""Between Arrow columns and the NumPy arrays the kernels take: the job's only translation layer.

Everything here is vectorized over a whole chunk of detections; nothing loops per pixel.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs import schema

__all__ = [
    "boxes_xyxy",
    "flatten_nested_detections",
    "translate_keypoints",
    "translate_oriented_boxes",
    "translate_polygons",
]


def boxes_xyxy(detections: pa.Table) -> np.ndarray:
    """ndarray[N, 4] float64 of the ``x_min, y_min, x_max, y_max`` columns (nulls become NaN)."""
    columns = [
        pc.cast(detections.column(name), pa.float64()).to_numpy(zero_copy_only=False)
        for name in schema.BOX_COLUMNS
    ]
    return np.stack(columns, axis=1).astype(np.float64, copy=False).reshape(-1, 4)


def flatten_nested_detections(images: pa.Table) -> pa.Table:
    """The ``detections`` list column of an images chunk as a flat table with ``__row``, the
    index of each detection's image row (input order kept)."""
    nested = images.column("detections").combine_chunks()
    flat = nested.flatten()
    rows = pc.list_parent_indices(nested)
    table = pa.Table.from_struct_array(flat) if len(flat) else pa.table(
        {f.name: pa.array([], f.type) for f in flat.type}
    )
    return table.append_column("__row", pc.cast(rows, pa.int64()))


def _offsets(lists: pa.Array) -> pa.Array:
    """A list array's offsets rebased to 0, matching what ``flatten()`` returns for a slice."""
    offsets = lists.offsets
    return pc.subtract(offsets, offsets[0])


def _shift_list_values(values: pa.Array, offsets: np.ndarray, parents: np.ndarray) -> pa.Array:
    data = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    return pa.array(data - offsets[parents], pa.float64())


def translate_keypoints(keypoints: pa.Array, offsets_xy: np.ndarray) -> pa.Array:
    """``list<struct<x, y, confidence>>`` with ``offsets_xy[i]`` subtracted from row ``i``."""
    keypoints = keypoints.combine_chunks() if isinstance(keypoints, pa.ChunkedArray) else keypoints
    points = keypoints.flatten()
    parents = pc.list_parent_indices(keypoints).to_numpy(zero_copy_only=False)
    names = [points.type.field(i).name for i in range(points.type.num_fields)]
    children = []
    for name, child in zip(names, points.flatten(), strict=True):
        if name == "x":
            child = _shift_list_values(child, offsets_xy[:, 0], parents)
        elif name == "y":
            child = _shift_list_values(child, offsets_xy[:, 1], parents)
        children.append(child)
    moved = pa.StructArray.from_arrays(children, names=names, mask=pc.invert(points.is_valid()))
    valid = pc.invert(keypoints.is_valid())
    return pa.ListArray.from_arrays(_offsets(keypoints), moved, mask=valid)


def translate_polygons(polygons: pa.Array, offsets_xy: np.ndarray) -> pa.Array:
    """``list<list<float64>>`` of ``[x, y]`` points with ``offsets_xy[i]`` subtracted from row i."""
    polygons = polygons.combine_chunks() if isinstance(polygons, pa.ChunkedArray) else polygons
    points = polygons.flatten()
    point_parents = pc.list_parent_indices(polygons).to_numpy(zero_copy_only=False)
    coordinates = points.flatten()
    coordinate_parents = pc.list_parent_indices(points).to_numpy(zero_copy_only=False)
    point_offsets = _offsets(points)
    starts = point_offsets.to_numpy()
    position = np.arange(len(coordinates)) - np.repeat(starts[:-1], np.diff(starts))
    rows = point_parents[coordinate_parents]
    # [x, y] pairs: even positions are x, odd are y
    shift = np.where(position % 2 == 0, offsets_xy[rows, 0], offsets_xy[rows, 1])
    values = pc.cast(coordinates, pa.float64()).to_numpy(zero_copy_only=False) - shift
    inner = pa.ListArray.from_arrays(point_offsets, pa.array(values, pa.float64()),
                                     mask=pc.invert(points.is_valid()))
    return pa.ListArray.from_arrays(_offsets(polygons), inner, mask=pc.invert(polygons.is_valid()))


def translate_oriented_boxes(boxes: pa.Array, offsets_xy: np.ndarray) -> pa.Array:
    """``list<list<float64>>`` oriented boxes (four ``[x, y]`` corners per row, supervision's
    ``data["xyxyxyxy"]``) with ``offsets_xy[i]`` subtracted from row ``i``: the crop frame, as
    ``cropcore.Detections.moved`` computes it. Corners are not clipped; null rows stay null.
    Fixed-size list inputs (what a NumPy ``(N, 4, 2)`` array becomes) are cast first."""
    boxes = boxes.combine_chunks() if isinstance(boxes, pa.ChunkedArray) else boxes
    if boxes.type != schema.ORIENTED_BOX_TYPE:
        boxes = pc.cast(boxes, schema.ORIENTED_BOX_TYPE)
    return translate_polygons(boxes, offsets_xy)
