"""Between Arrow and cropcore's ``Detections``/``CropBatch``: the job's only translation layer.

Arrow in: ``detections_from_arrow`` (one image's rows as ``Detections``). Arrow out:
``predictions_in_crops`` (the emitted detections' predictions in their crops' frames, a whole
shard at once). The geometry itself (what "into the crop frame" means) is cropcore's
``to_crop_frame``; here are only the Arrow buffers around it. Nothing loops per pixel.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cropcore import MASK_RLE, POLYGON_STYLE, Detections, to_crop_frame
from jobs import schema

__all__ = [
    "PASSED_THROUGH",
    "boxes_xyxy",
    "detections_from_arrow",
    "flatten_nested_detections",
    "polygons_from_arrow",
    "predictions_in_crops",
    "translate_keypoints",
    "translate_oriented_boxes",
    "translate_polygons",
]

#: Detection columns a crop carries unchanged from its detection (no geometry).
PASSED_THROUGH = ("class_name", "class_id", "confidence", "iscrowd")


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
    flat, rows, _ = list_parts(images.column("detections").combine_chunks())
    return pa.Table.from_struct_array(flat).append_column("__row", pa.array(rows))


def list_parts(lists: pa.Array) -> tuple[pa.Array, np.ndarray, pa.Array]:
    """A list array's values as ``flatten()`` gives them, each value's row, and offsets from 0
    that match them. A null entry holds no values here, even where Arrow keeps slots behind it
    (a null cast from a fixed-size list keeps them: ``flatten()`` skips them, while the raw
    offsets and ``list_parent_indices`` count them)."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    rows = np.repeat(np.arange(len(lists), dtype=np.int64), lengths)
    return lists.flatten(), rows, pa.array(offsets, pa.int32())


def _shift_list_values(values: pa.Array, offsets: np.ndarray, parents: np.ndarray,
                       axis: int) -> pa.Array:
    data = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    return pa.array(to_crop_frame(data, parents, axis, offsets), pa.float64())


def translate_keypoints(keypoints: pa.Array, offsets_xy: np.ndarray) -> pa.Array:
    """``list<struct<x, y, confidence>>`` with ``offsets_xy[i]`` subtracted from row ``i``."""
    keypoints = keypoints.combine_chunks() if isinstance(keypoints, pa.ChunkedArray) else keypoints
    points, parents, offsets = list_parts(keypoints)
    names = [points.type.field(i).name for i in range(points.type.num_fields)]
    children = []
    for name, child in zip(names, points.flatten(), strict=True):  # struct fields
        if name in ("x", "y"):
            child = _shift_list_values(child, offsets_xy, parents, "xy".index(name))
        children.append(child)
    moved = pa.StructArray.from_arrays(children, names=names, mask=pc.invert(points.is_valid()))
    valid = pc.invert(keypoints.is_valid())
    return pa.ListArray.from_arrays(offsets, moved, mask=valid)


def translate_polygons(polygons: pa.Array, offsets_xy: np.ndarray) -> pa.Array:
    """``list<list<float64>>`` of ``[x, y]`` points with ``offsets_xy[i]`` subtracted from row i."""
    polygons = polygons.combine_chunks() if isinstance(polygons, pa.ChunkedArray) else polygons
    points, point_parents, offsets = list_parts(polygons)
    coordinates, coordinate_parents, point_offsets = list_parts(points)
    starts = point_offsets.to_numpy()
    position = np.arange(len(coordinates)) - np.repeat(starts[:-1], np.diff(starts))
    rows = point_parents[coordinate_parents]
    # [x, y] pairs: even positions are x, odd are y
    values = to_crop_frame(pc.cast(coordinates, pa.float64()).to_numpy(zero_copy_only=False),
                           rows, position % 2, offsets_xy)
    inner = pa.ListArray.from_arrays(point_offsets, pa.array(values, pa.float64()),
                                     mask=pc.invert(points.is_valid()))
    return pa.ListArray.from_arrays(offsets, inner, mask=pc.invert(polygons.is_valid()))


def translate_oriented_boxes(boxes: pa.Array, offsets_xy: np.ndarray) -> pa.Array:
    """``list<list<float64>>`` oriented boxes (four ``[x, y]`` corners per row, supervision's
    ``data["xyxyxyxy"]``) with ``offsets_xy[i]`` subtracted from row ``i``: the crop frame, as
    ``cropcore.Detections.moved`` computes it. Corners are not clipped; null rows stay null.
    Other types are cast first: fixed-size lists (what a NumPy ``(N, 4, 2)`` array becomes),
    and the null type of a column that holds no box at all."""
    boxes = boxes.combine_chunks() if isinstance(boxes, pa.ChunkedArray) else boxes
    if boxes.type != schema.ORIENTED_BOX_TYPE:
        boxes = pc.cast(boxes, schema.ORIENTED_BOX_TYPE)
    return translate_polygons(boxes, offsets_xy)


def malformed_oriented_boxes(detections: pa.Table) -> np.ndarray:
    """ndarray[N] bool: rows whose ``xyxyxyxy`` is not null and not four ``[x, y]`` corners of
    finite numbers (what ``cropcore.Detections`` accepts as an oriented box)."""
    if schema.ORIENTED_BOX not in detections.column_names:
        return np.zeros(detections.num_rows, dtype=bool)
    boxes = pc.cast(detections.column(schema.ORIENTED_BOX).combine_chunks(),
                    schema.ORIENTED_BOX_TYPE)
    # Lengths and values of null entries come out as NaN, which no check below accepts.
    bad = (boxes.is_valid().to_numpy(zero_copy_only=False)
           & (pc.list_value_length(boxes).to_numpy(zero_copy_only=False) != 4))
    corners, rows, _ = list_parts(boxes)  # the corners of the non-null rows, and their rows
    bad_corner = (~corners.is_valid().to_numpy(zero_copy_only=False)
                  | (pc.list_value_length(corners).to_numpy(zero_copy_only=False) != 2))
    values, corner_of_value, _ = list_parts(corners)
    bad_corner[corner_of_value[~np.isfinite(values.to_numpy(zero_copy_only=False))]] = True
    bad[rows[bad_corner]] = True
    return bad


def polygons_from_arrow(polygons: pa.Array) -> list[np.ndarray]:
    """``list<list<float64>>`` polygons as one ``(P_i, 2)`` float64 array per row.

    A null polygon is ``(0, 2)``; a null or malformed point (not two numbers) becomes
    ``[nan, nan]``, which makes the polygon unusable (``invalid_mask`` where it is needed).
    The arrays are read-only (views of one buffer, shared with Arrow when no point is malformed).
    """
    polygons = polygons.combine_chunks() if isinstance(polygons, pa.ChunkedArray) else polygons
    points, _, starts = list_parts(polygons)
    starts = starts.to_numpy()
    coordinates = points.flatten()
    lengths = pc.list_value_length(points).to_numpy(zero_copy_only=False)
    # A null coordinate makes its point malformed too: [x, null] becomes [nan, nan], whatever
    # the other rows hold (the fast path below would keep x).
    if len(points) and (points.null_count or coordinates.null_count
                        or not np.all(lengths == 2)):
        xy = np.array([p if p is not None and len(p) == 2 and None not in p else [np.nan] * 2
                       for p in points.to_pylist()], dtype=np.float64).reshape(-1, 2)
        xy.flags.writeable = False  # read-only like the fast path's view of the Arrow buffer
    else:
        xy = pc.cast(coordinates, pa.float64()).to_numpy(zero_copy_only=False).reshape(-1, 2)
    return np.split(xy, starts[1:-1]) if len(polygons) else []


def detections_from_arrow(detections: pa.Table, *, polygons: bool = False) -> Detections:
    """One image's detection rows (the job's detections schema) as a ``cropcore.Detections``.

    Args:
        detections: rows with ``detection_id`` and the box columns; optional ``mask`` (COCO
            RLE), ``polygon``, ``polygon_style``, ``class_name``, ``confidence``.
        polygons: also convert ``polygon`` (needed only when polygons may stand in for masks);
            skipped when every row has a mask, since no polygon can be used then.

    Returns:
        ``Detections`` with ``xyxy`` (NaN for null coordinates), ``detection_id`` (object, None
        for null), ``class_name`` and ``confidence`` when present, RLE masks in
        ``data[MASK_RLE]`` (decoded later, only inside each window), ``polygons`` when asked and
        ``data[POLYGON_STYLE]`` when the table has that column.
    """
    names = detections.column_names
    n = detections.num_rows
    data = {}
    mask_nulls = detections.column("mask").null_count if "mask" in names else n
    polygons = polygons and mask_nulls > 0
    if mask_nulls < n:
        rle = np.empty(n, dtype=object)
        rle[:] = detections.column("mask").to_pylist()
        data[MASK_RLE] = rle
    if POLYGON_STYLE in names:
        data[POLYGON_STYLE] = detections.column(POLYGON_STYLE).to_numpy(zero_copy_only=False)
    values = {}
    for name in ("class_name", "confidence"):
        if name in names:
            values[name] = detections.column(name).to_numpy(zero_copy_only=False)
    return Detections(
        xyxy=boxes_xyxy(detections),
        detection_id=detections.column(schema.DETECTION_ID).to_numpy(zero_copy_only=False),
        polygons=(polygons_from_arrow(detections.column("polygon"))
                  if polygons and "polygon" in names else None),
        data=data,
        **values,
    )


def predictions_in_crops(detections: pa.Table, positions: np.ndarray,
                         offsets_xy: np.ndarray) -> pa.Table:
    """The predictions of ``detections.take(positions)``, each moved into its crop's frame.

    Args:
        detections: a shard's detections (job schema).
        positions (ndarray[M] int): the rows that became crops, in crop order.
        offsets_xy (ndarray[M, 2] float): each crop's window origin in its image.

    Returns:
        A table of M rows: the box columns, ``keypoints``, ``polygon`` and ``xyxyxyxy`` in the
        crop frame (``cropcore.to_crop_frame``: translated, not clipped), and the
        ``PASSED_THROUGH`` columns present in ``detections``, unchanged.
    """
    part = detections.take(pa.array(np.asarray(positions, dtype=np.int64)))
    m = part.num_rows
    boxes = to_crop_frame(boxes_xyxy(part).ravel(), np.repeat(np.arange(m), 4),
                          np.tile([0, 1, 0, 1], m), offsets_xy).reshape(-1, 4)
    columns = {name: pa.array(boxes[:, k]) for k, name in enumerate(schema.BOX_COLUMNS)}
    for name in PASSED_THROUGH:
        if name in part.column_names:
            columns[name] = part.column(name).combine_chunks()
    if "keypoints" in part.column_names:
        columns["keypoints"] = translate_keypoints(part.column("keypoints"), offsets_xy)
    if "polygon" in part.column_names:
        columns["polygon"] = translate_polygons(part.column("polygon"), offsets_xy)
    if schema.ORIENTED_BOX in part.column_names:
        columns[schema.ORIENTED_BOX] = translate_oriented_boxes(part.column(schema.ORIENTED_BOX),
                                                                offsets_xy)
    return pa.table(columns)
