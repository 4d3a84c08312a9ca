"""Crop: geometry properties and nested crops mapped back to the root image."""

import numpy as np

from cropcore import Crop, Detections, absolute_static_crop, dynamic_crop


def test_crop_geometry():
    crop = Crop(np.zeros((3, 4)), (5, 6, 9, 9), (20, 10))
    assert crop.offset == (5, 6)
    assert crop.size == (4, 3)
    assert crop.root_offset == (5, 6) and crop.root_size == (20, 10)
    assert crop.root_window == (5, 6, 9, 9)


def test_nested_crop_offsets_add_up_and_map_back_to_root():
    root = np.zeros((100, 120, 3), np.uint8)
    mask = np.zeros((1, 100, 120), bool)
    mask[0, 40:45, 50:60] = True
    parent = absolute_static_crop(root, 60, 50, 60, 40)  # window (30, 30, 90, 70)
    assert parent.window == (30, 30, 90, 70)
    in_parent = Detections(
        xyxy=[[18.5, 9.5, 30.5, 16.5]],
        detection_id=["d"],
        mask=mask[:, 30:70, 30:90],
        keypoints=[[[20.0, 12.0]]],
        data={"xyxyxyxy": [[[24.5, 9.5], [30.5, 13.0], [24.5, 16.5], [18.5, 13.0]]]},
    )
    (child,) = dynamic_crop(parent.image, in_parent)
    child = child.nested_in(parent)
    assert child.offset == (18, 10)
    assert child.root_offset == (48, 40)
    assert child.root_window == (48, 40, 60, 46)
    assert child.root_size == (120, 100)
    root_detections = child.detections_in_root()
    np.testing.assert_allclose(root_detections.xyxy, [[48.5, 39.5, 60.5, 46.5]])
    np.testing.assert_allclose(root_detections.keypoints, [[[50.0, 42.0]]])
    # oriented boxes go child frame -> root, exactly as they came root -> parent -> child
    np.testing.assert_array_equal(
        child.detections.xyxyxyxy, [[[6.5, -0.5], [12.5, 3.0], [6.5, 6.5], [0.5, 3.0]]]
    )
    np.testing.assert_array_equal(
        root_detections.xyxyxyxy, [[[54.5, 39.5], [60.5, 43.0], [54.5, 46.5], [48.5, 43.0]]]
    )
    assert root_detections.mask.shape == (1, 100, 120)
    np.testing.assert_array_equal(root_detections.mask, mask)


def test_static_crop_has_no_detections_to_map():
    crop = absolute_static_crop(np.zeros((10, 10)), 5, 5, 4, 4)
    assert crop.detections is None and crop.detections_in_root() is None
