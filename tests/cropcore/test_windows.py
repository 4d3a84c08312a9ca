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
