"""absolute_static_crop / relative_static_crop: spec section 1 and 2 vectors, conventions and a
property test against a slow per-pixel reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cropcore import absolute_static_crop, relative_static_crop


def reference_absolute(image, x_center, y_center, width, height):
    """Literal reading of the spec: Python round, clamp, copy pixel by pixel."""
    h, w = image.shape[:2]
    x_min = round(x_center - width / 2)
    y_min = round(y_center - height / 2)
    x_max, y_max = x_min + width, y_min + height
    x_min, y_min, x_max, y_max = max(0, x_min), max(0, y_min), min(w, x_max), min(h, y_max)
    if x_max <= x_min or y_max <= y_min:
        return None
    rows = [[image[y, x] for x in range(x_min, x_max)] for y in range(y_min, y_max)]
    return np.array(rows, dtype=image.dtype), (x_min, y_min)


def reference_relative(image, x_center, y_center, width, height):
    h, w = image.shape[:2]
    return reference_absolute(
        image, round(w * x_center), round(h * y_center), round(w * width), round(h * height)
    )


IMAGE_100 = np.arange(100 * 100, dtype=np.int32).reshape(100, 100)


@pytest.mark.parametrize(
    ("center", "size", "rows", "cols"),
    [
        ((50, 60), (10, 20), (50, 70), (45, 55)),  # the basic case
        ((50, 50), (11, 11), (44, 55), (44, 55)),  # 44.5 rounds to 44 (half to even)
        ((51, 51), (11, 11), (46, 57), (46, 57)),  # 45.5 rounds to 46 (half to even)
        ((95, 95), (20, 20), (85, 100), (85, 100)),  # clamped at the bottom-right
        ((50, 50), (1000, 1000), (0, 100), (0, 100)),  # larger than the image: all of it
    ],
)
def test_absolute_static_crop_spec_vectors(center, size, rows, cols):
    crop = absolute_static_crop(IMAGE_100, *center, *size)
    np.testing.assert_array_equal(crop.image, IMAGE_100[rows[0] : rows[1], cols[0] : cols[1]])
    assert crop.offset == (cols[0], rows[0])
    assert crop.window == (cols[0], rows[0], cols[1], rows[1])
    assert crop.parent_size == (100, 100)


def test_absolute_static_crop_clamps_top_left_corner():
    image = np.zeros((100, 100), dtype=np.uint8)
    image[:10, :20] = 1
    crop = absolute_static_crop(image, 0, 0, 20, 40)
    assert crop.image.shape == (20, 10)
    assert crop.offset == (0, 0)


def test_absolute_static_crop_outside_is_none():
    assert absolute_static_crop(IMAGE_100, -50, -50, 20, 20) is None


def test_absolute_static_crop_non_square_image():
    image = np.random.default_rng(0).integers(0, 255, (424, 640, 3), dtype=np.uint8)
    crop = absolute_static_crop(image, 320, 212, 320, 212)
    np.testing.assert_array_equal(crop.image, image[106:318, 160:480])


def test_absolute_static_crop_is_a_view():
    crop = absolute_static_crop(IMAGE_100, 50, 50, 10, 10)
    assert np.shares_memory(crop.image, IMAGE_100)


@pytest.mark.parametrize(
    ("image", "params", "rows", "cols"),
    [
        (np.zeros((101, 101)), (0.5, 0.5, 0.5, 0.5), (25, 75), (25, 75)),
        (np.zeros((100, 100)), (0.95, 0.95, 0.2, 0.2), (85, 100), (85, 100)),
        # the reference returns None here (no clamping); we return the visible 10x10 part
        (np.zeros((100, 100)), (0.0, 0.0, 0.2, 0.2), (0, 10), (0, 10)),
    ],
)
def test_relative_static_crop_spec_vectors(image, params, rows, cols):
    crop = relative_static_crop(image, *params)
    assert crop.window == (cols[0], rows[0], cols[1], rows[1])


def test_convention_windows_are_half_open():
    crop = absolute_static_crop(IMAGE_100, 5, 5, 2, 2)
    assert crop.window == (4, 4, 6, 6)
    assert crop.image.shape == (2, 2)  # columns 4 and 5, not 6


def test_convention_round_half_to_even():
    # 10.5 -> 10 and 11.5 -> 12: ties go to the even neighbour, never truncated or rounded up
    assert absolute_static_crop(IMAGE_100, 11, 11, 1, 1).offset == (10, 10)
    assert absolute_static_crop(IMAGE_100, 12, 12, 1, 1).offset == (12, 12)


def test_static_crop_rejects_non_image():
    with pytest.raises(ValueError, match="H x W or H x W x C array, got list"):
        absolute_static_crop([[1, 2]], 0, 0, 1, 1)
    with pytest.raises(ValueError, match=r"shape \(2, 2, 2, 2\)"):
        relative_static_crop(np.zeros((2, 2, 2, 2)), 0.5, 0.5, 0.5, 0.5)


@settings(max_examples=300, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    xc=st.integers(-60, 100),
    yc=st.integers(-60, 100),
    cw=st.integers(1, 80),
    ch=st.integers(1, 80),
)
def test_absolute_static_crop_matches_reference(h, w, xc, yc, cw, ch):
    image = np.arange(h * w * 2, dtype=np.int64).reshape(h, w, 2)
    expected = reference_absolute(image, xc, yc, cw, ch)
    crop = absolute_static_crop(image, xc, yc, cw, ch)
    if expected is None:
        assert crop is None
    else:
        np.testing.assert_array_equal(crop.image, expected[0])
        assert crop.offset == expected[1]


@settings(max_examples=300, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    params=st.tuples(*[st.floats(0, 1) for _ in range(4)]),
)
def test_relative_static_crop_matches_reference(h, w, params):
    image = np.arange(h * w, dtype=np.int64).reshape(h, w)
    expected = reference_relative(image, *params)
    crop = relative_static_crop(image, *params)
    if expected is None:
        assert crop is None
    else:
        np.testing.assert_array_equal(crop.image, expected[0])
        assert crop.offset == expected[1]


@pytest.mark.parametrize(
    ("center", "size"),
    [
        ((-10**30, 50), (10**31, 10)),  # a centre far left, a width that reaches back across
        ((9 * 10**18, 50), (18 * 10**18 + 200, 10)),  # the sum lands on the image exactly
        ((50, 50), (10**20, 10)),  # beyond int64: this used to overflow to an empty window
        ((50, 50), (2**62, 10)),
    ],
)
def test_absolute_static_crop_huge_values_give_the_spec_window(center, size):
    image = np.arange(100 * 100).reshape(100, 100)
    crop = absolute_static_crop(image, *center, *size)
    expected, offset = reference_absolute(image, *center, *size)
    np.testing.assert_array_equal(crop.image, expected)
    assert crop.offset == offset


def test_relative_static_crop_huge_fractions_give_the_spec_window():
    image = np.arange(10 * 20).reshape(10, 20)
    crop = relative_static_crop(image, 0.5, 0.5, 1e20, 0.2)
    assert crop.window == reference_relative_window(20, 10, 0.5, 0.5, 1e20, 0.2)


def reference_relative_window(w, h, x_center, y_center, width, height):
    x_min = round(round(w * x_center) - round(w * width) / 2)
    y_min = round(round(h * y_center) - round(h * height) / 2)
    x_max, y_max = x_min + round(w * width), y_min + round(h * height)
    return max(0, x_min), max(0, y_min), min(w, x_max), min(h, y_max)


def test_crop_window_takes_a_1_by_4_window_row():
    from cropcore.static import crop_window

    image = np.arange(48, dtype=np.uint8).reshape(6, 8)
    crop = crop_window(image, np.array([[1, 2, 5, 4]]))
    assert crop.window == (1, 2, 5, 4)
    np.testing.assert_array_equal(crop.image, image[2:4, 1:5])
