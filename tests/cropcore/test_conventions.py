"""Named tests for the conventions of docs/crop-semantics.md that had none: clamping, the
addWeighted blend, prediction translation, TensorFlow's one-ulp quirk, overflowing box
arithmetic, sizes as ``(width, height)``, and Roboflow-style polygons outside the image. The
job's pixel -> normalized mapping is in tests/jobs/test_conventions.py. Expected values are
written out or computed here, never by the kernel under test (the dynamic-crop polygon test also
compares the windowed rasterization with the full-image one)."""

import cv2
import numpy as np
import pytest

from cropcore import (
    Crop,
    Detections,
    absolute_static_crop,
    crop_and_resize,
    dynamic_crop,
    dynamic_crop_batch,
    polygon_to_mask,
)
from cropcore.dynamic import remove_background
from cropcore.windows import windows_from_xyxy
from tests.cropcore.test_masks import reference_polygon_roboflow


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
    blended = cv2.addWeighted(np.where(mask[..., None], crop, colour), opacity,
                              crop, 1 - opacity, 0)
    np.testing.assert_array_equal(out, blended)


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


# --- Roboflow-style polygons that reach outside the image ------------------------------------
# polygon_to_mask(style="roboflow") is cv2.fillPoly on the image's own canvas, as supervision
# calls it, so vertices outside the image go through OpenCV's clipping. The slow reference in
# test_masks.py rasterizes without clipping (it equals cv2.fillPoly on a canvas padded around
# the polygon, cut back to the image). Where clipping cannot move a pixel the two agree; where an
# edge crosses the border at a slant OpenCV restarts its line at the clipped point, and the
# kernel follows OpenCV, not the reference.

_H, _W = 24, 30


def _clip_safe_polygons_outside():
    """Polygons partly or wholly outside a 30 x 24 (W x H) image whose pixels OpenCV's clipping
    cannot move: wholly beside the image, enclosing it, and axis-aligned rectangles (their
    edges are clipped exactly), with negative coordinates and coordinates beyond W and H."""
    rng = np.random.default_rng(2024)
    polygons = [
        [[-9.5, -4.0], [-1.2, -7.0], [-3.0, 30.0]],  # left of the image (x truncates to -1)
        [[30.0, 2.0], [55.0, 9.0], [41.0, 23.0]],  # right of it, x = W is outside
        [[4.0, 24.0], [20.0, 90.0], [-8.0, 60.0]],  # below it, y = H is outside
        [[-1e4, -1e4], [1e4, -1e4], [1e4, 1e4], [-1e4, 1e4]],  # encloses the image
        [[15.0, -500.0], [600.0, 12.0], [15.0, 700.0], [-570.0, 12.0]],  # diamond around it
        [[-5.0, -5.0], [12.0, -5.0], [12.0, 9.0], [-5.0, 9.0]],  # top-left corner
        [[25.9, 20.5], [40.0, 20.5], [40.0, 31.0], [25.9, 31.0]],  # bottom-right corner
    ]
    for _ in range(40):
        x0, x1 = np.sort(rng.uniform(-40, 70, 2))
        y0, y1 = np.sort(rng.uniform(-40, 60, 2))
        polygons.append([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    for _ in range(20):  # wholly beyond one side
        points = rng.uniform(-60, 90, size=(rng.integers(3, 7), 2))
        side = rng.integers(4)
        axis, low, high = [(0, -60, -1), (0, _W, 90), (1, -60, -1), (1, _H, 90)][side]
        points[:, axis] = rng.uniform(low, high, len(points))
        polygons.append(points.tolist())
    return [np.array(p, dtype=np.float64) for p in polygons]


def test_convention_roboflow_polygon_outside_the_image_matches_the_reference_where_unclipped():
    for polygon in _clip_safe_polygons_outside():
        out = polygon_to_mask(polygon, (_H, _W), style="roboflow")
        np.testing.assert_array_equal(out, reference_polygon_roboflow(polygon, _H, _W),
                                      err_msg=str(polygon.tolist()))
    # wholly outside paints nothing; enclosing paints everything
    assert not polygon_to_mask([[-9.5, -4], [-1.2, -7], [-3, 30]], (_H, _W), style="roboflow").any()
    assert polygon_to_mask([[-1e4, -1e4], [1e4, -1e4], [1e4, 1e4], [-1e4, 1e4]], (_H, _W),
                           style="roboflow").all()
    # a rectangle from (-5, -5) to (12, 9) keeps its inside part, outline included
    expected = np.zeros((_H, _W), bool)
    expected[0:10, 0:13] = True
    np.testing.assert_array_equal(
        polygon_to_mask([[-5, -5], [12, -5], [12, 9], [-5, 9]], (_H, _W), style="roboflow"),
        expected)


def test_convention_roboflow_polygon_crossing_the_border_follows_opencv_clipping():
    """A slanted edge crossing the border: the kernel is cv2.fillPoly on the image's canvas
    (what supervision computes), which clips the edge at the border and draws the line from
    there, so it differs from the unclipped reference near that edge, not elsewhere."""
    polygon = np.array([[-7.0, 3.0], [20.0, 10.0], [20.0, 20.0], [-7.0, 20.0]])
    out = polygon_to_mask(polygon, (_H, _W), style="roboflow")
    expected = np.zeros((_H, _W), np.uint8)
    cv2.fillPoly(expected, [polygon.astype(np.int32)], color=1)
    np.testing.assert_array_equal(out, expected.astype(bool))
    reference = reference_polygon_roboflow(polygon, _H, _W)
    rows = np.unique(np.nonzero(out != reference)[0])
    assert rows.size and rows.max() <= 10  # only along the clipped edge (y from 3 to 10)
    np.testing.assert_array_equal(out[11:], reference[11:])


@pytest.mark.parametrize("seed", range(4))
def test_convention_roboflow_polygon_outside_the_image_through_dynamic_crop_windows(seed):
    """The polygon standing in for a mask inside a dynamic crop's window is the full image's
    mask cut to the window, also for vertices far outside the image (the kernel rasterizes
    only on the polygon's clipped extent), and equals the reference there when unclipped."""
    rng = np.random.default_rng(seed)
    image = np.full((_H, _W), 200, np.uint8)
    safe = _clip_safe_polygons_outside()
    crossing = [rng.uniform(-1e3, 1e3, size=(rng.integers(3, 7), 2)) for _ in range(10)]
    crossing += [rng.uniform(-20, 50, size=(rng.integers(3, 7), 2)) for _ in range(20)]
    for polygon in safe + crossing:
        x0, x1 = np.sort(rng.integers(-5, _W + 6, 2))
        y0, y1 = np.sort(rng.integers(-5, _H + 6, 2))
        detections = Detections(xyxy=[[x0, y0, x1 + 1, y1 + 1]], detection_id=["a"],
                                polygons=[polygon])
        batch = dynamic_crop_batch(image, detections, 1.0, (0, 0, 0), polygon_style="roboflow")
        if batch.crops[0] is None:
            continue
        wx0, wy0, wx1, wy1 = (int(v) for v in batch.windows[0])
        kept = batch.crops[0] == 200
        full = polygon_to_mask(polygon, (_H, _W), style="roboflow")
        np.testing.assert_array_equal(kept, full[wy0:wy1, wx0:wx1], err_msg=str(polygon.tolist()))
        if any(polygon is p for p in safe):
            reference = reference_polygon_roboflow(polygon, _H, _W)
            np.testing.assert_array_equal(kept, reference[wy0:wy1, wx0:wx1])
