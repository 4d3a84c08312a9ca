"""Named tests for the conventions of docs/crop-semantics.md that had none: clamping, the
addWeighted blend, prediction translation, TensorFlow's one-ulp quirk, overflowing box
arithmetic, and sizes as ``(width, height)``. The job's pixel -> normalized mapping is in
tests/jobs/test_conventions.py. Expected values are written out or computed here, never by the
kernel under test."""

import cv2
import numpy as np
import pytest

from cropcore import Crop, Detections, absolute_static_crop, crop_and_resize, dynamic_crop
from cropcore.dynamic import remove_background
from cropcore.windows import windows_from_xyxy


def test_convention_windows_are_clamped_to_the_image():
    # every side of a 10 x 8 (W x H) image, and a box wider than the image with a negative origin
    boxes = [[-3, -2, 4, 5], [6, 5, 13, 11], [-20, 2, 30, 4], [-9, -9, -1, -1]]
    np.testing.assert_array_equal(windows_from_xyxy(boxes, (10, 8)),
                                  [[0, 0, 4, 5], [6, 5, 10, 8], [0, 2, 10, 4], [0, 0, 0, 0]])
    image = np.arange(80, dtype=np.uint8).reshape(8, 10)
    crops = dynamic_crop(image, Detections(xyxy=boxes, detection_id=list("abcd")))
    np.testing.assert_array_equal(crops[2].image, image[2:4, :])  # not a sliver from the far edge
    assert crops[3] is None  # nothing left after clamping
    # the static crop clamps too, and its offset is the clamped origin
    crop = absolute_static_crop(image, 1, 1, 6, 6)
    assert crop.window == (0, 0, 4, 4) and crop.offset == (0, 0)


@pytest.mark.parametrize("opacity", [0.25, 0.5, 0.7])
def test_convention_blend_is_opencv_add_weighted_of_the_masked_colour(opacity):
    """out = addWeighted(where(mask, crop, colour), a, crop, 1 - a, 0): inside the mask the crop
    is unchanged, outside it moves towards the colour by ``a``."""
    crop = np.array([[[0, 100, 255], [10, 20, 30]]], np.uint8)  # 1 x 2 pixels
    mask = np.array([[False, True]])
    out = remove_background(crop, mask, opacity, (200, 0, 50))
    np.testing.assert_array_equal(out[0, 1], [10, 20, 30])
    expected = [round(opacity * c + (1 - opacity) * p) for c, p in zip((200, 0, 50), (0, 100, 255),
                                                                      strict=True)]
    assert np.abs(out[0, 0].astype(int) - expected).max() <= 1  # float32 weights, fused rounding
    colour = np.empty_like(crop)
    colour[:] = (200, 0, 50)
    np.testing.assert_array_equal(
        out, cv2.addWeighted(np.where(mask[..., None], crop, colour), opacity, crop, 1 - opacity, 0))


def test_convention_predictions_move_by_minus_the_window_origin_and_are_not_clipped():
    masks = np.zeros((1, 20, 30), bool)
    masks[0, 5:9, 7:12] = True
    detections = Detections(xyxy=[[6.6, 4.5, 40.0, 9.5]], detection_id=["a"], mask=masks,
                            keypoints=[[[6.0, 50.0, 1.0]]], polygons=[[[0.0, 0.0], [35.5, 9.25]]])
    (crop,) = dynamic_crop(np.zeros((20, 30, 3), np.uint8), detections)
    assert crop.window == (7, 4, 30, 10)  # 6.6 -> 7, 4.5 -> 4, 9.5 -> 10; x_max clamped to 30
    own = crop.detections
    np.testing.assert_array_equal(own.xyxy, [[6.6 - 7, 4.5 - 4, 40.0 - 7, 9.5 - 4]])
    np.testing.assert_array_equal(own.keypoints, [[[-1.0, 46.0, 1.0]]])  # outside: kept
    np.testing.assert_array_equal(own.polygons[0], [[-7.0, -4.0], [28.5, 5.25]])
    np.testing.assert_array_equal(own.mask[0], masks[0, 4:10, 7:30])


def test_convention_last_sample_can_land_one_ulp_past_the_edge():
    """TensorFlow computes in_y = y1 * (H - 1) + y * ((y2 - y1) * (H - 1) / (ch - 1)) in float32;
    for H = 4, ch = 22 the last sample is 21 * f32(3 / 21) > 3, so it is extrapolated."""
    f32 = np.float32
    scale = f32(f32(1.0) * f32(3.0)) / f32(21.0)
    last = f32(0.0) * f32(3.0) + f32(21.0) * scale
    assert last > f32(3.0)  # the quirk is float32 arithmetic, not a choice of ours
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    out = crop_and_resize(image, np.array([[0, 0, 1, 1]], np.float32), [0], (22, 22),
                          extrapolation_value=-1.0)
    assert (out[0, 21, :, 0] == -1).all() and (out[0, :, 21, 0] == -1).all()
    assert out[0, 20, 20, 0] != -1
    # where the float32 steps land exactly on H - 1 there is no quirk: the corner is the pixel
    exact = crop_and_resize(image, np.array([[0, 0, 1, 1]], np.float32), [0], (4, 4))
    np.testing.assert_array_equal(exact[0, :, :, 0], image[0, :, :, 0])


@pytest.mark.parametrize("box", [[-3e38, 0, 3e38, 1], [0, -3e38, 1, 3e38]])
@pytest.mark.parametrize("method", ["bilinear", "nearest"])
def test_convention_overflowing_box_arithmetic_is_extrapolated(box, method):
    # y2 - y1 (or x2 - x1) is +inf in float32 although every coordinate is finite
    y1, x1, y2, x2 = np.array(box, np.float32)
    with np.errstate(over="ignore"):
        assert np.isinf(y2 - y1) or np.isinf(x2 - x1)
    image = np.ones((1, 3, 3, 1), np.uint8)
    out = crop_and_resize(image, np.array([box], np.float32), [0], (2, 2), method,
                          extrapolation_value=5.0)
    np.testing.assert_array_equal(out, np.full((1, 2, 2, 1), 5, np.float32))


def test_convention_sizes_are_width_height_int_tuples():
    crop = Crop(np.zeros((3, 5, 3), np.uint8), np.array([2, 1, 7, 4]), np.array([64, 48]))
    assert crop.size == (5, 3)  # (width, height) of the window
    assert crop.parent_size == (64, 48) and all(type(v) is int for v in crop.parent_size)
    assert crop.window == (2, 1, 7, 4) and all(type(v) is int for v in crop.window)
    assert crop.root_window == (2, 1, 7, 4) and crop.root_size == (64, 48)
