"""masks: COCO RLE decode (whole and windowed) and encode, polygon rasterization."""

import warnings

import cv2
import numpy as np
import pycocotools.mask
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cropcore.masks
from cropcore.masks import POLYGON_STYLES, cut_rle, decode_rle, encode_rle, polygon_to_mask

# pycocotools' decode trips a NumPy 2 deprecation in its own code; only the tests call it.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


# --- slow, obviously-correct references ------------------------------------------------------


def reference_parse_counts(counts: str) -> list[int]:
    """pycocotools' rleFrString, one character at a time."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x -= 1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def reference_decode(rle: dict) -> np.ndarray:
    """Expand runs pixel by pixel in column-major order."""
    h, w = rle["size"]
    counts = rle["counts"]
    runs = reference_parse_counts(counts) if isinstance(counts, str) else list(counts)
    flat: list[bool] = []
    for i, n in enumerate(runs):
        flat.extend([i % 2 == 1] * n)
    assert len(flat) == h * w
    mask = np.zeros((h, w), dtype=bool)
    for index, value in enumerate(flat):
        mask[index % h, index // h] = value
    return mask


def reference_polygon(polygon: np.ndarray, h: int, w: int) -> np.ndarray:
    """Even-odd point-in-polygon test at every pixel centre, edges included right/bottom."""
    mask = np.zeros((h, w), dtype=bool)
    n = len(polygon)
    for row in range(h):
        yc = row + 0.5
        for col in range(w):
            xc = col + 0.5
            inside = False
            for i in range(n):
                x0, y0 = polygon[i]
                x1, y1 = polygon[(i + 1) % n]
                if min(y0, y1) < yc <= max(y0, y1):
                    x_cross = x0 + (yc - y0) * (x1 - x0) / (y1 - y0)
                    if x_cross < xc:
                        inside = not inside
            mask[row, col] = inside
    return mask


def reference_line_8(p0: tuple[int, int], p1: tuple[int, int]) -> list[tuple[int, int]]:
    """OpenCV's 8-connected line (Bresenham), always walked left to right: the points
    ``(x, y)`` it paints. The error term starts at ``major - 2 * minor`` and a diagonal step is
    taken while it is negative, which fixes how ties round."""
    (x0, y0), (x1, y1) = (p0, p1) if p0[0] <= p1[0] else (p1, p0)
    step_y = 1 if y1 >= y0 else -1
    run, rise = x1 - x0, abs(y1 - y0)
    steep = rise > run
    major, minor = (rise, run) if steep else (run, rise)
    err = major - 2 * minor
    x, y, points = x0, y0, []
    for _ in range(major + 1):
        points.append((x, y))
        if err < 0:  # diagonal: both coordinates move
            err += 2 * major - 2 * minor
            x, y = x + 1, y + step_y
        else:  # along the major axis only
            err -= 2 * minor
            if steep:
                y += step_y
            else:
                x += 1
    return points


def reference_polygon_roboflow(polygon: np.ndarray, h: int, w: int) -> np.ndarray:
    """Roboflow's polygon mask for vertices inside the mask, one row at a time: vertices
    truncated towards zero; every row ``y`` crossed by an edge (top row included, bottom row
    excluded) filled between pairs of crossings, ``ceil(left)..floor(right)``, with the crossing
    computed as OpenCV does in 16.16 fixed point (slope truncated towards zero); then every
    edge's 8-connected line painted on top."""
    mask = np.zeros((h, w), dtype=bool)
    points = [(int(x), int(y)) for x, y in polygon]  # int() truncates towards zero
    if len(points) < 3:
        return mask
    one = 1 << 16
    edges = []
    for (xa, ya), (xb, yb) in zip(points, points[1:] + points[:1], strict=True):
        if ya == yb:
            continue
        (xt, yt), (xe, ye) = ((xa, ya), (xb, yb)) if ya < yb else ((xb, yb), (xa, ya))
        slope = abs((xe - xt) * one) // (ye - yt) * (1 if xe >= xt else -1)
        edges.append((yt, ye, xt * one, slope))
    for y in range(h):
        crossings = sorted(x + (y - y_top) * slope for y_top, y_end, x, slope in edges
                           if y_top <= y < y_end)
        for left, right in zip(crossings[::2], crossings[1::2], strict=False):
            first, last = -(-left // one), right // one
            for x in range(max(first, 0), min(last, w - 1) + 1):
                mask[y, x] = True
    for a, b in zip(points, points[1:] + points[:1], strict=True):
        for x, y in reference_line_8(a, b):
            if 0 <= x < w and 0 <= y < h:
                mask[y, x] = True
    return mask


def coco_encode(mask: np.ndarray) -> dict:
    return pycocotools.mask.encode(np.asfortranarray(mask, dtype=np.uint8))


def coco_decode(rle: dict) -> np.ndarray:
    return pycocotools.mask.decode(rle).astype(bool)


# --- strategies --------------------------------------------------------------------------------


@st.composite
def masks(draw, max_side: int = 24) -> np.ndarray:
    h = draw(st.integers(0, max_side))
    w = draw(st.integers(0, max_side))
    kind = draw(st.sampled_from(["random", "rectangle", "full", "empty"]))
    if kind == "random":
        return draw(hnp.arrays(bool, (h, w)))
    mask = np.full((h, w), kind == "full")
    if kind == "rectangle" and h and w:
        y0, y1 = sorted(draw(st.lists(st.integers(0, h), min_size=2, max_size=2)))
        x0, x1 = sorted(draw(st.lists(st.integers(0, w), min_size=2, max_size=2)))
        mask[y0:y1, x0:x1] = True
    return mask


@st.composite
def windows_in(draw, h: int, w: int) -> tuple[int, int, int, int]:
    x_min, x_max = sorted(draw(st.lists(st.integers(0, w), min_size=2, max_size=2)))
    y_min, y_max = sorted(draw(st.lists(st.integers(0, h), min_size=2, max_size=2)))
    return x_min, y_min, x_max, y_max


# --- decode_rle --------------------------------------------------------------------------------


def test_public_names():
    assert cropcore.masks.__all__ == [
        "POLYGON_STYLES", "cut_rle", "decode_rle", "encode_rle", "polygon_to_mask"
    ]


def test_convention_rle_is_column_major():
    # 2x3 mask with ones at (row 1, col 0) and (row 0, col 1): scanning columns top to bottom
    # gives 0 1 | 1 0 | 0 0, i.e. runs 1 zero, 2 ones, 3 zeros.
    mask = np.array([[0, 1, 0], [1, 0, 0]], dtype=bool)
    rle = {"size": [2, 3], "counts": [1, 2, 3]}
    np.testing.assert_array_equal(decode_rle(rle), mask)
    np.testing.assert_array_equal(coco_decode(pycocotools.mask.frPyObjects(rle, 2, 3)), mask)
    assert encode_rle(mask)["counts"] == coco_encode(mask)["counts"].decode()


def test_convention_window_is_half_open():
    mask = np.arange(20).reshape(4, 5) % 3 == 0
    rle = encode_rle(mask)
    window = decode_rle(rle, (1, 2, 4, 3))  # columns 1..3, row 2
    assert window.shape == (1, 3)
    np.testing.assert_array_equal(window, mask[2:3, 1:4])


def test_first_run_may_be_empty():
    # A mask starting with a one has a zero-length first run of zeros.
    rle = {"size": [2, 2], "counts": [0, 1, 3]}
    np.testing.assert_array_equal(decode_rle(rle), [[True, False], [False, False]])


@pytest.mark.parametrize(
    "window",
    [
        (0, 0, 7, 5),  # full window
        (3, 2, 3, 4),  # empty: no columns
        (1, 4, 6, 4),  # empty: no rows
        (0, 0, 0, 0),  # empty at the origin
        (7, 5, 7, 5),  # empty at the far corner
        (4, 3, 5, 4),  # one pixel
        (6, 4, 7, 5),  # the last pixel
        (2, 0, 3, 5),  # one full column
        (0, 1, 7, 2),  # one full row
    ],
)
def test_window_edge_cases(window):
    mask = np.random.default_rng(0).random((5, 7)) < 0.5
    x_min, y_min, x_max, y_max = window
    out = decode_rle(encode_rle(mask), window)
    assert out.dtype == bool
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, mask[y_min:y_max, x_min:x_max])


@pytest.mark.parametrize("size", [[0, 0], [0, 4], [4, 0]])
def test_masks_with_a_zero_side(size):
    mask = np.zeros(size, dtype=bool)
    rle = encode_rle(mask)
    assert rle == {"size": size, "counts": "0"}  # pycocotools writes one empty run
    assert decode_rle(rle).shape == tuple(size)
    assert decode_rle({"size": size, "counts": ""}).shape == tuple(size)
    assert decode_rle({"size": size, "counts": []}).shape == tuple(size)
    assert decode_rle(rle, (0, 0, size[1], size[0])).shape == tuple(size)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), mask=masks())
def test_windowed_decode_matches_pycocotools_and_reference(data, mask):
    h, w = mask.shape
    coco = coco_encode(mask)
    full = coco_decode(coco)
    window = data.draw(windows_in(h, w))
    x_min, y_min, x_max, y_max = window
    expected = full[y_min:y_max, x_min:x_max]

    as_str = {"size": [h, w], "counts": coco["counts"].decode()}
    as_list = {"size": [h, w], "counts": reference_parse_counts(as_str["counts"])}
    for rle in (coco, as_str, as_list):  # bytes, str and uncompressed counts
        np.testing.assert_array_equal(decode_rle(rle, window), expected)
    np.testing.assert_array_equal(decode_rle(as_str), full)
    np.testing.assert_array_equal(reference_decode(as_str), full)
    np.testing.assert_array_equal(reference_decode(as_list), full)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), mask=masks())
def test_cut_rle_matches_pycocotools_decode_slice_encode(data, mask):
    # The reference: pycocotools decodes the whole mask, NumPy slices the window, pycocotools
    # encodes the slice. cut_rle derives both from the runs under the window.
    h, w = mask.shape
    coco = coco_encode(mask)
    x_min, y_min, x_max, y_max = data.draw(windows_in(h, w))
    expected = coco_decode(coco)[y_min:y_max, x_min:x_max]
    expected_counts = coco_encode(expected)["counts"].decode()
    as_list = {"size": [h, w], "counts": reference_parse_counts(coco["counts"].decode())}
    for rle in (coco, as_list):
        window_mask, window_rle = cut_rle(rle, (x_min, y_min, x_max, y_max))
        np.testing.assert_array_equal(window_mask, expected)
        assert window_mask.dtype == bool and window_mask.flags.c_contiguous
        assert window_rle == {"size": [y_max - y_min, x_max - x_min], "counts": expected_counts}
    assert cut_rle(coco)[1] == {"size": [h, w], "counts": coco["counts"].decode()}


def test_cut_rle_on_a_1080p_mask_with_long_runs():
    yy, xx = np.mgrid[:1080, :1920]
    mask = ((xx - 960) / 300) ** 2 + ((yy - 540) / 200) ** 2 < 1
    for window in ((800, 400, 1102, 702), (0, 0, 1920, 1080), (1500, 0, 1920, 100)):
        x_min, y_min, x_max, y_max = window
        window_mask, window_rle = cut_rle(coco_encode(mask), window)
        np.testing.assert_array_equal(window_mask, mask[y_min:y_max, x_min:x_max])
        assert window_rle == encode_rle(mask[y_min:y_max, x_min:x_max])


def test_cut_rle_errors_match_decode_rle():
    with pytest.raises(ValueError, match=r"got 'p' at position 1"):
        cut_rle({"size": [1, 1], "counts": "1p"}, (0, 0, 1, 1))
    with pytest.raises(ValueError, match=r"sum to h \* w = 2 \* 3 = 6, got 3"):
        cut_rle({"size": [2, 3], "counts": "12"}, (0, 0, 1, 1))
    with pytest.raises(ValueError, match=r"must be non-negative, got \[-4\]"):
        cut_rle({"size": [2, 2], "counts": "211K"})


def test_uncompressed_counts_as_numpy_and_tuple():
    mask = np.random.default_rng(1).random((6, 9)) < 0.3
    runs = reference_parse_counts(encode_rle(mask)["counts"])
    for counts in (runs, tuple(runs), np.array(runs, dtype=np.int64), np.array(runs, np.uint32)):
        np.testing.assert_array_equal(decode_rle({"size": [6, 9], "counts": counts}), mask)


@pytest.mark.parametrize(
    "runs",
    [
        [2**31 - 5, 3, 2, 10**6, 2],  # runs needing 7-character numbers
        [0, 2**31, 2**20, 8],  # a huge first run of ones
        [5, 1, 2**30, 1, 2**30 + 7, 4],  # deltas far from zero in both directions
    ],
)
def test_large_run_lengths_parse_like_pycocotools(runs):
    # Two rows and a billion columns: only the windows we choose are ever expanded.
    h, w = 2, sum(runs) // 2
    coco = pycocotools.mask.frPyObjects({"size": [h, w], "counts": runs}, h, w)
    counts = coco["counts"].decode()
    assert reference_parse_counts(counts) == runs
    np.testing.assert_array_equal(cropcore.masks._parse_compressed_counts(coco["counts"]), runs)
    run_ends = np.cumsum(runs)
    for x_min in (0, w - 4, w // 2):
        window = decode_rle({"size": [h, w], "counts": counts}, (x_min, 0, x_min + 4, h))
        flat = (np.arange(x_min, x_min + 4)[None, :] * h + np.arange(h)[:, None]).ravel()
        expected = np.searchsorted(run_ends, flat, side="right") % 2 == 1
        np.testing.assert_array_equal(window, expected.reshape(h, 4))


def test_windowed_decode_on_a_1080p_mask():
    yy, xx = np.mgrid[:1080, :1920]
    mask = ((xx - 960) / 300) ** 2 + ((yy - 540) / 200) ** 2 < 1
    rle = coco_encode(mask)
    np.testing.assert_array_equal(decode_rle(rle, (800, 400, 1102, 702)), mask[400:702, 800:1102])
    np.testing.assert_array_equal(decode_rle(rle), mask)


BLANK_2X3 = {"size": [2, 3], "counts": [6]}


def _size_error(size):
    return {"size": size, "counts": ""}


@pytest.mark.parametrize(
    ("rle", "window", "match"),
    [
        ([1, 2], None, r"rle must be a dict with 'size' and 'counts', got list"),
        ({"counts": ""}, None, r"rle must be a dict with 'size' and 'counts', got \['counts'\]"),
        (_size_error([2]), None, r"rle\['size'\] must be two non-negative ints"),
        (_size_error([2, -1]), None, r"rle\['size'\] must be two non-negative ints .*-1"),
        (_size_error([2.0, 3]), None, r"rle\['size'\] must be two non-negative ints"),
        (_size_error([True, 3]), None, r"rle\['size'\] must be two non-negative ints"),
        (_size_error("ab"), None, r"rle\['size'\] must be \[height, width\], got 'ab'"),
        (_size_error(None), None, r"rle\['size'\] must be \[height, width\], got None"),
        ({"size": [1, 1], "counts": 5}, None, r"rle\['counts'\] must be .* got int"),
        ({"size": [1, 1], "counts": "é"}, None, r"must be ASCII characters '0'..'o'"),
        ({"size": [1, 1], "counts": "1 "}, None, r"characters '0'..'o' .* got ' ' at position 1"),
        ({"size": [1, 1], "counts": "1p"}, None, r"got 'p' at position 1"),
        ({"size": [9, 9], "counts": "1Q"}, None, r"end in the middle of a number"),
        ({"size": [9, 9], "counts": "Q" * 7 + "1"}, None, r"a number of 8 characters, at most 7"),
        ({"size": [2, 2], "counts": [2, 3, -1]}, None, r"must be non-negative, got \[-1\]"),
        ({"size": [2, 2], "counts": "211K"}, None, r"must be non-negative, got \[-4\]"),
        ({"size": [2, 2], "counts": [1.0, 3.0]}, None, r"flat list of ints, got dtype float64"),
        ({"size": [2, 2], "counts": [[1, 3]]}, None, r"flat list of ints, .*shape \(1, 2\)"),
        ({"size": [2, 2], "counts": np.array([2**63], np.uint64)}, None, r"run length too large"),
        ({"size": [2, 3], "counts": [1, 2]}, None, r"sum to h \* w = 2 \* 3 = 6, got 3"),
        ({"size": [2, 3], "counts": "12"}, None, r"sum to h \* w = 2 \* 3 = 6, got 3"),
        ({"size": [2, 3], "counts": [1, 200]}, None, r"= 6, got a run of 200"),
        (BLANK_2X3, (0, 0, 1), r"window must be four ints .* got \(0, 0, 1\)"),
        (BLANK_2X3, (0, 0, 1.5, 2), r"window must be four ints"),
        (BLANK_2X3, "0011", r"window must be four ints"),
        (BLANK_2X3, (0, 0, 4, 2), r"x_max <= 3 .* got \(0, 0, 4, 2\)"),
        (BLANK_2X3, (2, 0, 1, 2), r"0 <= x_min <= x_max <= 3"),
        (BLANK_2X3, (0, -1, 1, 2), r"0 <= y_min <= y_max <= 2"),
    ],
)
def test_decode_errors(rle, window, match):
    with pytest.raises(ValueError, match=match):
        decode_rle(rle, window)


# --- encode_rle --------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(mask=masks())
def test_encode_matches_pycocotools_and_round_trips(mask):
    rle = encode_rle(mask)
    assert rle == {"size": list(mask.shape), "counts": coco_encode(mask)["counts"].decode()}
    assert isinstance(rle["counts"], str)
    assert all(type(v) is int for v in rle["size"])
    np.testing.assert_array_equal(decode_rle(rle), mask)


def test_encode_accepts_views_and_integer_masks():
    mask = np.random.default_rng(2).random((12, 10)) < 0.5
    view = mask[::2, 1::3]  # neither C- nor Fortran-contiguous
    np.testing.assert_array_equal(decode_rle(encode_rle(view)), view)
    np.testing.assert_array_equal(decode_rle(encode_rle(np.asfortranarray(mask))), mask)
    assert encode_rle(mask.astype(np.int64)) == encode_rle(mask)
    assert encode_rle(np.zeros((3, 4), bool)) == {"size": [3, 4], "counts": "<"}


@pytest.mark.parametrize(
    ("mask", "match"),
    [
        (np.zeros((2, 2, 1), bool), r"mask must be 2-D \(H, W\), got shape \(2, 2, 1\)"),
        (np.zeros(4, bool), r"mask must be 2-D \(H, W\), got shape \(4,\)"),
        (np.zeros((2, 2), np.float32), r"bool or integer 0/1, got dtype float32"),
        (np.array([[0, 2], [1, 0]]), r"only 0 and 1, got values such as \[2\]"),
    ],
)
def test_encode_errors(mask, match):
    with pytest.raises(ValueError, match=match):
        encode_rle(mask)


# --- polygon_to_mask ---------------------------------------------------------------------------


def test_convention_polygon_samples_pixel_centres():
    # A box polygon with integer corners covers exactly the half-open window's pixels.
    square = np.array([[1, 2], [5, 2], [5, 4], [1, 4]], dtype=float)
    expected = np.zeros((6, 7), bool)
    expected[2:4, 1:5] = True
    np.testing.assert_array_equal(polygon_to_mask(square, (6, 7)), expected)
    # Centres on the boundary: outside on the left/top edge, inside on the right/bottom edge.
    on_centres = np.array([[1.5, 2.5], [4.5, 2.5], [4.5, 4.5], [1.5, 4.5]])
    expected = np.zeros((6, 7), bool)
    expected[3:5, 2:5] = True
    np.testing.assert_array_equal(polygon_to_mask(on_centres, (6, 7)), expected)


@pytest.mark.parametrize("halves", [False, True])
def test_polygon_boxes_match_pycocotools_exactly(halves):
    rng = np.random.default_rng(3)
    for _ in range(200):
        x0, x1 = np.sort(rng.integers(-6, 40, 2)) / (2 if halves else 1)
        y0, y1 = np.sort(rng.integers(-6, 40, 2)) / (2 if halves else 1)
        box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        coco = coco_decode(pycocotools.mask.frPyObjects([box.ravel().tolist()], 15, 17))[..., 0]
        np.testing.assert_array_equal(polygon_to_mask(box, (15, 17)), coco)
        np.testing.assert_array_equal(polygon_to_mask(box[::-1], (15, 17)), coco)


def test_polygons_agree_with_pycocotools_up_to_its_subpixel_rounding():
    # pycocotools rounds vertices to 1/5 pixel, so boundary pixels may differ; areas match.
    rng = np.random.default_rng(4)
    differing = total = 0
    for _ in range(100):
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 12)))
        radii = rng.uniform(2, 18, len(angles))
        polygon = np.c_[20 + radii * np.cos(angles), 20 + radii * np.sin(angles)]
        coco = coco_decode(pycocotools.mask.frPyObjects([polygon.ravel().tolist()], 40, 40))[..., 0]
        ours = polygon_to_mask(polygon, (40, 40))
        differing += int((coco ^ ours).sum())
        total += int(coco.sum())
    assert differing < 0.03 * total


@settings(max_examples=150, deadline=None)
@given(
    vertices=hnp.arrays(
        np.float64,
        st.tuples(st.integers(0, 8), st.just(2)),
        # Quarter-pixel vertices put many centres exactly on edges and vertices.
        elements=st.integers(-8, 60).map(lambda v: v / 4),
    ),
    size_hw=st.tuples(st.integers(0, 14), st.integers(0, 14)),
)
def test_polygon_matches_reference(vertices, size_hw):
    out = polygon_to_mask(vertices, size_hw)
    assert out.shape == size_hw and out.dtype == bool
    np.testing.assert_array_equal(out, reference_polygon(vertices, *size_hw))


@pytest.mark.parametrize(
    "polygon",
    [
        np.empty((0, 2)),  # no vertices
        [],  # no vertices, as a list
        [[1.0, 1.0], [4.0, 4.0]],  # a segment encloses nothing
        [[1.0, 1.0], [3.0, 3.0], [5.0, 5.0]],  # collinear
        [[-5.0, -5.0], [-1.0, -5.0], [-1.0, -1.0]],  # outside the mask
    ],
)
def test_polygon_enclosing_no_pixel_centre(polygon):
    out = polygon_to_mask(polygon, (6, 6))
    assert out.shape == (6, 6) and not out.any()


def test_polygon_even_odd_rule_and_zero_size():
    # A pentagram: its centre pentagon is crossed twice, so it is a hole under even-odd.
    angles = np.pi / 2 + np.arange(5) * 4 * np.pi / 5
    star = np.c_[50 + 40 * np.cos(angles), 50 - 40 * np.sin(angles)]
    mask = polygon_to_mask(star, (100, 100))
    assert not mask[50, 50] and mask[20, 50]
    assert polygon_to_mask(star, (0, 5)).shape == (0, 5)


@pytest.mark.parametrize(
    ("polygon", "size_hw", "match"),
    [
        ([1.0, 2.0, 3.0, 4.0], (4, 4), r"polygon must have shape \(P, 2\) of x, y, got \(4,\)"),
        (np.zeros((3, 3)), (4, 4), r"polygon must have shape \(P, 2\) of x, y, got \(3, 3\)"),
        ([[0, 0], [1, np.nan], [2, 0]], (4, 4), r"must be finite, got NaN or infinity"),
        ([[0, 0], [1, 1], [2, 0]], (4,), r"size_hw must be two non-negative ints"),
        ([[0, 0], [1, 1], [2, 0]], (4, -1), r"size_hw must be two non-negative ints"),
        ([[0, 0], [1, 1], [2, 0]], 4, r"size_hw must be \[height, width\], got 4"),
    ],
)
def test_polygon_errors(polygon, size_hw, match):
    with pytest.raises(ValueError, match=match):
        polygon_to_mask(polygon, size_hw)


# --- polygon_to_mask, Roboflow style -----------------------------------------------------------


@pytest.mark.parametrize(
    ("polygon", "coco_pixels", "roboflow_pixels"),
    [
        # the vector: a 10x10 integer square
        ([[0, 0], [10, 0], [10, 10], [0, 10]], 100, 121),
        # the same square shifted by 0.9: Roboflow truncates, so it is the integer square again
        ([[0.9, 0.9], [10.9, 0.9], [10.9, 10.9], [0.9, 10.9]], 100, 121),
        # shifted by -0.5: -0.5 truncates to 0 (towards zero, not down), 9.5 to 9
        ([[-0.5, -0.5], [9.5, -0.5], [9.5, 9.5], [-0.5, 9.5]], 100, 100),
        # a right triangle with legs 4: its hypotenuse is painted as an 8-connected line
        ([[0, 0], [4, 0], [0, 4]], 10, 15),
        # a degenerate (collinear) triangle: nothing in COCO style, its outline in Roboflow's
        ([[1, 1], [3, 3], [5, 5]], 0, 5),
        # two vertices: Roboflow drops such predictions; the mask is empty in both styles
        ([[1, 1], [5, 5]], 0, 0),
        # no vertices
        (np.empty((0, 2)), 0, 0),
    ],
)
def test_convention_polygon_styles_ported_vectors(polygon, coco_pixels, roboflow_pixels):
    assert polygon_to_mask(polygon, (20, 20)).sum() == coco_pixels
    assert polygon_to_mask(polygon, (20, 20), style="coco").sum() == coco_pixels
    assert polygon_to_mask(polygon, (20, 20), style="roboflow").sum() == roboflow_pixels


def test_convention_roboflow_polygon_paints_the_outline():
    # An integer box [x0, x1] x [y0, y1] sets mask[y0:y1 + 1, x0:x1 + 1]: both ends included.
    square = np.array([[1, 2], [5, 2], [5, 4], [1, 4]], dtype=float)
    expected = np.zeros((6, 7), bool)
    expected[2:5, 1:6] = True
    np.testing.assert_array_equal(polygon_to_mask(square, (6, 7), style="roboflow"), expected)


def test_roboflow_polygon_equals_cv2_fill_poly_of_truncated_points():
    # What supervision's from_inference does: int32 points, cv2.fillPoly(color=1).
    rng = np.random.default_rng(11)
    for _ in range(50):
        polygon = rng.uniform(-20, 80, size=(rng.integers(3, 9), 2))
        expected = np.zeros((60, 70), np.uint8)
        cv2.fillPoly(expected, [polygon.astype(np.int32)], color=1)
        out = polygon_to_mask(polygon, (60, 70), style="roboflow")
        assert out.dtype == bool
        np.testing.assert_array_equal(out, expected.astype(bool))


@settings(max_examples=200, deadline=None)
@given(
    vertices=hnp.arrays(
        np.float64,
        st.tuples(st.integers(0, 8), st.just(2)),
        # Quarter-pixel vertices inside a 24 x 24 mask: truncation, ties and shared vertices.
        elements=st.integers(0, 95).map(lambda v: v / 4),
    ),
)
def test_roboflow_polygon_matches_reference(vertices):
    out = polygon_to_mask(vertices, (24, 24), style="roboflow")
    assert out.shape == (24, 24) and out.dtype == bool
    np.testing.assert_array_equal(out, reference_polygon_roboflow(vertices, 24, 24))


def test_roboflow_polygon_matches_reference_on_long_edges():
    # Edges spanning hundreds of rows, where the 16.16 fixed-point slope is inexact.
    rng = np.random.default_rng(12)
    for _ in range(10):
        polygon = rng.integers(0, 700, size=(rng.integers(3, 8), 2)).astype(float)
        out = polygon_to_mask(polygon, (700, 700), style="roboflow")
        np.testing.assert_array_equal(out, reference_polygon_roboflow(polygon, 700, 700))


def test_roboflow_polygon_zero_size():
    square = [[0, 0], [3, 0], [3, 3]]
    assert polygon_to_mask(square, (0, 5), style="roboflow").shape == (0, 5)
    assert polygon_to_mask(square, (5, 0), style="roboflow").shape == (5, 0)


@pytest.mark.parametrize(
    ("polygon", "style", "match"),
    [
        (
            [[0, 0], [1, 1], [2, 0]],
            "pycocotools",
            r"style must be one of \('coco', 'roboflow'\), got 'pycocotools'",
        ),
        ([[0, 0], [1, 1], [2, 0]], None, r"style must be one of .*, got None"),
        ([[0, 0], [3e9, 1], [2, 0]], "roboflow", r"within the int32 range, got 3000000000.0"),
        ([[0, 0], [1, np.inf], [2, 0]], "roboflow", r"must be finite, got NaN or infinity"),
        ([1.0, 2.0, 3.0], "roboflow", r"polygon must have shape \(P, 2\) of x, y, got \(3,\)"),
    ],
)
def test_polygon_style_errors(polygon, style, match):
    with pytest.raises(ValueError, match=match):
        polygon_to_mask(polygon, (4, 4), style=style)


# --- details the tests above leave open ----------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ("p", "compressed RLE counts must use characters '0'..'o' (ASCII 48..111), got 'p' at "
              "position 0"),
        ("12~", "compressed RLE counts must use characters '0'..'o' (ASCII 48..111), got '~' at "
                "position 2"),
        ("1Q", "compressed RLE counts end in the middle of a number (truncated?)"),
        ("aé", "compressed RLE counts must be ASCII characters '0'..'o'"),
    ],
)
def test_compressed_counts_errors_are_worded_in_full(counts, message):
    # The bad character's position is reported wherever it is, including 0 and 2.
    with pytest.raises(ValueError) as raised:
        decode_rle({"size": [3, 3], "counts": counts})
    assert str(raised.value) == message


def test_negative_run_error_lists_only_negative_runs_and_at_most_four():
    # A zero run is valid: it must not be listed among the negative ones.
    with pytest.raises(ValueError, match=r"must be non-negative, got \[-1\]$"):
        decode_rle({"size": [2, 2], "counts": [0, 3, -1, 2]})
    with pytest.raises(ValueError, match=r"must be non-negative, got \[-1 -2 -3 -4\]$"):
        decode_rle({"size": [2, 2], "counts": [9, -1, 1, -2, 1, -3, 1, -4, 1, -5]})


def test_largest_int64_run_as_uint64_is_a_sum_error_not_an_overflow():
    # 2**63 - 1 still fits int64: it is read, then fails the sum check like any too-long run.
    runs = np.array([2**63 - 1], np.uint64)
    with pytest.raises(ValueError, match=r"= 4, got a run of 9223372036854775807$"):
        decode_rle({"size": [2, 2], "counts": runs})


def test_window_given_as_bytes_is_rejected():
    # bytes iterate as ints, so b"\x00\x00\x01\x01" would otherwise pass as (0, 0, 1, 1).
    with pytest.raises(ValueError, match=r"window must be four ints"):
        decode_rle(BLANK_2X3, b"\x00\x00\x01\x01")


def test_encode_error_shows_at_most_four_bad_values():
    with pytest.raises(ValueError, match=r"got values such as \[2 3 4 5\]$"):
        encode_rle(np.array([[2, 3, 4, 5, 6]]))


def test_polygon_non_finite_error_is_worded_in_full():
    for style in POLYGON_STYLES:
        with pytest.raises(ValueError) as raised:
            polygon_to_mask([[0, 0], [1, np.inf], [2, 0]], (4, 4), style=style)
        assert str(raised.value) == "polygon vertices must be finite, got NaN or infinity"


def test_polygon_with_a_none_coordinate_is_not_finite():
    with pytest.raises(ValueError, match=r"must be finite, got NaN or infinity"):
        polygon_to_mask([[0, 0], [1, None], [2, 0]], (4, 4))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64])
@pytest.mark.parametrize("style", POLYGON_STYLES)
def test_integer_vertex_arrays_rasterize_like_their_float_values(dtype, style):
    # Unsigned vertices must not wrap around when edges are subtracted (x1 - x0 < 0).
    triangle = [[9, 1], [2, 3], [7, 8], [1, 6]]
    out = polygon_to_mask(np.array(triangle, dtype=dtype), (10, 11), style=style)
    floats = np.array(triangle, dtype=float)
    reference = reference_polygon if style == "coco" else reference_polygon_roboflow
    np.testing.assert_array_equal(out, reference(floats, 10, 11))
    assert out.any()


@pytest.mark.parametrize("size_hw", [(1, 6), (6, 1), (1, 1)])
@pytest.mark.parametrize("style", POLYGON_STYLES)
def test_polygon_on_a_mask_one_pixel_high_or_wide(size_hw, style):
    # A polygon covering the whole strip sets every pixel in both styles.
    polygon = np.array([[0.0, 0.0], [8.0, 0.0], [8.0, 8.0], [0.0, 8.0]])
    out = polygon_to_mask(polygon, size_hw, style=style)
    assert out.shape == size_hw and out.all()


def test_polygon_with_horizontal_edges_and_repeated_vertices_warns_nothing():
    # Horizontal edges divide by zero and a repeated vertex gives 0 / 0: both are skipped
    # silently, not reported as RuntimeWarnings in the caller's logs.
    polygon = np.array([[1.0, 1.5], [1.0, 1.5], [6.0, 1.5], [6.0, 5.0], [1.0, 5.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = polygon_to_mask(polygon, (8, 8))
    np.testing.assert_array_equal(out, reference_polygon(polygon, 8, 8))


def test_roboflow_vertices_at_the_int32_limit():
    # 2**31 does not fit int32 and must be refused; 2**31 - 1 still fits and is clipped.
    with pytest.raises(ValueError, match=r"within the int32 range, got 2147483648.0"):
        polygon_to_mask([[0, 0], [2**31, 1], [2, 3]], (4, 4), style="roboflow")
    out = polygon_to_mask([[0, 0], [2**31 - 1, 0], [0, 3]], (4, 4), style="roboflow")
    assert out[0].all() and out[:, 0].all()


def test_roboflow_mask_is_a_well_formed_bool_array():
    # Callers hand masks to OpenCV through .view(np.uint8): the bytes must be exactly 0 and 1.
    out = polygon_to_mask([[1, 1], [8, 2], [4, 7]], (10, 10), style="roboflow")
    assert out.any()
    assert set(np.unique(out.view(np.uint8)).tolist()) == {0, 1}
