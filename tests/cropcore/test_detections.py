"""Detections: validation, aligned selection, translation into and out of a crop frame."""

import numpy as np
import pytest

from cropcore import Detections


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
