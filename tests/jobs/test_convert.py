"""jobs/convert.py without Ray: Arrow columns to arrays and back, each translated value checked
against the input minus its row's offset, computed here by hand."""

import numpy as np
import pyarrow as pa
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
