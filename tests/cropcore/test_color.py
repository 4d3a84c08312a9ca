"""parse_color: RGB in, BGR out, every accepted form and every rejected one."""

import numpy as np
import pytest

from cropcore import parse_color


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("#ff000A", (10, 0, 255)),  # #RRGGBB, case-insensitive
        ("#f0A", (170, 0, 255)),  # #RGB: digits doubled
        ("(255, 0, 128)", (128, 0, 255)),  # "(r, g, b)" string
        ((255, 0, 0), (0, 0, 255)),  # tuple
        ([0, 128, 255], (255, 128, 0)),  # list
        ((0, 0, 0), (0, 0, 0)),  # the default
        ((np.int64(255), np.int64(0), np.int64(9)), (9, 0, 255)),  # NumPy integers
        (list(np.array([1, 2, 255], np.uint8)), (255, 2, 1)),  # the elements of a uint8 array
    ],
)
def test_parse_color_accepted_forms(value, expected):
    got = parse_color(value)
    assert got == expected
    assert all(type(v) is int for v in got)


def test_convention_rgb_in_bgr_out():
    blue, green, red = parse_color("#ff0000")
    assert (blue, green, red) == (0, 0, 255)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ((1, 2, 3, 4), "exactly 3 ints"),  # 4-tuple
        ("#invalid", "must be '#RRGGBB'"),  # not hex
        ("(255, 0, a)", "must be '#RRGGBB'"),  # not a number
        ("invalid", "must be '#RRGGBB'"),  # no form at all
        ((256, 0, 0), r"within 0\.\.255"),  # out of range (the reference does not check)
        ("(300, 0, 0)", r"within 0\.\.255"),
        ((1.5, 0, 0), "exactly 3 ints"),  # floats
        (None, "got NoneType"),
    ],
)
def test_parse_color_rejects(value, message):
    with pytest.raises(ValueError, match=message):
        parse_color(value)


def test_parse_color_names_the_type_it_received():
    with pytest.raises(ValueError, match=r"string or a tuple of 3 ints, got float: 1\.5$"):
        parse_color(1.5)
