"""windows: rounding half to even, clamping and emptiness, vectorized over boxes."""

import numpy as np
import pytest

from cropcore.windows import (
    absolute_windows,
    clamp_windows,
    empty_windows,
    relative_windows,
    round_half_even,
    windows_from_xyxy,
)


def test_convention_round_half_to_even():
    rounded = round_half_even([44.5, 45.5, -0.5, 1.5, 2.4999])
    np.testing.assert_array_equal(rounded, [44, 46, 0, 2, 2])


def test_round_rejects_non_finite():
    with pytest.raises(ValueError, match="coordinates must be finite"):
        round_half_even([1.0, np.nan])


def test_clamp_and_empty():
    windows = clamp_windows([[-5, -5, 5, 5], [8, 8, 20, 20], [12, 0, 15, 3]], (10, 10))
    np.testing.assert_array_equal(windows, [[0, 0, 5, 5], [8, 8, 10, 10], [10, 0, 10, 3]])
    np.testing.assert_array_equal(empty_windows(windows), [False, False, True])


def test_windows_from_xyxy_vectorized():
    boxes = np.array([[0.5, 1.5, 2.5, 3.5], [-3, -3, -1, -1]])
    np.testing.assert_array_equal(windows_from_xyxy(boxes, (10, 10)), [[0, 2, 2, 4], [0, 0, 0, 0]])
    assert windows_from_xyxy(np.empty((0, 4)), (10, 10)).shape == (0, 4)


def test_absolute_and_relative_windows_broadcast():
    np.testing.assert_array_equal(
        absolute_windows([50, 51], 50, 11, 11, (100, 100)), [[44, 44, 55, 55], [46, 44, 57, 55]]
    )
    np.testing.assert_array_equal(
        relative_windows(0.5, 0.5, 0.5, 0.5, (101, 101)), [[25, 25, 75, 75]]
    )


# --- Behaviour the mutation run found unchecked (issue 16) ------------------------------------


def test_round_half_even_returns_int64_and_names_the_non_finite_values():
    rounded = round_half_even(np.array([0.5, 1.5, -0.5, 2.4999], dtype=np.float32))
    assert rounded.dtype == np.int64
    np.testing.assert_array_equal(rounded, [0, 2, 0, 2])
    with pytest.raises(ValueError, match=r"coordinates must be finite, got \[nan\]$"):
        round_half_even([1.0, np.nan, 2.0])
    # at most four of them are shown
    with pytest.raises(ValueError, match=r"got \[ inf -inf  nan  inf\]$"):
        round_half_even([np.inf, -np.inf, np.nan, np.inf, np.nan, 3.0])


def test_clamp_windows_returns_a_new_int64_array_and_leaves_its_input_alone():
    windows = np.array([[-5, -5, 50, 50]], dtype=np.int64)
    clamped = clamp_windows(windows, (10, 20))
    np.testing.assert_array_equal(clamped, [[0, 0, 10, 20]])
    np.testing.assert_array_equal(windows, [[-5, -5, 50, 50]])  # not clamped in place
    assert clamp_windows([[1.0, 2.0, 3.0, 4.0]], (10, 10)).dtype == np.int64


def test_relative_windows_vectorized_over_several_boxes():
    np.testing.assert_array_equal(
        relative_windows([0.5, 0.0], 0.5, [0.5, 0.2], 0.5, (100, 100)),
        [[25, 25, 75, 75], [0, 25, 10, 75]],
    )


def test_windows_from_xyxy_names_the_non_finite_coordinates():
    with pytest.raises(ValueError, match=r"^coordinates must be finite, got \[nan\]$"):
        windows_from_xyxy([[1.0, np.nan, 3.0, 4.0]], (10, 10))
    with pytest.raises(ValueError, match=r"got \[ inf -inf  nan  inf\]$"):
        windows_from_xyxy([[np.inf, -np.inf, np.nan, np.inf], [np.nan, 0, 1, 1]], (10, 10))


def test_convention_huge_coordinates_are_limited_before_rounding():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflowing float -> int64 cast warns
        windows = windows_from_xyxy([[-1e300, -1e300, 1e300, 1e300], [-1e300, 2, -1e200, 5]],
                                    (10, 8))
    np.testing.assert_array_equal(windows, [[0, 0, 10, 8], [0, 2, 0, 5]])


def test_windows_from_xyxy_on_one_pixel_images_limits_far_coordinates_to_the_image():
    # Boxes reaching past a 1 x 1 (and 2 x 1) image still clamp to the whole image, not to
    # an empty window at the origin.
    boxes = [[-5.0, -5.0, 5.0, 5.0], [0.0, 0.0, 1.0, 1.0], [-3.0, 0.0, 0.4, 9.0]]
    np.testing.assert_array_equal(windows_from_xyxy(boxes, (1, 1)),
                                  [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]])
    np.testing.assert_array_equal(windows_from_xyxy(boxes, (2, 1)),
                                  [[0, 0, 2, 1], [0, 0, 1, 1], [0, 0, 0, 1]])


@pytest.mark.parametrize("size_wh", [(10, 1), (1, 10), (40, 3), (3, 40)])
def test_windows_from_xyxy_limit_follows_the_longer_side(size_wh):
    # A box over the whole of a long, thin image keeps the whole image along both sides.
    width, height = size_wh
    boxes = [[0.0, 0.0, width, height], [-1e9, -1e9, 1e9, 1e9]]
    np.testing.assert_array_equal(windows_from_xyxy(boxes, size_wh), [[0, 0, width, height]] * 2)


def test_absolute_and_relative_windows_name_at_most_four_non_finite_values():
    message = r"^coordinates must be finite, got \[ nan  inf -inf  nan\]$"
    centres = [np.nan, np.inf, -np.inf, np.nan, np.inf, 0.5]
    with pytest.raises(ValueError, match=message):
        absolute_windows(centres, 5, 2, 2, (10, 10))
    with pytest.raises(ValueError, match=message):
        relative_windows(centres, 0.5, 0.2, 0.2, (10, 10))


def test_relative_windows_scale_float32_fractions_as_their_exact_values():
    # float32 0.6025 is 0.602500021...: 602.500021 pixels of 1000, which round up to 603; a
    # float32 product would be 602.5, which rounds (half to even) to 602
    x = np.float32(0.6025)
    assert np.round(np.float32(1000) * x) == 602
    fifth, half = np.float32(0.2), np.float32(0.5)
    windows = relative_windows(np.array([x]), np.array([half]), np.array([fifth]),
                               np.array([fifth]), (1000, 1000))
    np.testing.assert_array_equal(windows, [[503, 400, 703, 600]])


def test_relative_windows_flatten_each_argument_before_broadcasting():
    # like absolute_windows: a (2, 1) column and a (2,) row pair up, they do not make 2 x 2
    flat = relative_windows([0.2, 0.5], 0.5, [0.2, 0.4], 0.5, (100, 100))
    np.testing.assert_array_equal(flat, [[10, 25, 30, 75], [30, 25, 70, 75]])
    column = np.array([[0.2], [0.5]])
    np.testing.assert_array_equal(relative_windows(column, 0.5, np.array([0.2, 0.4]), 0.5,
                                                   (100, 100)), flat)
    np.testing.assert_array_equal(absolute_windows(column * 100, 50, np.array([20, 40]), 50,
                                                   (100, 100)), flat)


def test_absolute_windows_limit_far_values_on_both_sides_before_the_int64_cast():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflowing float -> int64 cast warns
        windows = absolute_windows([-1e20, 1e20, 5.0], [5.0, 5.0, -1e300], [10.0, 10.0, 1e300],
                                   10.0, (10, 8))
    np.testing.assert_array_equal(windows, [[0, 0, 0, 8], [10, 0, 10, 8], [0, 0, 10, 0]])


def test_far_coordinates_stay_exact_on_a_side_near_the_int64_limit():
    # 2 * side + 2 still fits int64 for a side of 4e18 (3 * side would not)
    import warnings

    side = 4 * 10**18
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(absolute_windows(0.0, 0.0, 1e30, 1.0, (side, 1)),
                                      [[0, 0, side, 1]])
        np.testing.assert_array_equal(windows_from_xyxy([[-1e30, 0.0, 1e30, 1.0]], (side, 1)),
                                      [[0, 0, side, 1]])
