"""Detections: validation, aligned selection, translation into and out of a crop frame."""

import numpy as np
import pytest

from cropcore import MASK_RLE, Detections, decode_rle, encode_rle


def make_detections():
    masks = np.zeros((3, 8, 10), bool)
    masks[1, 2:4, 3:6] = True
    return Detections(
        xyxy=[[0, 0, 4, 4], [3, 2, 6, 4], [5, 5, 9, 8]],
        detection_id=["a", "b", "c"],
        mask=masks,
        keypoints=np.arange(18, dtype=float).reshape(3, 3, 2),
        polygons=[[[0, 0], [1, 1]], [[3, 2], [6, 4], [3, 4]], [[5, 5]]],
        class_name=["x", "y", "z"],
        class_id=[0, 1, 2],
        confidence=[0.1, 0.2, 0.3],
        data={"track_id": np.array([10, 11, 12])},
    )


@pytest.mark.parametrize(
    ("index", "expected_ids"),
    [
        (1, ["b"]),  # one position
        (slice(1, None), ["b", "c"]),  # a slice
        ([2, 0], ["c", "a"]),  # an integer array, reordering
        (np.array([True, False, True]), ["a", "c"]),  # a boolean mask
        (np.array([False, False, False]), []),  # empty selection
    ],
)
def test_selection_keeps_fields_aligned(index, expected_ids):
    detections = make_detections()
    selected = detections[index]
    assert list(selected.detection_id) == expected_ids
    positions = [["a", "b", "c"].index(i) for i in expected_ids]
    np.testing.assert_array_equal(selected.xyxy, detections.xyxy[positions])
    np.testing.assert_array_equal(selected.mask, detections.mask[positions])
    np.testing.assert_array_equal(selected.class_id, detections.class_id[positions])
    np.testing.assert_array_equal(selected.data["track_id"], detections.data["track_id"][positions])
    assert len(selected.polygons) == len(expected_ids)


def test_empty():
    empty = Detections.empty()
    assert len(empty) == 0 and empty.xyxy.shape == (0, 4)
    assert len(Detections(xyxy=[])) == 0


def test_in_window_then_in_parent_round_trips():
    detections = make_detections()
    window = (2, 1, 8, 6)
    local = detections.in_window(window)
    np.testing.assert_array_equal(local.xyxy[1], [1, 1, 4, 3])
    assert local.mask.shape == (3, 5, 6)
    back = local.in_parent(window[:2], (10, 8))
    np.testing.assert_array_equal(back.xyxy, detections.xyxy)
    np.testing.assert_array_equal(back.keypoints, detections.keypoints)
    for p, q in zip(back.polygons, detections.polygons, strict=True):
        np.testing.assert_array_equal(p, q)
    # the part of each mask inside the window comes back; the rest was cut
    np.testing.assert_array_equal(back.mask[1], detections.mask[1])


def test_a_flat_polygon_is_paired_up():
    (polygon,) = Detections(xyxy=[[0, 0, 1, 1]], polygons=[[1, 2, 3, 4, 5, 6]]).polygons
    np.testing.assert_array_equal(polygon, [[1, 2], [3, 4], [5, 6]])


def test_rle_masks_are_cut_and_pasted_like_dense_masks():
    dense = make_detections()
    dense.mask[0, 0:5, 0:4] = True  # partly outside the window below
    dense.mask[2, 5:8, 6:10] = True
    rles = np.empty(3, dtype=object)
    rles[:] = [encode_rle(dense.mask[0]), None, encode_rle(dense.mask[2])]
    detections = Detections(xyxy=dense.xyxy, data={MASK_RLE: rles})
    window = (2, 1, 8, 6)
    local = detections.in_window(window)
    assert local.data[MASK_RLE][1] is None
    for k in (0, 2):
        assert local.data[MASK_RLE][k] == encode_rle(dense.in_window(window).mask[k])
    back = local.in_parent(window[:2], (10, 8))
    dense_back = dense.in_window(window).in_parent(window[:2], (10, 8))
    for k in (0, 2):
        np.testing.assert_array_equal(decode_rle(back.data[MASK_RLE][k]), dense_back.mask[k])
    assert detections.data[MASK_RLE][0] == encode_rle(dense.mask[0])  # the input is unchanged


def test_moved_does_not_clip_boxes():
    moved = Detections(xyxy=[[1.5, 2.5, 3.5, 4.5]]).moved((2, 3))
    np.testing.assert_array_equal(moved.xyxy, [[-0.5, -0.5, 1.5, 1.5]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"xyxy": [[1, 2, 3]]}, r"xyxy must have shape \(N, 4\), got \(1, 3\)"),
        ({"detection_id": ["a", "b"]}, r"detection_id must have shape \(1,\)"),
        ({"class_id": [1, 2]}, r"class_id must have shape \(1,\)"),
        ({"confidence": []}, r"confidence must have shape \(1,\)"),
        ({"class_name": ["a", "b"]}, r"class_name must have shape \(1,\)"),
        ({"mask": np.zeros((2, 3, 3))}, r"mask must have shape \(1, H, W\), got \(2, 3, 3\)"),
        ({"keypoints": np.zeros((1, 2, 4))}, r"keypoints must have shape \(1, K, 2\)"),
        ({"polygons": []}, "polygons must hold 1 outlines, got 0"),
        ({"data": {"t": [1, 2]}}, r"data\['t'\] must have length 1, got 2"),
        # (x, y, score) rows used to be reshaped into a different (6, 2) polygon
        ({"polygons": [np.zeros((4, 3))]},
         r"^polygons\[0\] must have shape \(P, 2\) \(x, y vertices\) or be a flat x, y list, "
         r"got shape \(4, 3\)$"),
        ({"polygons": [[1.0, 2.0, 3.0]]}, r"^polygons\[0\] must .* got shape \(3,\)$"),
        ({"polygons": [np.zeros((2, 2, 2))]}, r"^polygons\[0\] must .* got shape \(2, 2, 2\)$"),
    ],
)
def test_rejects_misaligned_fields(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Detections(**({"xyxy": [[0, 0, 1, 1]]} | kwargs))


def test_boolean_index_of_wrong_length():
    with pytest.raises(IndexError, match=r"boolean index must have shape \(3,\)"):
        make_detections()[np.array([True])]


def test_positions_and_slices_are_views_of_the_masks():
    detections = make_detections()
    assert np.shares_memory(detections[1].mask, detections.mask)
    assert np.shares_memory(detections[1:].mask, detections.mask)
    assert list(detections[-1].detection_id) == ["c"]


def test_position_out_of_range():
    with pytest.raises(IndexError, match="index 3 is out of range for 3 detections"):
        make_detections()[3]


# --- oriented boxes (data["xyxyxyxy"], as in supervision) ----------------------------------------


def make_oriented():
    # Three boxes; the second is a diamond whose corners stick out of its xyxy on no side.
    corners = np.array(
        [
            [[0, 0], [4, 0], [4, 4], [0, 4]],
            [[4.5, 2], [6, 3], [4.5, 4], [3, 3]],
            [[5, 5], [9, 5], [9, 8], [5, 8]],
        ],
        dtype=float,
    )
    return Detections(
        xyxy=[[0, 0, 4, 4], [3, 2, 6, 4], [5, 5, 9, 8]],
        detection_id=["a", "b", "c"],
        data={"xyxyxyxy": corners},
    )


def test_convention_oriented_boxes_live_in_data_like_supervision():
    detections = make_oriented()
    assert detections.xyxyxyxy is detections.data["xyxyxyxy"]
    assert detections.xyxyxyxy.shape == (3, 4, 2) and detections.xyxyxyxy.dtype == np.float64
    assert Detections(xyxy=[[0, 0, 1, 1]]).xyxyxyxy is None
    # integers and nested lists are accepted and stored as float64
    listed = Detections(xyxy=[[0, 0, 1, 1]], data={"xyxyxyxy": [[[0, 0], [1, 0], [1, 1], [0, 1]]]})
    assert listed.xyxyxyxy.dtype == np.float64


@pytest.mark.parametrize(
    ("index", "expected_ids"),
    [
        (1, ["b"]),  # one position
        (slice(0, 2), ["a", "b"]),  # a slice
        ([2, 0], ["c", "a"]),  # reordering
        (np.array([False, True, True]), ["b", "c"]),  # a boolean mask
        (np.array([False, False, False]), []),  # empty selection
    ],
)
def test_convention_oriented_boxes_stay_aligned_through_selection(index, expected_ids):
    detections = make_oriented()
    selected = detections[index]
    positions = [["a", "b", "c"].index(i) for i in expected_ids]
    assert list(selected.detection_id) == expected_ids
    assert selected.xyxyxyxy.shape == (len(expected_ids), 4, 2)
    np.testing.assert_array_equal(selected.xyxyxyxy, detections.xyxyxyxy[positions])


def test_convention_oriented_boxes_move_with_the_frame_and_are_not_clipped():
    detections = make_oriented()
    moved = detections.moved((5, 3))
    np.testing.assert_array_equal(moved.xyxyxyxy, detections.xyxyxyxy - (5, 3))
    assert moved.xyxyxyxy[0, 0].tolist() == [-5.0, -3.0]  # outside the new frame: kept
    np.testing.assert_array_equal(detections.xyxyxyxy[0, 0], [0, 0])  # the original is untouched
    local = detections.in_window((2, 1, 8, 6))
    np.testing.assert_array_equal(local.xyxyxyxy[1], [[2.5, 1], [4, 2], [2.5, 3], [1, 2]])
    back = local.in_parent((2, 1), (10, 8))
    np.testing.assert_array_equal(back.xyxyxyxy, detections.xyxyxyxy)


def test_oriented_boxes_empty():
    empty = Detections(xyxy=np.empty((0, 4)), data={"xyxyxyxy": np.empty((0, 4, 2))})
    assert len(empty) == 0 and empty.xyxyxyxy.shape == (0, 4, 2)
    assert Detections(xyxy=[], data={"xyxyxyxy": []}).xyxyxyxy.shape == (0, 4, 2)
    assert empty.moved((3, 4)).xyxyxyxy.shape == (0, 4, 2)
    assert Detections.empty().xyxyxyxy is None


@pytest.mark.parametrize(
    ("corners", "message"),
    [
        # eight numbers flat, as a YOLO-OBB line holds them, must be reshaped by the caller
        ([[0, 0, 1, 0, 1, 1, 0, 1]], r"must have shape \(1, 4, 2\), got \(1, 8\)"),
        ([[[0, 0], [1, 0], [1, 1]]], r"must have shape \(1, 4, 2\), got \(1, 3, 2\)"),  # 3 corners
        (np.zeros((2, 4, 2)), r"must have shape \(1, 4, 2\), got \(2, 4, 2\)"),  # misaligned
        ([], r"must have shape \(1, 4, 2\), got \(0,\)"),  # none for one box
        ([[["a", 0], [1, 0], [1, 1], [0, 1]]], r"must be numbers of shape \(1, 4, 2\), got list"),
    ],
)
def test_oriented_box_errors(corners, message):
    with pytest.raises(ValueError, match=r"data\['xyxyxyxy'\] \(oriented boxes\) " + message):
        Detections(xyxy=[[0, 0, 1, 1]], data={"xyxyxyxy": corners})


def test_data_scalar_is_rejected():
    with pytest.raises(ValueError, match=r"data\['t'\] must have length 1, got a scalar"):
        Detections(xyxy=[[0, 0, 1, 1]], data={"t": 3})
