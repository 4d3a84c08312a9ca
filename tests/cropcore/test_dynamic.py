"""dynamic_crop: spec section 3 vectors, conventions, errors, and a property test against a slow
per-pixel reference of the Roboflow algorithm (with our clamping fix)."""

import cv2
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cropcore import Detections, dynamic_crop
from cropcore.dynamic import remove_background


def opencv_blend(background, opacity, pixel):
    """``opacity * background + (1 - opacity) * pixel`` as OpenCV's addWeighted computes it, the
    call Roboflow's block makes: weights in float32, ``fma(bg, a, fma(pixel, 1 - a, 0))`` with one
    float32 rounding per fused step (8-bit times float32 products are exact in float64)."""
    a, b = np.float32(opacity), np.float32(1 - opacity)
    inner = np.float32(float(pixel) * float(b))
    return float(np.float32(float(background) * float(a) + float(inner)))


def reference_dynamic_crop(image, xyxy, masks, opacity, color_bgr):
    """Per detection and per pixel: round half to even, clamp, blend outside the mask."""
    h, w = image.shape[:2]
    out = []
    for i, box in enumerate(xyxy):
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        x0, x1 = min(max(x0, 0), w), min(max(x1, 0), w)
        y0, y1 = min(max(y0, 0), h), min(max(y1, 0), h)
        if x1 <= x0 or y1 <= y0:
            out.append(None)
            continue
        crop = image[y0:y1, x0:x1].copy()
        if opacity > 0 and masks is not None:
            for y in range(y1 - y0):
                for x in range(x1 - x0):
                    if not masks[i][y0 + y, x0 + x]:
                        for c in range(3):
                            value = opencv_blend(color_bgr[c], opacity, crop[y, x, c])
                            crop[y, x, c] = min(max(round(value), 0), 255)
        out.append((crop, (x0, y0)))
    return out


def assert_matches_reference(image, boxes, masks, opacity, colour_rgb) -> None:
    """``dynamic_crop`` gives the reference's crops and offsets (colour given as RGB)."""
    detections = Detections(
        xyxy=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        detection_id=[str(i) for i in range(len(boxes))],
        mask=masks,
    )
    crops = dynamic_crop(image, detections, opacity, colour_rgb)
    expected = reference_dynamic_crop(image, boxes, masks, opacity, colour_rgb[::-1])
    assert len(crops) == len(expected)
    for crop, reference in zip(crops, expected, strict=True):
        if reference is None:
            assert crop is None
        else:
            np.testing.assert_array_equal(crop.image, reference[0])
            assert crop.offset == reference[1]


def spec_image():
    image = np.zeros((1000, 1000, 3), dtype=np.uint8)
    image[0:20, 0:20] = 39
    image[80:120, 80:120] = 49
    image[450:550, 450:550] = 59
    return image


IDS = ["one", "two", "three"]
BOXES = [[0, 0, 20, 20], [80, 80, 120, 120], [450, 450, 550, 550]]


def test_dynamic_crop_spec_vectors_without_masks():
    crops = dynamic_crop(spec_image(), Detections(xyxy=BOXES, detection_id=IDS))
    for crop, size, value, offset in zip(
        crops, (20, 40, 100), (39, 49, 59), ((0, 0), (80, 80), (450, 450)), strict=True
    ):
        assert crop.image.shape == (size, size, 3)
        assert (crop.image == value).all()
        assert crop.offset == offset
    assert [c.detections.detection_id[0] for c in crops] == IDS


def test_dynamic_crop_empty_boxes_give_none():
    boxes = [[0, 0, 0, 0], [80, 80, 120, 120], [0, 0, 0, 0]]
    crops = dynamic_crop(spec_image(), Detections(xyxy=boxes, detection_id=IDS))
    assert crops[0] is None and crops[2] is None
    assert crops[1].image.shape == (40, 40, 3)


def test_dynamic_crop_spec_vectors_with_masks():
    masks = np.zeros((3, 1000, 1000), dtype=bool)
    masks[0, 0:15, 0:15] = True
    masks[1, 80:90, 80:90] = True
    masks[2, 450:460, 450:460] = True
    detections = Detections(xyxy=BOXES, detection_id=IDS, mask=masks)
    crops = dynamic_crop(spec_image(), detections, mask_opacity=1.0, background_color=(127,) * 3)
    for crop, inside, value in zip(crops, (15, 10, 10), (39, 49, 59), strict=True):
        expected = np.full_like(crop.image, 127)
        expected[:inside, :inside] = value
        np.testing.assert_array_equal(crop.image, expected)


def test_dynamic_crop_translates_predictions():
    image = np.zeros((50, 60, 3), np.uint8)
    masks = np.zeros((1, 50, 60), bool)
    masks[0, 12:14, 21:23] = True
    detections = Detections(
        xyxy=[[20.4, 10.6, 30.2, 25.5]],
        detection_id=["a"],
        mask=masks,
        keypoints=[[[25.0, 15.0, 0.9]]],
        polygons=[[[20.5, 11.0], [30.0, 11.0], [25.0, 25.0]]],
        class_name=["cat"],
        class_id=[3],
        confidence=[0.75],
        data={"track": np.array([7])},
    )
    (crop,) = dynamic_crop(image, detections)
    assert crop.window == (20, 11, 30, 26)  # 10.6 -> 11, 25.5 -> 26 (half to even)
    own = crop.detections
    np.testing.assert_allclose(own.xyxy, [[0.4, -0.4, 10.2, 14.5]])  # floats kept, not clipped
    np.testing.assert_allclose(own.keypoints, [[[5.0, 4.0, 0.9]]])
    np.testing.assert_allclose(own.polygons[0], [[0.5, 0.0], [10.0, 0.0], [5.0, 14.0]])
    assert own.mask.shape == (1, 15, 10)
    assert own.mask.sum() == 4 and own.mask[0, 1:3, 1:3].all()
    assert own.class_name[0] == "cat" and own.class_id[0] == 3 and own.confidence[0] == 0.75
    assert own.data["track"][0] == 7


def test_convention_dynamic_crop_translates_oriented_boxes_into_the_crop_frame():
    # The issue's vector: a box at (250, 300) whose corner 0 is (270, 300) puts it at (20, 0).
    image = np.zeros((400, 500, 3), np.uint8)
    diamond = [[270.0, 300.0], [290.0, 320.0], [270.0, 340.0], [250.0, 320.0]]
    # the second box hangs over the left edge: its window is clamped, its corners are not
    hanging = [[-5.5, 10.0], [4.5, 10.0], [4.5, 20.0], [-5.5, 20.0]]
    detections = Detections(
        xyxy=[[250, 300, 290, 340], [-5.5, 10, 4.5, 20]],
        detection_id=["d", "h"],
        data={"xyxyxyxy": np.array([diamond, hanging])},
    )
    crop, clamped = dynamic_crop(image, detections)
    assert crop.window == (250, 300, 290, 340)
    np.testing.assert_array_equal(
        crop.detections.xyxyxyxy, [[[20, 0], [40, 20], [20, 40], [0, 20]]]
    )
    assert clamped.window == (0, 10, 4, 20)  # -5.5 -> -6 -> 0, 4.5 -> 4 (half to even)
    np.testing.assert_array_equal(
        clamped.detections.xyxyxyxy, [[[-5.5, 0], [4.5, 0], [4.5, 10], [-5.5, 10]]]
    )
    # the caller's detections are not modified
    np.testing.assert_array_equal(detections.xyxyxyxy[0], diamond)


def test_dynamic_crop_oriented_boxes_on_empty_windows_and_no_detections():
    image = np.zeros((10, 10), np.uint8)
    corners = np.array([[[0, 0], [0, 0], [0, 0], [0, 0]], [[2, 2], [6, 2], [6, 6], [2, 6]]])
    detections = Detections(
        xyxy=[[0, 0, 0, 0], [2, 2, 6, 6]], detection_id=["e", "f"], data={"xyxyxyxy": corners}
    )
    empty, crop = dynamic_crop(image, detections)
    assert empty is None
    np.testing.assert_array_equal(crop.detections.xyxyxyxy, [[[0, 0], [4, 0], [4, 4], [0, 4]]])
    none = Detections(xyxy=np.empty((0, 4)), data={"xyxyxyxy": np.empty((0, 4, 2))})
    assert dynamic_crop(image, none) == []


def test_dynamic_crop_no_detections_gives_no_crops():
    assert dynamic_crop(np.zeros((4, 4, 3), np.uint8), Detections.empty()) == []


def test_dynamic_crop_clamps_boxes_wider_than_the_image():
    image = np.arange(100, dtype=np.uint8).reshape(10, 10)
    (crop,) = dynamic_crop(image, Detections(xyxy=[[-20, 2, 30, 4]], detection_id=["x"]))
    assert crop.window == (0, 2, 10, 4)
    np.testing.assert_array_equal(crop.image, image[2:4])


def test_dynamic_crop_without_mask_ignores_opacity():
    image = np.full((10, 10, 3), 200, np.uint8)
    (crop,) = dynamic_crop(image, Detections(xyxy=[[0, 0, 5, 5]], detection_id=["x"]), 1.0)
    assert (crop.image == 200).all()


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_dynamic_crop_masks_on_1_3_4_channel_images(channels):
    image = np.full((10, 10, channels), 100, np.uint8)
    masks = np.zeros((1, 10, 10), bool)
    masks[0, :5] = True
    detections = Detections(xyxy=[[0, 0, 10, 10]], detection_id=["x"], mask=masks)
    (crop,) = dynamic_crop(image, detections, 1.0, background_color=(255, 0, 0))
    assert crop.image.shape == (10, 10, channels)
    assert (crop.image[:5] == 100).all()
    expected_background = {1: [76], 3: [0, 0, 255], 4: [0, 0, 255, 100]}[channels]
    assert (crop.image[5:] == expected_background).all()


def test_dynamic_crop_mask_on_2d_image():
    image = np.full((6, 6), 10, np.uint8)
    masks = np.zeros((1, 6, 6), bool)
    detections = Detections(xyxy=[[0, 0, 6, 6]], detection_id=["x"], mask=masks)
    (crop,) = dynamic_crop(image, detections, 1.0, background_color="#ffffff")
    assert crop.image.shape == (6, 6) and (crop.image == 255).all()


def test_remove_background_equals_add_weighted():
    rng = np.random.default_rng(1)
    crop = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    mask = rng.random((30, 40)) > 0.5
    colour = np.empty_like(crop)
    colour[:] = (10, 20, 30)
    expected = cv2.addWeighted(np.where(mask[..., None], crop, colour), 0.3, crop, 0.7, 0)
    np.testing.assert_array_equal(remove_background(crop, mask, 0.3, (10, 20, 30)), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"detections": Detections(xyxy=[[0, 0, 1, 1]])}, "needs detection ids"),
        ({"mask_opacity": 1.5}, r"mask_opacity must be within \[0, 1\], got 1.5"),
        ({"mask_opacity": -0.1}, r"mask_opacity must be within \[0, 1\]"),
        ({"mask_opacity": None}, r"mask_opacity must be within \[0, 1\], got None"),
        ({"mask_opacity": "x"}, r"mask_opacity must be within \[0, 1\], got x"),
        ({"background_color": "#zz"}, "colour must be"),
        ({"image": [[0]]}, "H x W or H x W x C array, got list"),
        ({"detections": [[0, 0, 1, 1]]}, "detections must be a Detections, got list"),
        (
            {"detections": Detections([[0, 0, 1, 1]], ["a"], mask=np.zeros((1, 3, 3), bool))},
            r"masks must match the image size \(4, 4\), got \(3, 3\)",
        ),
    ],
)
def test_dynamic_crop_rejects(kwargs, message):
    arguments = {
        "image": np.zeros((4, 4, 3), np.uint8),
        "detections": Detections(xyxy=[[0, 0, 1, 1]], detection_id=["a"]),
    } | kwargs
    with pytest.raises(ValueError, match=message):
        dynamic_crop(**arguments)


@st.composite
def crop_cases(draw):
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    n = draw(st.integers(0, 5))
    coordinate = st.floats(-30, 60, allow_nan=False).map(lambda v: round(v * 2) / 2)
    boxes = draw(st.lists(st.tuples(*[coordinate] * 4), min_size=n, max_size=n))
    seed = draw(st.integers(0, 2**32 - 1))
    opacity = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0, 0.3, 0.7]))
    colour = draw(st.tuples(*[st.integers(0, 255)] * 3))
    return h, w, boxes, seed, opacity, colour


@settings(max_examples=200, deadline=None)
@given(crop_cases())
def test_dynamic_crop_matches_reference(case):
    h, w, boxes, seed, opacity, colour_rgb = case
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    masks = rng.random((len(boxes), h, w)) > 0.5
    assert_matches_reference(image, boxes, masks, opacity, colour_rgb)


# --- The defaults users run, and edge values every property test draws (issue 16) -------------
# Black at opacity 1 is the README's, the demo's and the benchmark's setting, and it takes its own
# fast path (a masked copy into a zero-filled array): a random colour almost never draws it.

EDGE_COLOURS = [(0, 0, 0), (255, 255, 255)]
EDGE_OPACITIES = [0.0, 1.0]


@pytest.mark.parametrize("colour_rgb", [(0, 0, 0), "#000000", (255, 255, 255), (3, 200, 77)])
def test_black_and_white_background_at_opacity_1_match_the_reference(colour_rgb):
    rng = np.random.default_rng(16)
    image = rng.integers(1, 256, (40, 50, 3), dtype=np.uint8)  # no pixel is already black
    boxes = [[0, 0, 50, 40], [5.5, 3.5, 30, 33], [-10, 20, 70, 60]]
    masks = rng.random((3, 40, 50)) > 0.5
    masks[2] = False  # an empty mask: the whole crop becomes the colour
    detections = Detections(xyxy=boxes, detection_id=["a", "b", "c"], mask=masks)
    crops = dynamic_crop(image, detections, 1.0, colour_rgb)
    bgr = (0, 0, 0) if colour_rgb == "#000000" else tuple(colour_rgb[::-1])
    expected = reference_dynamic_crop(image, boxes, masks, 1.0, bgr)
    for crop, (pixels, offset), mask in zip(crops, expected, masks, strict=True):
        np.testing.assert_array_equal(crop.image, pixels)
        assert crop.offset == offset
        x0, y0 = offset
        h, w = pixels.shape[:2]
        inside = mask[y0 : y0 + h, x0 : x0 + w]
        # the object keeps its pixels; everything else is exactly the colour
        np.testing.assert_array_equal(crop.image[inside], image[y0 : y0 + h, x0 : x0 + w][inside])
        assert (crop.image[~inside] == bgr).all()


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_remove_background_black_at_opacity_1_keeps_the_object(channels):
    rng = np.random.default_rng(channels)
    crop = rng.integers(1, 256, (9, 11, channels), dtype=np.uint8)
    mask = rng.random((9, 11)) > 0.4
    out = remove_background(crop, mask, 1.0, (0, 0, 0))
    expected = np.where(mask[..., None], crop, 0).astype(np.uint8)
    if channels == 4:
        expected[..., 3] = crop[..., 3]  # alpha is the crop's own
    np.testing.assert_array_equal(out, expected)
    # the full mask keeps everything, the empty mask keeps nothing but alpha
    np.testing.assert_array_equal(remove_background(crop, np.ones((9, 11), bool), 1.0, (0, 0, 0)),
                                  crop)
    assert (remove_background(crop, np.zeros((9, 11), bool), 1.0, (0, 0, 0))[..., :3] == 0).all()


@st.composite
def edge_crop_cases(draw):
    """Like ``crop_cases``, but every draw may land on an edge value, and often does."""
    h, w = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    n = draw(st.integers(0, 4))
    coordinate = st.one_of(
        st.sampled_from([0.0, -0.5, 0.5, float(w), float(h)]),
        st.floats(-20, 40, allow_nan=False).map(lambda v: round(v * 2) / 2),
    )
    boxes = draw(st.lists(st.tuples(*[coordinate] * 4), min_size=n, max_size=n))
    seed = draw(st.integers(0, 2**32 - 1))
    # one flat choice per axis: st.one_of would favour its first branch and rarely pair black
    # with a partial opacity
    opacity = draw(st.sampled_from([*EDGE_OPACITIES, 0.25, 0.5, 0.3, 0.7]))
    colour = draw(st.sampled_from([*EDGE_COLOURS, None]))
    if colour is None:
        colour = draw(st.tuples(*[st.integers(0, 255)] * 3))
    mask_kind = draw(st.sampled_from(["empty", "full", "random"]))
    return h, w, boxes, seed, opacity, colour, mask_kind


def edge_case_arrays(h, w, n, seed, mask_kind):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    masks = {"empty": np.zeros((n, h, w), bool), "full": np.ones((n, h, w), bool),
             "random": rng.random((n, h, w)) > 0.5}[mask_kind]
    return image, masks


@settings(max_examples=200, deadline=None)
@given(edge_crop_cases())
@example((12, 10, [[0.0, 0.0, 10.0, 12.0], [2.5, 1.5, 7.5, 9.5]], 3, 1.0, (0, 0, 0), "random"))
@example((12, 10, [[0.0, 0.0, 10.0, 12.0]], 4, 1.0, (0, 0, 0), "empty"))
@example((12, 10, [[0.0, 0.0, 10.0, 12.0]], 5, 1.0, (0, 0, 0), "full"))
@example((12, 10, [[1.0, 1.0, 9.0, 11.0]], 6, 1.0, (255, 255, 255), "random"))
@example((12, 10, [[1.0, 1.0, 9.0, 11.0]], 7, 0.0, (0, 0, 0), "random"))
@example((12, 10, [[1.0, 1.0, 9.0, 11.0]], 10, 0.5, (0, 0, 0), "random"))
@example((12, 10, [[1.0, 1.0, 9.0, 11.0]], 11, 0.25, (255, 255, 255), "empty"))
@example((12, 10, [[-5.0, -5.0, 30.0, 30.0]], 8, 0.5, (255, 255, 255), "empty"))
@example((12, 10, [], 9, 1.0, (0, 0, 0), "random"))
def test_dynamic_crop_matches_reference_on_edge_values(case):
    h, w, boxes, seed, opacity, colour_rgb, mask_kind = case
    image, masks = edge_case_arrays(h, w, len(boxes), seed, mask_kind)
    assert_matches_reference(image, boxes, masks, opacity, colour_rgb)


# --- Behaviour the mutation run found unchecked (issue 16) ------------------------------------


def test_remove_background_at_opacity_0_returns_the_same_array():
    crop = np.full((4, 5, 3), 9, np.uint8)
    assert remove_background(crop, np.zeros((4, 5), bool), 0.0, (1, 2, 3)) is crop


def test_remove_background_of_an_empty_crop_is_that_crop():
    crop = np.zeros((0, 5, 3), np.uint8)
    assert remove_background(crop, np.zeros((0, 5), bool), 0.5, (1, 2, 3)) is crop


def test_remove_background_keeps_a_single_channel_axis():
    crop = np.full((3, 4, 1), 100, np.uint8)
    out = remove_background(crop, np.zeros((3, 4), bool), 0.5, (200, 200, 200))
    assert out.shape == (3, 4, 1) and (out == 150).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.zeros((3, 3, 3), np.uint8), np.zeros((2, 2), bool), 0.5, (0, 0, 0)),
         r"^mask shape \(2, 2\) does not match crop shape \(3, 3\)$"),
        ((np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3), bool), 1.5, (0, 0, 0)),
         r"^mask_opacity must be within \[0, 1\], got 1\.5$"),
        ((np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3), bool), -0.25, (0, 0, 0)),
         r"^mask_opacity must be within \[0, 1\], got -0\.25$"),
        ((np.zeros((3, 3, 2), np.uint8), np.zeros((3, 3), bool), 0.5, (0, 0, 0)),
         r"^background removal needs 1, 3 or 4 channels, got 2$"),
        # OpenCV would narrow 64-bit integers to int32 (3e9 became -1294967296)
        ((np.zeros((3, 3, 3), np.int64), np.zeros((3, 3), bool), 0.5, (0, 0, 0)),
         r"^background removal supports images of uint8, int8, uint16, int16, uint32, int32, "
         r"float16, float32, float64; got int64$"),
        ((np.zeros((3, 3), np.uint64), np.zeros((3, 3), bool), 1.0, (9, 9, 9)),
         r"; got uint64$"),
        ((np.zeros((3, 3), bool), np.zeros((3, 3), bool), 1.0, (9, 9, 9)), r"; got bool$"),
    ],
)
def test_remove_background_rejects(args, message):
    with pytest.raises(ValueError, match=message):
        remove_background(*args)


@pytest.mark.parametrize("dtype", [">u2", ">i4", ">f4", ">f8", "<u2", "<f4"])
@pytest.mark.parametrize("opacity", [0.5, 1.0])
@pytest.mark.parametrize("colour", [(0, 0, 0), (200, 100, 50)])
def test_remove_background_reads_either_byte_order(dtype, opacity, colour):
    native = np.arange(2 * 3 * 3).reshape(2, 3, 3).astype(np.dtype(dtype).newbyteorder("="))
    mask = np.array([[True, False, True], [False, True, False]])
    expected = remove_background(native, mask, opacity, colour)
    got = remove_background(native.astype(dtype), mask, opacity, colour)
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got[mask], native[mask])  # the object's pixels as they were


def test_remove_background_saturates_the_colour_to_the_dtype():
    crop = np.full((2, 2, 3), -5, np.int8)
    mask = np.array([[True, False], [False, False]])
    out = remove_background(crop, mask, 1.0, (255, 0, 255))
    assert out[0, 0].tolist() == [-5, -5, -5]
    assert out[1, 1].tolist() == [127, 0, 127]  # 255 saturates; it used to wrap to -1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_remove_background_at_full_opacity_is_the_colour_even_over_nan_and_inf(dtype):
    # 1 * colour + 0 * pixel would be NaN where the pixel is NaN or infinite
    crop = np.array([[[np.nan, np.inf, -np.inf], [1, np.nan, 3]]], dtype)
    mask = np.array([[False, True]])
    for colour in ((10, 20, 30), (0, 0, 0)):
        out = remove_background(crop, mask, 1.0, colour)
        np.testing.assert_array_equal(out, np.array([[colour, [1, np.nan, 3]]], dtype))
        assert out.dtype == dtype


@pytest.mark.parametrize("mask_dtype", [np.uint8, np.int16, np.int64, np.float64])
def test_remove_background_takes_above_zero_of_any_mask_dtype_as_the_object(mask_dtype):
    # Roboflow's overlay keeps np.where(mask > 0): negative values and NaN are background
    crop = np.full((2, 4, 3), 40, np.uint8)
    values = [[0, 1, 0, -1 if mask_dtype is not np.uint8 else 0],
              [256 if mask_dtype is np.int16 else 2, 0, 0, 0]]
    mask = np.array(values, mask_dtype)
    if mask_dtype is np.float64:
        mask[1, 3] = np.nan
    for opacity in (0.5, 1.0):
        out = remove_background(crop, mask, opacity, (200, 200, 200))
        np.testing.assert_array_equal(out, remove_background(crop, mask > 0, opacity,
                                                             (200, 200, 200)))
        assert (out[mask > 0] == 40).all() and (out[~(mask > 0)] != 40).all()
    detections = Detections(xyxy=[[0, 0, 4, 2]], mask=mask[None], detection_id=["a"])
    assert detections.mask.dtype == bool
    np.testing.assert_array_equal(detections.mask[0], mask > 0)


def test_dynamic_crop_cuts_an_rle_mask_into_the_crop_frame_like_a_dense_one():
    from cropcore import MASK_RLE, encode_rle

    mask = np.zeros((20, 30), bool)
    mask[5:10, 8:12] = True
    image = np.full((20, 30, 3), 200, np.uint8)
    rles = np.empty(1, dtype=object)
    rles[0] = encode_rle(mask)
    common = {"xyxy": [[6, 4, 14, 12]], "detection_id": ["a"]}
    (dense,) = dynamic_crop(image, Detections(**common, mask=mask[None]), 1.0)
    (rle,) = dynamic_crop(image, Detections(**common, data={MASK_RLE: rles}), 1.0)
    np.testing.assert_array_equal(rle.image, dense.image)
    assert rle.detections.data[MASK_RLE][0] == encode_rle(dense.detections.mask[0])
    assert rle.detections.data[MASK_RLE][0]["size"] == [8, 8]
    root = rle.detections_in_root().data[MASK_RLE][0]
    assert root == encode_rle(dense.detections_in_root().mask[0])


def test_dynamic_crop_default_opacity_leaves_masked_crops_unchanged():
    image = np.full((6, 6, 3), 80, np.uint8)
    detections = Detections(xyxy=[[0, 0, 6, 6]], detection_id=["a"],
                            mask=np.zeros((1, 6, 6), bool))
    (crop,) = dynamic_crop(image, detections)  # mask_opacity defaults to 0
    assert (crop.image == 80).all()


def test_dynamic_crop_error_messages_say_what_was_received():
    with pytest.raises(ValueError, match=r"got ndarray with shape \(2, 2, 2, 2\)$"):
        dynamic_crop(np.zeros((2, 2, 2, 2), np.uint8), Detections.empty())
    with pytest.raises(ValueError, match=r"^dynamic_crop needs detection ids: "
                                         r"detections\.detection_id is None$"):
        dynamic_crop(np.zeros((4, 4, 3), np.uint8), Detections(xyxy=[[0, 0, 1, 1]]))


def test_dynamic_crop_reports_a_bad_opacity_before_looking_at_boxes_and_masks():
    image = np.zeros((4, 4, 3), np.uint8)
    detections = Detections(xyxy=[[np.nan, 0, 1, 1]], detection_id=["a"],
                            mask=np.zeros((1, 3, 3), bool))
    with pytest.raises(ValueError, match=r"^mask_opacity must be within \[0, 1\], got 1\.5$"):
        dynamic_crop(image, detections, 1.5)


def blend_reference(crop, mask, opacity, colour):
    fill = np.empty_like(crop)
    fill[:] = colour
    return cv2.addWeighted(np.where(mask[..., None], crop, fill), opacity, crop, 1 - opacity, 0)


@pytest.mark.parametrize(
    "sequence",
    [
        # each crop after the first needs the cached canvas to grow in one direction
        [((2, 50, 3), np.uint8), ((50, 2, 3), np.uint8), ((60, 60, 3), np.uint8)],
        [((50, 2, 3), np.uint8), ((10, 3, 3), np.uint8)],  # 1 column wider, fewer rows
        [((50, 5, 3), np.uint8), ((10, 40, 3), np.uint8)],  # much wider, fewer rows
        [((5, 50, 3), np.uint8), ((6, 10, 3), np.uint8)],  # 1 row taller, narrower
        [((7, 9, 3), np.uint8), ((7, 9, 3), np.uint16)],  # same colour, another dtype
    ],
)
def test_remove_background_reuses_its_cached_background_across_shapes_and_dtypes(sequence):
    """The constant background is cached per (dtype, colour) and grown on demand."""
    from cropcore import dynamic

    dynamic._BACKGROUNDS.clear()
    rng = np.random.default_rng(5)
    for shape, dtype in sequence:
        crop = rng.integers(0, 200, shape).astype(dtype)
        mask = rng.random(shape[:2]) > 0.5
        out = remove_background(crop, mask, 0.5, (40, 90, 250))
        assert out.dtype == crop.dtype and out.shape == crop.shape
        np.testing.assert_array_equal(out, blend_reference(crop, mask, 0.5, (40, 90, 250)))
    # the cached canvas is read-only: no caller can corrupt the next crop's background
    for canvas in dynamic._BACKGROUNDS.values():
        with pytest.raises(ValueError, match="read-only"):
            canvas[0, 0, 0] = 1


@pytest.mark.parametrize(("data", "polygons", "match"), [
    ({"mask_rle": [{"size": [5, 5], "counts": "!!"}]}, None, r"mask size \[5, 5\] does not match"),
    (None, [np.array([[2.0, 3.0], [np.nan, 4.0], [9.0, 9.0]])], r"polygon: .*finite"),
])
def test_dynamic_crop_raises_for_a_mask_it_cannot_use(data, polygons, match):
    # it used to return None, which the docstring keeps for empty windows only
    image = np.zeros((20, 30, 3), np.uint8)
    rles = None
    if data is not None:
        rles = np.empty(1, dtype=object)
        rles[:] = data["mask_rle"]
    detections = Detections(xyxy=[[2, 3, 17, 15]], detection_id=["d"], polygons=polygons,
                            data={"mask_rle": rles} if rles is not None else {})
    with pytest.raises(ValueError, match=rf"^detection 0 \('d'\): {match}"):
        dynamic_crop(image, detections, mask_opacity=1.0)
