"""jobs/convert.py without Ray: Arrow columns to arrays and back, each translated value checked
against the input minus its row's offset, computed here by hand."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from jobs import convert, schema

KEYPOINTS = schema.KEYPOINTS_TYPE
POLYGON = schema.POLYGON_TYPE


def test_boxes_xyxy_takes_the_four_columns_in_order_and_nulls_become_nan():
    table = pa.table({
        "x_max": pa.array([3.5, 30.0], pa.float64()),
        "x_min": pa.array([1, None], pa.int64()),  # integer columns are accepted
        "y_min": pa.array([2.25, 20.0], pa.float64()),
        "y_max": pa.array([4.0, 40.0], pa.float32()),
    })
    boxes = convert.boxes_xyxy(table)
    assert boxes.dtype == np.float64 and boxes.shape == (2, 4)
    np.testing.assert_array_equal(boxes[0], [1.0, 2.25, 3.5, 4.0])
    assert np.isnan(boxes[1, 0]) and boxes[1, 1:].tolist() == [20.0, 30.0, 40.0]


def test_boxes_xyxy_of_no_rows_is_0_by_4():
    table = pa.table({c: pa.array([], pa.float64()) for c in schema.BOX_COLUMNS})
    assert convert.boxes_xyxy(table).shape == (0, 4)


def test_flatten_nested_detections_numbers_each_detection_with_its_image_row():
    struct = pa.struct([("detection_id", pa.string()), ("x_min", pa.float64())])
    images = pa.table({"detections": pa.array(
        [[{"detection_id": "a", "x_min": 1.0}, {"detection_id": "b", "x_min": 2.0}], [], None,
         [{"detection_id": "c", "x_min": 3.0}]], pa.list_(struct))})
    flat = convert.flatten_nested_detections(images)
    assert flat.column_names == ["detection_id", "x_min", "__row"]
    assert flat["detection_id"].to_pylist() == ["a", "b", "c"]
    assert flat["x_min"].to_pylist() == [1.0, 2.0, 3.0]
    assert flat["__row"].to_pylist() == [0, 0, 3]
    assert flat.schema.field("__row").type == pa.int64()


def test_flatten_nested_detections_of_images_without_detections_keeps_the_fields():
    struct = pa.struct([("detection_id", pa.string()), ("x_min", pa.float64())])
    flat = convert.flatten_nested_detections(
        pa.table({"detections": pa.array([[], None], pa.list_(struct))}))
    assert flat.num_rows == 0
    assert flat.schema.field("detection_id").type == pa.string()
    assert flat.schema.field("x_min").type == pa.float64()
    assert flat.column_names == ["detection_id", "x_min", "__row"]


def keypoint(x, y, c=0.5):
    return {"x": x, "y": y, "confidence": c}


def test_translate_keypoints_moves_x_and_y_by_their_own_rows_offset():
    keypoints = pa.array([[keypoint(10.5, 20.25, 0.9), keypoint(1.0, 2.0, 0.1)], None, [],
                          [keypoint(7.0, 9.0)]], KEYPOINTS)
    offsets = np.array([[3, 5], [100, 100], [100, 100], [2, 8]], dtype=np.int64)
    moved = convert.translate_keypoints(keypoints, offsets).to_pylist()
    assert moved == [
        [keypoint(7.5, 15.25, 0.9), keypoint(-2.0, -3.0, 0.1)],  # negative values are kept
        None,
        [],
        [keypoint(5.0, 1.0)],
    ]


def test_translate_keypoints_keeps_null_points_and_takes_sliced_chunked_input():
    keypoints = pa.array([[keypoint(0.0, 0.0)], [keypoint(4.0, 6.0), None, keypoint(8.0, 9.0)]],
                         KEYPOINTS)
    sliced = pa.chunked_array([keypoints.slice(1, 1)])  # offsets that do not start at 0
    moved = convert.translate_keypoints(sliced, np.array([[1, 2]]))
    assert moved.to_pylist() == [[keypoint(3.0, 4.0), None, keypoint(7.0, 7.0)]]
    assert moved.type.value_type.field("x").type == pa.float64()


def test_translate_polygons_moves_even_positions_by_x_and_odd_by_y():
    polygons = pa.array([[[10.0, 20.0], [30.5, 40.5], [50.0, 60.0]], None, [[1.0, 1.0]]], POLYGON)
    offsets = np.array([[3, 7], [0, 0], [10, 20]], dtype=np.int64)
    moved = convert.translate_polygons(polygons, offsets).to_pylist()
    assert moved == [[[7.0, 13.0], [27.5, 33.5], [47.0, 53.0]], None, [[-9.0, -19.0]]]


def test_translate_polygons_keeps_null_points_and_takes_sliced_chunked_input():
    polygons = pa.array([[[0.0, 0.0]], [[5.0, 6.0], None, [7.0, 8.0]], [[9.0, 9.0]]], POLYGON)
    sliced = pa.chunked_array([polygons.slice(1, 2)])
    moved = convert.translate_polygons(sliced, np.array([[1, 2], [4, 4]]))
    assert moved.to_pylist() == [[[4.0, 4.0], None, [6.0, 6.0]], [[5.0, 5.0]]]


@pytest.mark.parametrize("translate", [convert.translate_keypoints, convert.translate_polygons])
def test_translations_of_no_rows_are_empty(translate):
    kind = KEYPOINTS if translate is convert.translate_keypoints else POLYGON
    moved = translate(pa.array([], kind), np.zeros((0, 2), np.int64))
    assert len(moved) == 0


# --- Arrow <-> cropcore.Detections ---------------------------------------------------------------


def _detections(**columns) -> pa.Table:
    base = {"detection_id": ["a", "b", None], "x_min": [1.0, None, 3.0], "y_min": [2.0, 2.0, 3.0],
            "x_max": [5.0, 6.0, 9.0], "y_max": [7.0, 8.0, 9.0]}
    return pa.table({**base, **columns})


def test_detections_from_arrow_keeps_rows_aligned_and_nulls_as_nan_and_none():
    rle = {"size": [10, 10], "counts": "0T2"}
    table = _detections(
        class_name=["x", None, "z"], confidence=[0.5, None, 1.0],
        mask=pa.array([rle, None, None], schema.RLE_TYPE),
        polygon_style=["coco", None, "roboflow"],
    )
    detections = convert.detections_from_arrow(table)
    np.testing.assert_array_equal(detections.xyxy, [[1, 2, 5, 7], [np.nan, 2, 6, 8],
                                                    [3, 3, 9, 9]])
    assert detections.detection_id.tolist() == ["a", "b", None]
    assert detections.class_name.tolist() == ["x", None, "z"]
    assert detections.data["mask_rle"].tolist() == [rle, None, None]
    assert detections.data["polygon_style"].tolist() == ["coco", None, "roboflow"]
    assert detections.polygons is None  # only converted when asked for


def test_detections_from_arrow_skips_an_all_null_mask_column():
    table = _detections(mask=pa.nulls(3, schema.RLE_TYPE))
    assert "mask_rle" not in convert.detections_from_arrow(table).data


def test_polygons_from_arrow_gives_p_by_2_arrays_null_as_empty_and_bad_points_as_nan():
    polygons = pa.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], None, [[1.0, 2.0], [7.0], None]],
                        POLYGON)
    out = convert.polygons_from_arrow(polygons.slice(0))
    np.testing.assert_array_equal(out[0], [[1, 2], [3, 4], [5, 6]])
    assert out[1].shape == (0, 2)
    np.testing.assert_array_equal(out[2], [[1, 2], [np.nan, np.nan], [np.nan, np.nan]])
    assert convert.polygons_from_arrow(pa.array([], POLYGON)) == []


def test_detections_from_arrow_with_polygons_takes_a_sliced_table():
    table = _detections(polygon=pa.array([None, [[0.0, 0.0], [4.0, 0.0], [4.0, 4.0]], None],
                                         POLYGON)).slice(1, 2)
    detections = convert.detections_from_arrow(table, polygons=True)
    assert len(detections) == 2 and [len(p) for p in detections.polygons] == [3, 0]


def test_predictions_in_crops_moves_every_geometry_by_its_crops_origin_and_passes_the_rest():
    table = _detections(
        class_name=["x", "y", "z"], class_id=[1, 2, 3], iscrowd=[True, None, False],
        keypoints=pa.array([[{"x": 10.0, "y": 20.0, "confidence": 0.5}], None, []], KEYPOINTS),
        polygon=pa.array([[[1.0, 2.0]], None, [[3.0, 4.0]]], POLYGON),
        xyxyxyxy=pa.array([[[1.0, 1.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0]], None, None],
                          schema.ORIENTED_BOX_TYPE),
    )
    offsets = np.array([[3.0, 1.0], [1.0, 2.0]])
    out = convert.predictions_in_crops(table, np.array([2, 0]), offsets).to_pylist()
    assert [(r["x_min"], r["y_min"], r["x_max"], r["y_max"]) for r in out] == [
        (0.0, 2.0, 6.0, 8.0), (0.0, 0.0, 4.0, 5.0)]
    assert [r["class_name"] for r in out] == ["z", "x"]
    assert [r["iscrowd"] for r in out] == [False, True]
    assert out[1]["keypoints"] == [{"x": 9.0, "y": 18.0, "confidence": 0.5}]
    assert [r["polygon"] for r in out] == [[[0.0, 3.0]], [[0.0, 0.0]]]
    assert out[1]["xyxyxyxy"] == [[0.0, -1.0], [1.0, -1.0], [1.0, 0.0], [0.0, 0.0]]
    assert out[0]["xyxyxyxy"] is None


def test_predictions_in_crops_of_no_crops_has_the_columns_and_no_rows():
    out = convert.predictions_in_crops(_detections(), np.array([], np.int64), np.zeros((0, 2)))
    assert out.num_rows == 0 and out.column_names == list(schema.BOX_COLUMNS)


def test_translate_oriented_boxes_moves_every_corner_and_keeps_nulls():
    corners = [[10.0, 20.0], [30.0, 20.0], [30.0, 40.0], [10.0, 40.0]]
    boxes = pa.array([corners, None, corners], schema.ORIENTED_BOX_TYPE)
    offsets = np.array([[10, 20], [5, 5], [-1, 2]], dtype=np.int64)
    moved = convert.translate_oriented_boxes(pa.chunked_array([boxes]), offsets)
    assert moved.type == schema.ORIENTED_BOX_TYPE
    assert moved.to_pylist() == [
        [[0.0, 0.0], [20.0, 0.0], [20.0, 20.0], [0.0, 20.0]],
        None,
        [[11.0, 18.0], [31.0, 18.0], [31.0, 38.0], [11.0, 38.0]],  # not clipped
    ]


def test_translate_oriented_boxes_casts_fixed_size_lists_first():
    # what a NumPy (N, 4, 2) array becomes in Arrow
    fixed = pa.array([[[1.0, 2.0], [3.0, 2.0], [3.0, 4.0], [1.0, 4.0]]],
                     pa.list_(pa.list_(pa.float64(), 2), 4))
    moved = convert.translate_oriented_boxes(fixed, np.array([[1, 2]]))
    assert moved.type == schema.ORIENTED_BOX_TYPE
    assert moved.to_pylist() == [[[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0]]]


def null_backed(values: list, inner: pa.DataType, size: int) -> pa.Array:
    """``values`` as fixed-size lists cast to variable-size ones: each null entry still spans
    ``size`` slots of the child array (flatten() skips them, the raw offsets count them)."""
    cast = pc.cast(pa.array(values, pa.list_(inner, size)), pa.list_(inner))
    assert cast.null_count and cast.offsets.to_pylist()[-1] == size * len(values)
    return cast


def test_translate_polygons_moves_each_point_by_its_own_positions():
    # a point of three numbers (malformed) must not shift the x/y parity of the points after it
    polygons = pa.array([[[1.0, 2.0, 3.0], [10.0, 20.0]]], pa.list_(pa.list_(pa.float64())))
    assert convert.translate_polygons(polygons, np.array([[1, 1]])).to_pylist() == [
        [[0.0, 1.0, 2.0], [9.0, 19.0]]]
    polygons = pa.array([[[1.0, 2.0, 3.0], [10.0, 20.0]]], pa.list_(pa.list_(pa.float64())))
    assert convert.translate_polygons(polygons, np.array([[1, 2]])).to_pylist() == [
        [[0.0, 0.0, 2.0], [9.0, 18.0]]]


def test_translations_skip_the_slots_behind_null_entries():
    # A null row used to shift (or fail on) every row after it: ArrowInvalid in the job.
    corners = [[1.0, 2.0], [3.0, 2.0], [3.0, 4.0], [1.0, 4.0]]
    boxes = pc.cast(pa.array([None, corners, None, corners],
                             pa.list_(pa.list_(pa.float64(), 2), 4)), schema.ORIENTED_BOX_TYPE)
    moved = convert.translate_oriented_boxes(boxes, np.array([[9, 9], [1, 2], [9, 9], [0, 1]]))
    assert moved.to_pylist() == [None, [[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0]], None,
                                 [[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0]]]
    # a column that holds no box at all can reach here as Arrow's null type
    assert convert.translate_oriented_boxes(pa.nulls(2), np.zeros((2, 2))).to_pylist() == [
        None, None]
    fixed = pa.array([None, corners, None, corners], pa.list_(pa.list_(pa.float32(), 2), 4))
    assert convert.translate_oriented_boxes(fixed, np.array([[9, 9], [1, 2], [9, 9], [0, 1]])) \
        .to_pylist() == moved.to_pylist()
    polygons = null_backed([None, [[1.0, 1.0]] * 3, [[2.0, 2.0]] * 3], pa.list_(pa.float64()), 3)
    assert convert.translate_polygons(polygons, np.array([[5, 5], [1, 0], [0, 1]])).to_pylist() \
        == [None, [[0.0, 1.0]] * 3, [[2.0, 1.0]] * 3]
    assert [p.tolist() for p in convert.polygons_from_arrow(polygons)] == [
        [], [[1.0, 1.0]] * 3, [[2.0, 2.0]] * 3]
    point = pa.struct([("x", pa.float64()), ("y", pa.float64())])
    keypoints = null_backed([None, [{"x": 1.0, "y": 1.0}]], point, 1)
    assert convert.translate_keypoints(keypoints, np.array([[5, 5], [1, 1]])).to_pylist() == [
        None, [{"x": 0.0, "y": 0.0}]]
    nested = null_backed([None, [{"detection_id": "a"}]],
                         pa.struct([("detection_id", pa.string())]), 1)
    flat = convert.flatten_nested_detections(pa.table({"detections": nested}))
    assert flat.to_pylist() == [{"detection_id": "a", "__row": 1}]


def test_translate_polygons_turns_a_null_coordinate_into_nan_instead_of_failing():
    polygons = pa.array([[[1.0, None], [4.0, 6.0]]], POLYGON)
    (moved,) = convert.translate_polygons(polygons, np.array([[1, 2]])).to_pylist()
    assert moved[0][0] == 0.0 and np.isnan(moved[0][1]) and moved[1] == [3.0, 4.0]


def test_polygons_from_arrow_of_well_formed_points_keeps_every_vertex():
    # Two rows of complete [x, y] points, sliced: each row's own vertices, in order.
    polygons = pa.array([[[9.0, 9.0]], [[0.0, 0.0], [4.0, 0.0], [4.0, 4.0]], [[1.5, 2.5]]],
                        POLYGON).slice(1, 2)
    out = convert.polygons_from_arrow(polygons)
    assert [p.shape for p in out] == [(3, 2), (1, 2)]
    np.testing.assert_array_equal(out[0], [[0, 0], [4, 0], [4, 4]])
    np.testing.assert_array_equal(out[1], [[1.5, 2.5]])


def test_polygons_from_arrow_turns_points_of_the_wrong_length_into_nan_without_nulls():
    # No null anywhere: points of three numbers only, then mixed with points of one and two.
    (three,) = convert.polygons_from_arrow(pa.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]],
                                                    POLYGON))
    assert np.isnan(three).all() and three.shape == (2, 2)
    (mixed,) = convert.polygons_from_arrow(pa.array([[[1.0, 2.0], [7.0], [8.0, 9.0]]], POLYGON))
    np.testing.assert_array_equal(mixed, [[1, 2], [np.nan, np.nan], [8, 9]])


def test_polygons_from_arrow_turns_a_point_with_a_null_coordinate_into_nan_whatever_its_rows():
    # [x, null] is not two numbers: [nan, nan], alone or next to a row with a null point.
    row = [[1.0, None], [4.0, 6.0], [5.0, 5.0]]
    expected = [[np.nan, np.nan], [4, 6], [5, 5]]
    (alone,) = convert.polygons_from_arrow(pa.array([row], POLYGON))
    np.testing.assert_array_equal(alone, expected)
    together = convert.polygons_from_arrow(pa.array([row, [[1.0, 2.0], None]], POLYGON))
    np.testing.assert_array_equal(together[0], expected)


def test_detections_from_arrow_converts_polygons_only_when_asked():
    table = _detections(mask=pa.nulls(3, schema.RLE_TYPE),
                        polygon=pa.array([[[0.0, 0.0], [4.0, 0.0], [4.0, 4.0]], None, None],
                                         POLYGON))
    assert convert.detections_from_arrow(table).polygons is None
    asked = convert.detections_from_arrow(table, polygons=True).polygons
    np.testing.assert_array_equal(asked[0], [[0, 0], [4, 0], [4, 4]])


def test_detections_from_arrow_converts_polygons_when_a_single_row_lacks_a_mask():
    rle = {"size": [10, 10], "counts": "0T2"}
    polygon = pa.array([None, None, [[0.0, 0.0], [4.0, 0.0], [4.0, 4.0]]], POLYGON)
    one_missing = _detections(mask=pa.array([rle, rle, None], schema.RLE_TYPE), polygon=polygon)
    polygons = convert.detections_from_arrow(one_missing, polygons=True).polygons
    assert [len(p) for p in polygons] == [0, 0, 3]
    # every row has a mask: no polygon can stand in for one, so none is converted
    all_masked = _detections(mask=pa.array([rle, rle, rle], schema.RLE_TYPE), polygon=polygon)
    assert convert.detections_from_arrow(all_masked, polygons=True).polygons is None


def test_detections_from_arrow_asked_for_polygons_without_a_polygon_column():
    detections = convert.detections_from_arrow(_detections(), polygons=True)
    assert detections.polygons is None and len(detections) == 3


def test_detections_from_arrow_carries_confidence_with_nulls_as_nan():
    table = _detections(confidence=pa.array([0.25, None, 1.0], pa.float64()))
    confidence = convert.detections_from_arrow(table).confidence
    assert confidence[0] == 0.25 and np.isnan(confidence[1]) and confidence[2] == 1.0


def test_predictions_in_crops_takes_positions_as_a_python_list():
    table = _detections(class_name=["x", "y", "z"])
    out = convert.predictions_in_crops(table, [2, 0], np.array([[1.0, 2.0], [0.0, 1.0]]))
    assert out.to_pylist() == [
        {"x_min": 2.0, "y_min": 1.0, "x_max": 8.0, "y_max": 7.0, "class_name": "z"},
        {"x_min": 1.0, "y_min": 1.0, "x_max": 5.0, "y_max": 6.0, "class_name": "x"},
    ]
    empty = convert.predictions_in_crops(table, [], np.zeros((0, 2)))
    assert empty.num_rows == 0 and empty.column_names == [*schema.BOX_COLUMNS, "class_name"]


@pytest.mark.parametrize("rows", [
    [[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], None],  # well-formed points
    [[[1.0, 2.0], [3.0], [5.0, 6.0]], None],  # a malformed point
    [None, []],  # no point at all
])
def test_polygons_from_arrow_gives_read_only_arrays_whatever_the_points(rows):
    # Writability must not depend on whether some other point in the shard is malformed.
    out = convert.polygons_from_arrow(pa.array(rows, POLYGON))
    assert [p.flags.writeable for p in out] == [False, False]


def test_malformed_oriented_boxes_are_those_cropcore_refuses():
    rows = [None, [[0, 0], [1, 0], [1, 1], [0, 1]],  # null, and four corners: fine
            [[0, 0], [1, 0], [1, 1]],  # three corners
            [[0, 0], [1, 0], [1, 1], [0, None]], [[0, 0], [1, 0], [1, 1], None],  # nulls
            [[0, 0], [1, 0], [1, 1], [0, 1, 2]],  # a corner of three numbers
            [[0, 0], [1, 0], [1, 1], [0, float("nan")]], [[0, 0], [1, 0], [1, 1], [0, 1e400]],
            []]
    table = pa.table({schema.ORIENTED_BOX: pa.array(rows, schema.ORIENTED_BOX_TYPE)})
    bad = convert.malformed_oriented_boxes(table)
    assert bad.tolist() == [False, False, True, True, True, True, True, True, True]
    from cropcore import Detections

    for row, refused in zip(rows, bad, strict=True):  # the kernel's own check agrees
        if row is None:
            continue
        try:
            corners = np.array(row, dtype=np.float64)
            Detections(xyxy=[[0, 0, 1, 1]], data={"xyxyxyxy": corners[None]})
            accepted = bool(np.isfinite(corners).all())
        except (ValueError, TypeError):
            accepted = False
        assert accepted != refused, row
    # NumPy (N, 4, 2) arrays reach Arrow as fixed-size lists; behind a null row or corner the
    # slots are still there (they used to shift every row after them, or raise IndexError)
    fixed_type = pa.list_(pa.list_(pa.float64(), 2), 4)
    fixed = pa.table({schema.ORIENTED_BOX: pa.array(
        [None, [[0.0, 0.0]] * 4, [[0.0, 0.0]] * 3 + [None], [[0.0, float("nan")]] * 4,
         [[0.0, 0.0]] * 3 + [[1.0, None]], [[1.0, 2.0]] * 4], fixed_type)})
    assert convert.malformed_oriented_boxes(fixed).tolist() == [False, False, True, True, True,
                                                                False]
    assert convert.malformed_oriented_boxes(fixed.slice(2)).tolist() == [True, True, True, False]
    absent = convert.malformed_oriented_boxes(pa.table({"x": [1, 2]}))
    assert absent.dtype == bool and absent.tolist() == [False, False]  # & with a bool mask
    assert bad.dtype == bool
    # a chunk is a slice of its unit's detections: rows count from the slice's start
    assert convert.malformed_oriented_boxes(table.slice(1, 4)).tolist() == bad[1:5].tolist()
