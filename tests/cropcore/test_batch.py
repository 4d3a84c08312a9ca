"""The batched kernels the crop job calls: ``dynamic_crop_batch``, ``detection_windows``,
``static_crop_batch``, ``crop_and_resize_batch``, ``to_crop_frame`` and ``root_windows``,
each against a slow reference written from the spec (docs/crop-semantics.md)."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cropcore import (
    MASK_RLE,
    POLYGON_STYLE,
    Crop,
    Detections,
    absolute_static_crop,
    box_faults,
    crop_and_resize,
    crop_and_resize_batch,
    decode_rle,
    detection_windows,
    dynamic_crop,
    dynamic_crop_batch,
    encode_rle,
    invalid_boxes,
    polygon_to_mask,
    relative_static_crop,
    remove_background,
    root_windows,
    static_crop_batch,
    to_crop_frame,
    windows_from_xyxy,
)
from tests.cropcore.test_resize import assert_bitwise_equal, reference_crop_and_resize

# --- slow reference ---------------------------------------------------------------------------


def reference_window(box, size_wh):
    """(reason, window) of one box, one coordinate at a time with Python's round()."""
    if not all(math.isfinite(v) for v in box):
        return "invalid_box", None
    x0, y0, x1, y1 = box
    if x1 < x0 or y1 < y0:
        return "invalid_box", None
    width, height = size_wh
    limits = (width, height, width, height)
    window = []
    for value, limit in zip(box, limits, strict=True):
        value = min(max(value, -1e18), 1e18)  # Python round() of any finite float is exact
        window.append(min(max(round(value), 0), limit))
    if window[2] <= window[0] or window[3] <= window[1]:
        return "empty_window", tuple(window)
    return None, tuple(window)


def reference_batch(image, boxes, masks, polygons, styles, opacity, colour_rgb):
    """Per detection: (reason, window, crop pixels, unmasked), each rule spelled out."""
    height, width = image.shape[:2]
    out = []
    for i, box in enumerate(boxes):
        reason, window = reference_window([float(v) for v in box], (width, height))
        if reason is not None:
            out.append((reason, window, None, False))
            continue
        x0, y0, x1, y1 = window
        crop = image[y0:y1, x0:x1]
        mask = None
        if masks is not None and masks[i] is not None:
            mask = masks[i][y0:y1, x0:x1]
        elif opacity > 0 and polygons is not None and len(polygons[i]) >= 3:
            full = polygon_to_mask(polygons[i], (height, width), style=styles[i])
            mask = full[y0:y1, x0:x1]
        unmasked = opacity > 0 and mask is None
        if opacity > 0 and mask is not None:
            crop = remove_background(crop, mask, opacity, tuple(reversed(colour_rgb)))
        out.append((None, window, crop, unmasked))
    return out


# The smallest magnitude float32 rounds to infinity: FLT_MAX plus half its last step.
FLOAT32_OVERFLOW = 2.0**128 - 2.0**103


def reference_resize_batch(image, boxes, size_wh, crop_size, method, extrapolation, reduce):
    """Per box: (reason, window, crop) of ``crop_and_resize_batch``, one coordinate at a time.

    A pixel coordinate ``p`` of the full image maps to ``q = (p + 0.5) / reduce - 0.5`` on a
    decode reduced ``reduce`` times (no change when ``reduce`` is 1); when ``p`` lies on the full
    image (``0 <= p <= size - 1``), ``q`` is held on the decoded image. The normalized
    coordinate is ``float32(q / max(n - 1, 1))`` for the decoded size ``n``, and the crop is the
    slow ``crop_and_resize`` reference of that normalized box."""
    height, width = image.shape[:2]
    full_w, full_h = size_wh
    pixels = image if image.ndim == 3 else image[:, :, None]
    out = []
    for box in boxes:
        box = [float(v) for v in box]
        reason, window = reference_window(box, size_wh)
        if reason is None and any(abs(v) >= FLOAT32_OVERFLOW for v in box):
            reason, window = "invalid_box", None
        if reason is not None:
            out.append((reason, window, None))
            continue
        normalized = []
        for k in (1, 0, 3, 2):  # (y1, x1, y2, x2)
            p = box[k]
            full, n = (full_w, width) if k % 2 == 0 else (full_h, height)
            q = p
            if reduce > 1:
                q = (p + 0.5) / reduce - 0.5
                if 0 <= p <= full - 1:
                    q = min(max(q, 0.0), n - 1.0)
            normalized.append(np.float32(q / max(n - 1, 1)))
        crop = reference_crop_and_resize(pixels[None], [normalized], [0], crop_size, method,
                                         extrapolation)[0]
        out.append((None, window, crop))
    return out


# --- properties -------------------------------------------------------------------------------

coordinate = st.one_of(
    st.floats(-20, 60, allow_nan=False),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e300, -1e300, 0.5, 2.5]),
)
vertex = st.tuples(st.floats(-15, 55, allow_nan=False), st.floats(-15, 55, allow_nan=False))


@st.composite
def batch_cases(draw):
    n = draw(st.integers(0, 5))
    boxes = draw(st.lists(st.tuples(*[coordinate] * 4), min_size=n, max_size=n))
    has_mask = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    polygons = draw(st.lists(st.lists(vertex, min_size=0, max_size=6), min_size=n, max_size=n))
    styles = draw(st.lists(st.sampled_from(["coco", "roboflow"]), min_size=n, max_size=n))
    opacity = draw(st.sampled_from([0.0, 0.5, 1.0]))
    colour = draw(st.sampled_from([(0, 0, 0), (255, 10, 20)]))
    seed = draw(st.integers(0, 2**16))
    return boxes, has_mask, polygons, styles, opacity, colour, seed


@settings(max_examples=150, deadline=None)
@given(batch_cases())
@example(([(1.0, 1.0, 9.0, 11.0)], [False], [[(0.0, 0.0), (40.0, 2.0), (20.0, 30.0)]], ["roboflow"],
          1.0, (0, 0, 0), 3))
@example(([(1e300, 0.0, 2e300, 5.0), (-1e300, -1e300, 1e300, 1e300)], [False, True], [[], []],
          ["coco", "coco"], 0.5, (255, 10, 20), 4))
def test_dynamic_crop_batch_matches_the_reference(case):
    boxes, has_mask, polygons, styles, opacity, colour, seed = case
    rng = np.random.default_rng(seed)
    height, width = 30, 40
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    dense = [rng.random((height, width)) < 0.5 if m else None for m in has_mask]
    rles = np.empty(len(boxes), dtype=object)
    rles[:] = [encode_rle(m) if m is not None else None for m in dense]
    detections = Detections(
        xyxy=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        detection_id=[str(i) for i in range(len(boxes))],
        polygons=[np.array(p, dtype=np.float64).reshape(-1, 2) for p in polygons],
        data={MASK_RLE: rles, POLYGON_STYLE: np.array(styles, dtype=object)},
    )
    batch = dynamic_crop_batch(image, detections, opacity, colour)
    expected = reference_batch(image, boxes, dense, detections.polygons, styles, opacity, colour)
    assert len(batch) == len(boxes)
    assert batch.unmasked.dtype == bool
    for i, (reason, window, crop, unmasked) in enumerate(expected):
        assert batch.reasons[i] == reason
        assert bool(batch.unmasked[i]) == unmasked
        if reason == "invalid_box":
            assert batch.windows[i].tolist() == [0, 0, 0, 0]
        else:
            assert tuple(batch.windows[i].tolist()) == window
        if reason is None:
            np.testing.assert_array_equal(batch.crops[i], crop)
            if dense[i] is not None:
                x0, y0, x1, y1 = window
                np.testing.assert_array_equal(decode_rle(batch.masks[i]), dense[i][y0:y1, x0:x1])
            else:
                assert batch.masks[i] is None
        else:
            assert batch.crops[i] is None and batch.messages[i]


@settings(max_examples=100, deadline=None)
@given(st.lists(vertex, min_size=3, max_size=7), st.sampled_from(["coco", "roboflow"]),
       st.tuples(st.integers(-5, 45), st.integers(-5, 35), st.integers(0, 45),
                 st.integers(0, 35)))
@example([(-10.0, -10.0), (50.0, -3.0), (20.0, 50.0)], "roboflow", (0, 0, 40, 30))
@example([(3.7, 2.2), (30.9, 4.1), (12.5, 27.8)], "roboflow", (10, 5, 20, 15))
# the canvas spans the polygon's columns and rows (not each other's), and no more than the image
@example([(2.0, 20.0), (20.0, 20.0), (11.0, 28.0)], "roboflow", (0, 0, 40, 30))
@example([(2.0, 2.0), (30.0, 2.0), (15.0, 10.0)], "roboflow", (0, 0, 40, 30))
# OpenCV's clipping at the image's edges changes which pixels the outline paints
@example([(28.6, 27.9), (54.2, -11.9), (0.1, -12.5), (-3.8, 21.0)], "roboflow", (15, 14, 29, 27))
@example([(4.5, 20.3), (2.8, 23.7), (16.2, 54.7)], "roboflow", (0, 0, 40, 30))
@example([(51.4, 4.0), (25.1, 51.6), (8.8, 16.1)], "roboflow", (0, 0, 40, 30))
# a polygon left of the window, and one ending inside a window that does not start at 0
@example([(0.0, 0.0), (3.0, 0.0), (3.0, 10.0)], "roboflow", (10, 0, 20, 10))
@example([(2.0, 2.0), (14.0, 2.0), (8.0, 12.0)], "roboflow", (10, 0, 20, 15))
@example([(2.0, 2.0), (12.0, 2.0), (8.0, 14.0)], "roboflow", (0, 10, 20, 25))
def test_polygon_mask_inside_the_window_is_the_full_image_mask_cut(vertices, style, box):
    height, width = 30, 40
    window = windows_from_xyxy(np.array([box], dtype=np.float64), (width, height))[0]
    x0, y0, x1, y1 = window.tolist()
    if x1 <= x0 or y1 <= y0:
        return
    polygon = np.array(vertices, dtype=np.float64)
    image = np.full((height, width), 200, np.uint8)
    detections = Detections(xyxy=np.array([[x0, y0, x1, y1]], dtype=np.float64),
                            detection_id=["a"], polygons=[polygon])
    batch = dynamic_crop_batch(image, detections, 1.0, (0, 0, 0), polygon_style=style)
    assert batch.reasons[0] is None, batch.messages[0]
    full = polygon_to_mask(polygon, (height, width), style=style)[y0:y1, x0:x1]
    np.testing.assert_array_equal(batch.crops[0] == 200, full)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.floats(-10, 50, allow_nan=False)] * 4), max_size=4),
       st.integers(0, 2**16))
def test_dynamic_crop_is_the_batch_wrapped_in_crops(boxes, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    masks = rng.random((len(boxes), 30, 40)) < 0.5
    detections = Detections(xyxy=np.array(boxes).reshape(-1, 4), mask=masks,
                            detection_id=[str(i) for i in range(len(boxes))])
    crops = dynamic_crop(image, detections, 0.5, (9, 99, 199))
    batch = dynamic_crop_batch(image, detections, 0.5, (9, 99, 199))
    for i, crop in enumerate(crops):
        assert (crop is None) == (batch.reasons[i] is not None)
        if crop is not None:
            np.testing.assert_array_equal(crop.image, batch.crops[i])
            assert crop.window == tuple(batch.windows[i].tolist())


# --- conventions ------------------------------------------------------------------------------


def test_convention_huge_coordinates_are_clamped_not_overflowed():
    windows, reasons, _ = detection_windows(np.array([[-1e300, 2.0, 1e300, 1e18]]), (40, 30))
    assert windows.tolist() == [[0, 2, 40, 30]] and reasons.tolist() == [None]


def test_convention_invalid_box_and_empty_window_reasons_and_messages():
    boxes = np.array([[np.nan, 0, 5, 5], [9, 0, 3, 5], [50, 0, 60, 5], [2, 2, 2, 8],
                      [1, 1, 4, 4]])
    windows, reasons, messages = detection_windows(boxes, (40, 30))
    assert reasons.tolist() == ["invalid_box", "invalid_box", "empty_window", "empty_window",
                                None]
    assert messages.tolist() == [
        "box [nan, 0.0, 5.0, 5.0] has a null, NaN or infinite coordinate",
        "box [9.0, 0.0, 3.0, 5.0] has x_max < x_min or y_max < y_min",
        "box [50.0, 0.0, 60.0, 5.0] covers no pixel of the 40x30 image",
        "box [2.0, 2.0, 2.0, 8.0] covers no pixel of the 40x30 image",
        None,
    ]
    assert box_faults(boxes).tolist() == ["not_finite", "inverted", "", "", ""]
    assert invalid_boxes(boxes)[0].tolist() == ["invalid_box", "invalid_box", None, None, None]


def test_convention_polygon_stands_in_for_a_missing_mask_only_for_background_removal():
    image = np.full((10, 10, 3), 50, np.uint8)
    square = np.array([[2.0, 2.0], [5.0, 2.0], [5.0, 5.0], [2.0, 5.0]])
    detections = Detections(xyxy=[[0, 0, 10, 10]] * 2, detection_id=["p", "none"],
                            polygons=[square, np.empty((0, 2))])
    kept = dynamic_crop_batch(image, detections, 0.0)
    np.testing.assert_array_equal(kept.crops[0], image)  # opacity 0: no mask needed
    assert not kept.unmasked.any()
    removed = dynamic_crop_batch(image, detections, 1.0, (0, 0, 0))
    # Roboflow style: the integer square [2, 5] x [2, 5] paints its outline too, 4 x 4 pixels
    assert (removed.crops[0][:, :, 0] == 50).sum() == 16
    assert removed.unmasked.tolist() == [False, True]
    np.testing.assert_array_equal(removed.crops[1], image)
    coco = dynamic_crop_batch(image, detections, 1.0, (0, 0, 0), polygon_style="coco")
    assert (coco.crops[0][:, :, 0] == 50).sum() == 9


def test_convention_polygon_style_per_detection_overrides_the_default():
    image = np.full((10, 10), 50, np.uint8)
    square = np.array([[2.0, 2.0], [5.0, 2.0], [5.0, 5.0], [2.0, 5.0]])
    detections = Detections(xyxy=[[0, 0, 10, 10]] * 3, detection_id=["a", "b", "c"],
                            polygons=[square] * 3,
                            data={POLYGON_STYLE: np.array(["coco", None, "roboflow"], object)})
    batch = dynamic_crop_batch(image, detections, 1.0, polygon_style="coco")
    assert [int((c == 50).sum()) for c in batch.crops] == [9, 9, 16]


def test_convention_bad_rle_is_invalid_mask_at_any_opacity_bad_polygon_only_when_used():
    image = np.zeros((10, 10, 3), np.uint8)
    rles = np.empty(2, dtype=object)
    rles[:] = [{"size": [5, 5], "counts": "00"}, None]
    detections = Detections(xyxy=[[0, 0, 4, 4]] * 2, detection_id=["rle", "poly"],
                            polygons=[np.empty((0, 2)), np.array([[0, 0], [np.nan, 1], [3, 3]])],
                            data={MASK_RLE: rles})
    none = dynamic_crop_batch(image, detections, 0.0)
    assert none.reasons.tolist() == ["invalid_mask", None]
    assert none.messages[0] == "mask size [5, 5] does not match the image (10x10)"
    used = dynamic_crop_batch(image, detections, 1.0)
    assert used.reasons.tolist() == ["invalid_mask", "invalid_mask"]
    assert used.messages[1] == "polygon: polygon vertices must be finite, got NaN or infinity"


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ({"size": None, "counts": "00"},
         r"^mask needs size \[height, width\] and counts, got size=None and counts$"),
        ({"size": [10, 10]}, r"^mask needs size \[height, width\] and counts, got size=\[10, 10\] "
                             r"and no counts$"),
        ("not a dict", r"^mask must be a COCO RLE dict, got str$"),
        ({"size": [None, 10], "counts": "00"},
         r"^mask needs size \[height, width\] and counts, got size=\[None, 10\] and counts$"),
        ({"size": [10, 10, 3], "counts": "00"},
         r"^mask needs size \[height, width\] and counts, got size=\[10, 10, 3\] and counts$"),
    ],
)
def test_malformed_rle_masks_give_invalid_mask_with_what_was_received(rle, message):
    rles = np.empty(1, dtype=object)
    rles[0] = rle
    detections = Detections(xyxy=[[0, 0, 4, 4]], detection_id=["a"], data={MASK_RLE: rles})
    batch = dynamic_crop_batch(np.zeros((10, 10), np.uint8), detections)
    assert batch.reasons[0] == "invalid_mask"
    assert re.match(message, batch.messages[0]), batch.messages[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask_opacity": 1.5}, r"^mask_opacity must be within \[0, 1\], got 1\.5$"),
        ({"polygon_style": "svg"},
         r"^polygon_style must be one of \('coco', 'roboflow'\), got 'svg'$"),
    ],
)
def test_dynamic_crop_batch_rejects_bad_arguments(kwargs, message):
    detections = Detections(xyxy=[[0, 0, 4, 4]], detection_id=["a"])
    with pytest.raises(ValueError, match=message):
        dynamic_crop_batch(np.zeros((10, 10), np.uint8), detections, **kwargs)


def test_rle_mask_of_another_size_names_both_sizes_height_first():
    rles = np.empty(1, dtype=object)
    rles[0] = {"size": [5, 7], "counts": "0e0"}
    detections = Detections(xyxy=[[0, 0, 4, 4]], detection_id=["a"], data={MASK_RLE: rles})
    batch = dynamic_crop_batch(np.zeros((10, 20), np.uint8), detections)  # 20 wide, 10 high
    assert batch.reasons[0] == "invalid_mask"
    assert batch.messages[0] == "mask size [5, 7] does not match the image (10x20)"


def test_dynamic_crop_batch_default_opacity_keeps_the_background():
    image = np.full((6, 8, 3), 80, np.uint8)
    detections = Detections(xyxy=[[0, 0, 8, 6]], detection_id=["a"],
                            mask=np.zeros((1, 6, 8), bool),
                            polygons=[np.array([[1.0, 1.0], [4.0, 1.0], [4.0, 4.0]])])
    batch = dynamic_crop_batch(image, detections)  # mask_opacity defaults to 0
    assert batch.crops[0] is not None and (batch.crops[0] == 80).all()
    assert not batch.unmasked.any()


def test_dynamic_crop_batch_rejects_a_non_image():
    with pytest.raises(ValueError, match=r"^image must be an H x W or H x W x C array, got list"):
        dynamic_crop_batch([[0]], Detections.empty())


def test_dynamic_crop_batch_error_messages_say_what_was_received():
    with pytest.raises(ValueError, match=r"^image must be an H x W or H x W x C array, got "
                                         r"ndarray with shape \(2, 2, 2, 2\)$"):
        dynamic_crop_batch(np.zeros((2, 2, 2, 2), np.uint8), Detections.empty())
    with pytest.raises(ValueError, match=r"^detections must be a Detections, got list$"):
        dynamic_crop_batch(np.zeros((4, 4), np.uint8), [[0, 0, 1, 1]])
    detections = Detections(xyxy=[[0, 0, 1, 1]], detection_id=["a"],
                            mask=np.zeros((1, 3, 5), bool))
    with pytest.raises(ValueError, match=r"^masks must match the image size \(4, 6\), got "
                                         r"\(3, 5\)$"):
        dynamic_crop_batch(np.zeros((4, 6), np.uint8), detections)


def test_unknown_polygon_style_of_a_detection_is_invalid_mask_naming_it():
    square = np.array([[1.0, 1.0], [4.0, 1.0], [4.0, 4.0], [1.0, 4.0]])
    detections = Detections(xyxy=[[0, 0, 6, 6]], detection_id=["a"], polygons=[square],
                            data={POLYGON_STYLE: np.array(["svg"], object)})
    batch = dynamic_crop_batch(np.zeros((6, 6), np.uint8), detections, 1.0)
    assert batch.reasons[0] == "invalid_mask" and batch.crops[0] is None
    assert batch.messages[0] == "polygon style must be one of ('coco', 'roboflow'), got 'svg'"


def test_roboflow_polygon_beyond_int32_is_invalid_mask_even_off_the_window():
    # polygon_to_mask refuses it on the full image, so its cut to any window is refused too
    far = np.array([[0.0, 0.0], [5.0, 0.0], [2.0, 2.0**31]])  # int32 ends at 2**31 - 1
    detections = Detections(xyxy=[[10, 0, 20, 10], [0, 0, 10, 10]], detection_id=["off", "on"],
                            polygons=[far, far])
    batch = dynamic_crop_batch(np.zeros((10, 20), np.uint8), detections, 1.0)
    assert batch.reasons.tolist() == ["invalid_mask", "invalid_mask"]
    assert batch.messages[0] == ("polygon: polygon vertices must lie within the int32 range, "
                                 "got 2147483648.0")
    with pytest.raises(ValueError, match="int32 range"):
        polygon_to_mask(far, (10, 20), style="roboflow")
    # COCO style takes such a polygon: the window off it is blended whole
    coco = dynamic_crop_batch(np.full((10, 20), 9, np.uint8), detections, 1.0,
                              polygon_style="coco")
    assert coco.reasons.tolist() == [None, None] and (coco.crops[0] == 0).all()


def test_invalid_and_empty_box_messages_show_coordinates_as_floats():
    # integer or None (null) coordinates are read as floats, NaN for null
    reasons, messages = invalid_boxes([[2, 0, 1, 1], [None, 0, 1, 1], [0, 0, 1, 1]])
    assert reasons.tolist() == ["invalid_box", "invalid_box", None]
    assert messages.tolist() == [
        "box [2.0, 0.0, 1.0, 1.0] has x_max < x_min or y_max < y_min",
        "box [nan, 0.0, 1.0, 1.0] has a null, NaN or infinite coordinate",
        None,
    ]
    _, reasons, messages = detection_windows(np.array([[50, 0, 60, 5]]), (40, 30))
    assert reasons.tolist() == ["empty_window"]
    assert messages.tolist() == ["box [50.0, 0.0, 60.0, 5.0] covers no pixel of the 40x30 image"]


@settings(max_examples=80, deadline=None)
@given(st.integers(-30, 80), st.integers(-30, 60), st.integers(1, 50), st.integers(1, 40))
def test_static_crop_batch_matches_the_single_window_crops(xc, yc, w, h):
    image = np.arange(30 * 40).reshape(30, 40)
    batch = static_crop_batch(image, xc, yc, w, h)
    single = absolute_static_crop(image, xc, yc, w, h)
    assert (single is None) == (batch.reasons[0] == "empty_window")
    if single is not None:
        np.testing.assert_array_equal(batch.crops[0], single.image)
        assert tuple(batch.windows[0].tolist()) == single.window
    relative = static_crop_batch(image, xc / 40, yc / 30, w / 50, h / 40, relative=True)
    single = relative_static_crop(image, xc / 40, yc / 30, w / 50, h / 40)
    assert (single is None) == (relative.reasons[0] is not None)


def test_convention_static_empty_window_message_names_window_and_image():
    batch = static_crop_batch(np.zeros((30, 40)), [2000, 20], 10, 30, 16)
    assert batch.reasons.tolist() == ["empty_window", None]
    assert batch.messages[0] == "the window [40, 2, 40, 18] is empty inside a 40x30 image"


def test_static_crop_batch_crops_every_window_after_an_empty_one():
    image = np.arange(30 * 40).reshape(30, 40)
    batch = static_crop_batch(image, [-100, 20, 5], [10, 10, 3], 10, 4)
    assert batch.reasons.tolist() == ["empty_window", None, None]
    assert batch.messages[1] is None and batch.messages[2] is None
    assert batch.crops[0] is None
    np.testing.assert_array_equal(batch.crops[1], image[8:12, 15:25])
    np.testing.assert_array_equal(batch.crops[2], image[1:5, 0:10])
    # static crops carry no masks and never lack one
    assert batch.masks == [None, None, None]
    assert batch.unmasked.dtype == bool and batch.unmasked.tolist() == [False] * 3


def test_crop_and_resize_batch_is_crop_and_resize_of_the_valid_boxes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    boxes = np.array([[1.0, 2.0, 20.0, 25.0], [np.nan, 0, 1, 1], [50, 0, 60, 5]])
    batch = crop_and_resize_batch(image, boxes, (40, 30), (8, 6))
    assert batch.reasons.tolist() == [None, "invalid_box", "empty_window"]
    normalized = np.array([[2 / 29, 1 / 39, 25 / 29, 20 / 39]], dtype=np.float32)
    expected = crop_and_resize(image[None], normalized, np.zeros(1, np.int32), (8, 6))
    np.testing.assert_array_equal(batch.crops[0], expected[0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-100, 100), st.floats(-100, 100)), min_size=1, max_size=6),
       st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=3, max_size=3))
def test_to_crop_frame_matches_detections_moved(points, offsets):
    owners = np.arange(len(points)) % 3
    xy = np.array(points, dtype=np.float64)
    offsets = np.array(offsets, dtype=np.float64)
    moved = to_crop_frame(xy.ravel(), np.repeat(owners, 2), np.tile([0, 1], len(points)), offsets)
    for k, (owner, point) in enumerate(zip(owners, xy, strict=True)):
        expected = Detections(xyxy=[[*point, *point]]).moved(tuple(offsets[owner])).xyxy[0, :2]
        np.testing.assert_array_equal(moved.reshape(-1, 2)[k], expected)


def test_to_crop_frame_rejects_owners_out_of_range():
    with pytest.raises(ValueError, match=r"^owners must index the 1 offsets, got values from 0 "
                                         r"to 2$"):
        to_crop_frame(np.zeros(2), np.array([0, 2]), 0, np.zeros((1, 2)))


@settings(max_examples=60, deadline=None)
@given(st.tuples(st.integers(0, 20), st.integers(0, 20)), st.tuples(st.integers(0, 9),
       st.integers(0, 9), st.integers(10, 20), st.integers(10, 20)))
def test_root_windows_matches_crop_root_window(parent_origin, window):
    parent = Crop(np.zeros((40, 40)), (*parent_origin, parent_origin[0] + 20,
                                       parent_origin[1] + 20), (100, 100))
    child = Crop(parent.image[window[1]:window[3], window[0]:window[2]], window, (20, 20))
    expected = child.nested_in(parent).root_window
    assert tuple(root_windows(np.array([window]), np.array([parent_origin]))[0]) == expected


def test_root_windows_moves_each_row_by_its_own_offset():
    windows = np.array([[1, 2, 5, 6], [0, 0, 3, 4], [7, 1, 9, 2]])
    offsets = np.array([[10, 20], [0, 0], [100, 5]])
    assert root_windows(windows, offsets).tolist() == [
        [11, 22, 15, 26], [0, 0, 3, 4], [107, 6, 109, 7]]


def test_root_windows_are_int64_for_whole_pixels_held_as_floats():
    # CropBatch.offsets is float64; windows may come back from a float column
    moved = root_windows(np.array([[1.0, 2.0, 5.0, 6.0]]), np.array([[10.0, 20.0]]))
    assert moved.dtype == np.int64 and moved.tolist() == [[11, 22, 15, 26]]
    assert root_windows(np.array([[1, 2, 5, 6]]), np.array([[10.0, 20.0]])).dtype == np.int64
    assert root_windows(np.array([[1.0, 2, 5, 6]]), np.array([[10, 20]])).dtype == np.int64


def test_root_windows_rejects_misaligned_offsets():
    with pytest.raises(ValueError, match=r"^root_offsets must have shape \(2, 2\), got \(1, 2\)$"):
        root_windows(np.zeros((2, 4)), np.zeros((1, 2)))


def test_convention_crop_and_resize_batch_refuses_boxes_beyond_float32():
    image = np.zeros((30, 40, 3), np.uint8)
    batch = crop_and_resize_batch(image, np.array([[-1e300, 0, 5, 5], [1.0, 1, 5, 5]]),
                                  (40, 30), (4, 4))
    assert batch.reasons.tolist() == ["invalid_box", None]
    assert batch.messages[0] == ("box [-1e+300, 0.0, 5.0, 5.0] has a coordinate beyond the "
                                 "float32 range crop_and_resize samples in")


@st.composite
def resize_batch_cases(draw):
    reduce = draw(st.sampled_from([1, 2, 4, 8]))
    full_w, full_h = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    n = draw(st.integers(0, 4))
    # the edges of the full image and of its pixels' centres, a hair outside the image, and
    # coordinates no float32 holds
    edges = [0.0, 0.5, -0.5, -1e-20, full_w - 1.0, float(full_w), full_h - 1.0, float(full_h),
             full_w - 0.5, full_h - 0.5, 1e300, -1e300, float("nan")]
    coordinate = st.one_of(st.sampled_from(edges), st.floats(-10, 35, allow_nan=False))
    boxes = draw(st.lists(st.tuples(*[coordinate] * 4), min_size=n, max_size=n))
    box_dtype = draw(st.sampled_from([np.float64, np.float32]))
    channels = draw(st.sampled_from([None, 1, 3]))  # None: a 2-D image
    crop_size = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    method = draw(st.sampled_from(["bilinear", "nearest"]))
    extrapolation = draw(st.sampled_from([None, -1.0, 7.5]))  # None: the default
    seed = draw(st.integers(0, 2**16))
    return (reduce, (full_w, full_h), boxes, box_dtype, channels, crop_size, method,
            extrapolation, seed)


@settings(max_examples=150, deadline=None)
@given(resize_batch_cases())
@example((2, (8, 6), [(0.0, 0.0, 7.0, 5.0), (0.0, 0.0, 8.0, 6.0), (-0.5, 0.5, 7.5, 5.5)],
          np.float64, 3, (3, 3), "bilinear", -1.0, 1))
@example((1, (9, 7), [(-1e-20, -1e-20, 8.0, 6.0)], np.float64, None, (2, 2), "bilinear", None, 2))
@example((1, (5, 2), [(0.0, 0.0, 4.0, 1.0), (1.0, 0.5, 3.0, 1.0)], np.float64, 1, (2, 3),
          "bilinear", None, 3))
@example((1, (2, 5), [(0.0, 0.0, 1.0, 4.0), (0.5, 1.0, 1.0, 3.0)], np.float64, 1, (3, 2),
          "bilinear", None, 4))
# float32 boxes are read as their exact values: float32 arithmetic would move this sample
@example((2, (21, 23), [(11.642027854919434, 15.642289161682129, 25.801246643066406,
                          28.838912963867188)], np.float32, None, (2, 1), "bilinear", None, 5))
def test_crop_and_resize_batch_matches_the_reference(case):
    reduce, size_wh, boxes, box_dtype, channels, crop_size, method, extrapolation, seed = case
    rng = np.random.default_rng(seed)
    # a reduced JPEG decode (DCT scaling) has ceil(size / reduce) pixels per axis
    width, height = (-(-v // reduce) for v in size_wh)
    shape = (height, width) if channels is None else (height, width, channels)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    with np.errstate(over="ignore"):
        boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4).astype(box_dtype)
    kwargs = {} if extrapolation is None else {"extrapolation_value": extrapolation}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # huge boxes are reasons, not overflow warnings
        batch = crop_and_resize_batch(image, boxes, size_wh, crop_size, method, reduce=reduce,
                                      **kwargs)
    expected = reference_resize_batch(image, boxes, size_wh, crop_size, method,
                                      extrapolation or 0.0, reduce)
    assert len(batch) == len(boxes)
    assert batch.masks == [None] * len(boxes)
    assert batch.unmasked.dtype == bool and not batch.unmasked.any()
    assert batch.unmasked.shape == (len(boxes),)
    for i, (reason, window, crop) in enumerate(expected):
        assert batch.reasons[i] == reason
        if reason == "invalid_box":
            assert batch.windows[i].tolist() == [0, 0, 0, 0]
        else:
            assert tuple(batch.windows[i].tolist()) == window
        if reason is None:
            assert batch.messages[i] is None
            assert batch.crops[i].shape == (*crop_size, 1 if channels is None else channels)
            assert_bitwise_equal(batch.crops[i], crop)
        else:
            assert batch.crops[i] is None and batch.messages[i]


def test_crop_and_resize_batch_on_a_reduced_decode_vectors():
    # An 8 x 6 image decoded at half size: 4 x 3 pixels, each the mean of a 2 x 2 block.
    decoded = np.arange(12, dtype=np.uint8).reshape(3, 4) * 10
    boxes = np.array([
        [0.0, 0.0, 7.0, 5.0],  # the centres of the corner pixels: all of the decoded image
        [0.0, 0.0, 8.0, 6.0],  # to the far edges: x 8 -> 3.75 and y 6 -> 2.75, both outside
    ])
    batch = crop_and_resize_batch(decoded, boxes, (8, 6), (3, 4), extrapolation_value=-1.0,
                                  reduce=2)
    assert batch.windows.tolist() == [[0, 0, 7, 5], [0, 0, 8, 6]]
    np.testing.assert_array_equal(batch.crops[0][:, :, 0], decoded)
    corner = crop_and_resize_batch(decoded, boxes[1:], (8, 6), (2, 2), extrapolation_value=-1.0,
                                   reduce=2)
    np.testing.assert_array_equal(corner.crops[0][:, :, 0], [[0.0, -1.0], [-1.0, -1.0]])


def test_crop_and_resize_batch_samples_a_box_starting_left_of_the_image_as_outside():
    # x_min = -1e-20 rounds to window column 0, but TensorFlow samples the box itself: its
    # first column lies outside the image and takes the extrapolation value.
    image = np.full((4, 5), 100, np.uint8)
    batch = crop_and_resize_batch(image, np.array([[-1e-20, 0.0, 4.0, 3.0]]), (5, 4), (2, 2))
    assert batch.windows.tolist() == [[0, 0, 4, 3]]
    np.testing.assert_array_equal(batch.crops[0][:, :, 0], [[0.0, 100.0], [0.0, 100.0]])


def test_crop_and_resize_batch_messages_name_the_fault_of_each_box():
    boxes = np.array([[np.nan, 0, 5, 5], [-1e39, 0, 5, 5], [3.0, 0, 1, 5], [1.0, 1, 5, 5]])
    batch = crop_and_resize_batch(np.zeros((30, 40, 3), np.uint8), boxes, (40, 30), (2, 2))
    assert batch.reasons.tolist() == ["invalid_box"] * 3 + [None]
    # an invalid box has no window, whichever check found it
    assert batch.windows.tolist() == [[0, 0, 0, 0]] * 3 + [[1, 1, 5, 5]]
    assert batch.messages.tolist() == [
        "box [nan, 0.0, 5.0, 5.0] has a null, NaN or infinite coordinate",
        "box [-1e+39, 0.0, 5.0, 5.0] has a coordinate beyond the float32 range crop_and_resize "
        "samples in",
        "box [3.0, 0.0, 1.0, 5.0] has x_max < x_min or y_max < y_min",
        None,
    ]
