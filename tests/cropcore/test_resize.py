"""crop_and_resize: spec section 4 vectors, conventions, validation, a property test against a slow
per-pixel reference, and bit-exact parity with tf.image.crop_and_resize (marker ``tf``)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cropcore import crop_and_resize, release_output_memory, resize

f32 = np.float32


def reference_crop_and_resize(image, boxes, box_indices, crop_size, method="bilinear",
                              extrapolation_value=0.0):
    """Literal reading of the spec, one output element at a time, with float32 scalars (every
    operation rounded on its own), subnormal operands and results of arithmetic flushed to zero
    (``z``), as TensorFlow's CPU threads compute."""
    image = np.asarray(image)
    _, height, width, depth = image.shape
    crop_height, crop_width = crop_size
    extrapolation = f32(extrapolation_value)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    out = np.empty((len(boxes), crop_height, crop_width, depth), dtype=np.float32)

    def coordinate(lo, hi, i, size, crop):
        lo, hi = z(lo), z(hi)
        if crop > 1:
            scale = z(z(z(hi - lo) * f32(size - 1)) / f32(crop - 1))
            return z(z(lo * f32(size - 1)) + z(f32(i) * scale))
        return z(f32(0.5 * float(z(lo + hi)) * float(size - 1)))

    def pixel(value):  # converting a double rounds, and flushes; a float32 is copied
        return z(f32(value)) if image.dtype == np.float64 else f32(value)

    def inside(v, size):
        return 0 <= v <= f32(size - 1)  # False for NaN

    with np.errstate(over="ignore", invalid="ignore"):
        for n, (y1, x1, y2, x2) in enumerate(boxes):
            b = int(box_indices[n])
            for y in range(crop_height):
                in_y = coordinate(y1, y2, y, height, crop_height)
                for x in range(crop_width):
                    in_x = coordinate(x1, x2, x, width, crop_width)
                    for d in range(depth):
                        if not (inside(in_y, height) and inside(in_x, width)):
                            out[n, y, x, d] = extrapolation
                        elif method == "nearest":
                            # round half away from zero, in double (exact for these values)
                            yy = math.floor(float(in_y) + 0.5)
                            xx = math.floor(float(in_x) + 0.5)
                            out[n, y, x, d] = pixel(image[b, yy, xx, d])
                        else:
                            t, bo = math.floor(in_y), math.ceil(in_y)
                            le, ri = math.floor(in_x), math.ceil(in_x)
                            ly = z(in_y - f32(t))
                            lx = z(in_x - f32(le))
                            tl, tr = z(pixel(image[b, t, le, d])), z(pixel(image[b, t, ri, d]))
                            bl, br = z(pixel(image[b, bo, le, d])), z(pixel(image[b, bo, ri, d]))
                            top = z(tl + z(z(tr - tl) * lx))
                            bottom = z(bl + z(z(br - bl) * lx))
                            out[n, y, x, d] = z(top + z(z(bottom - top) * ly))
    return out


def z(value):
    """A subnormal float32 as the zero of its sign (x86's FTZ and DAZ, where cropcore sets them
    as TensorFlow does), anything else as is."""
    value = f32(value)
    if resize.FLUSHES_SUBNORMALS and value != 0 and abs(value) < np.finfo(np.float32).tiny:
        return f32(math.copysign(0.0, value))
    return value


def assert_bitwise_equal(actual, expected):
    """Equal bit for bit (so 0.0 != -0.0), except that any NaN matches any NaN."""
    assert actual.dtype == np.float32
    assert expected.dtype == np.float32
    assert actual.shape == expected.shape
    actual_nan, expected_nan = np.isnan(actual), np.isnan(expected)
    np.testing.assert_array_equal(actual_nan, expected_nan)
    np.testing.assert_array_equal(
        actual.view(np.uint32)[~actual_nan], expected.view(np.uint32)[~expected_nan]
    )


def as_image(rows, dtype=np.float32):
    """2-D nested list -> [1, H, W, 1] image."""
    return np.asarray(rows, dtype=dtype)[None, :, :, None]


def crop(image, boxes, crop_size, method="bilinear", extrapolation_value=0.0, box_indices=None):
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if box_indices is None:
        box_indices = np.zeros(len(boxes), dtype=np.int32)
    return crop_and_resize(image, boxes, box_indices, crop_size, method, extrapolation_value)


# --- spec section 4 vectors (they came from TensorFlow) ------------------------------------------

IMAGE_2x2 = as_image([[1, 2], [3, 4]])


@pytest.mark.parametrize("box", [[0, 0, 1, 1], [1, 1, 0, 0]])
@pytest.mark.parametrize(("method", "expected"), [("bilinear", 2.5), ("nearest", 4.0)])
def test_vector_2x2_crop_1x1(box, method, expected):
    out = crop(IMAGE_2x2, [box], (1, 1), method)
    assert out.shape == (1, 1, 1, 1)
    assert out[0, 0, 0, 0] == expected


@pytest.mark.parametrize(
    ("box", "method", "expected"),
    [
        ([0, 0, 1, 1], "bilinear", [[1, 1.5, 2], [2, 2.5, 3], [3, 3.5, 4]]),
        ([0, 0, 1, 1], "nearest", [[1, 2, 2], [3, 4, 4], [3, 4, 4]]),
        ([1, 1, 0, 0], "bilinear", [[4, 3.5, 3], [3, 2.5, 2], [2, 1.5, 1]]),
        ([1, 1, 0, 0], "nearest", [[4, 4, 3], [4, 4, 3], [2, 2, 1]]),
    ],
)
def test_vector_2x2_crop_3x3(box, method, expected):
    out = crop(IMAGE_2x2, [box], (3, 3), method)
    assert_bitwise_equal(out[0, :, :, 0], np.array(expected, dtype=np.float32))


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
@pytest.mark.parametrize(
    ("boxes", "expected"),
    [
        ([[0, 0, 1, 1], [0, 0, 0.5, 0.5]], [[[1, 3], [7, 9]], [[1, 2], [4, 5]]]),
        ([[1, 1, 0, 0], [0.5, 0.5, 0, 0]], [[[9, 7], [3, 1]], [[5, 4], [2, 1]]]),
    ],
)
def test_vector_3x3_two_boxes(method, boxes, expected):
    image = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    out = crop(image, boxes, (2, 2), method)
    assert_bitwise_equal(out[..., 0], np.array(expected, dtype=np.float32))


def test_vector_extrapolation_minus_one():
    out = crop(IMAGE_2x2, [[-1, -1, 1, 1]], (3, 3), extrapolation_value=-1)
    expected = np.array([[-1, -1, -1], [-1, 1, 2], [-1, 3, 4]], dtype=np.float32)
    assert_bitwise_equal(out[0, :, :, 0], expected)


def test_vector_no_boxes():
    out = crop_and_resize(IMAGE_2x2, np.zeros((0, 4), np.float32), np.zeros(0, np.int32), (3, 3))
    assert out.shape == (0, 3, 3, 1)
    assert out.dtype == np.float32


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("bilinear", [[8, 9, 10], [11, 12, 13], [14, 15, 16]]),
        ("nearest", [[8, 10, 10], [14, 16, 16], [14, 16, 16]]),
    ],
)
def test_vector_3x3_even_values(method, expected):
    image = np.arange(0, 18, 2, dtype=np.float32).reshape(1, 3, 3, 1)
    out = crop(image, [[0.5, 0.5, 1, 1]], (3, 3), method)
    assert_bitwise_equal(out[0, :, :, 0], np.array(expected, dtype=np.float32))


SUBNORMAL_CASES = [  # (image, boxes, crop size, method): TensorFlow's results are in the test
    (np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1), [[-1e-45, 0, 1, 1]], (2, 2),
     "bilinear"),
    (np.full((1, 2, 2, 1), 1e-40, np.float32), [[0, 0, 1, 1]], (2, 2), "nearest"),
    (np.array([0, 2e-38], np.float32).reshape(1, 1, 2, 1), [[0, 0, 1, 1]], (1, 5), "bilinear"),
]


@pytest.mark.skipif(not resize.FLUSHES_SUBNORMALS, reason="flushing is set on x86-64 only")
def test_convention_subnormals_are_flushed_to_zero_as_in_tensorflow():
    # TensorFlow's CPU threads flush subnormal operands and results of arithmetic to zero (x86
    # FTZ and DAZ); copies keep them. The expected values are TensorFlow's own (checked against
    # it in test_subnormal_cases_match_tensorflow).
    image = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    # a subnormal box coordinate is 0, not a hair outside the image
    np.testing.assert_array_equal(crop(image, [[-1e-45, 0, 1, 1]], (2, 2)).ravel(), [1, 3, 7, 9])
    tiny = np.full((1, 2, 2, 1), 1e-40, np.float32)
    assert (crop(tiny, [[0, 0, 1, 1]], (2, 2)) == 0).all()  # interpolated: flushed
    assert (crop(tiny, [[0, 0, 1, 1]], (2, 2), "nearest") == f32(1e-40)).all()  # copied
    assert (crop(tiny.astype(np.float64), [[0, 0, 1, 1]], (2, 2), "nearest") == 0).all()
    row = np.array([0, 2e-38], np.float32).reshape(1, 1, 2, 1)  # subnormal results only
    np.testing.assert_array_equal(crop(row, [[0, 0, 1, 1]], (1, 5)).ravel(),
                                  np.array([0, 0, 0, 1.5e-38, 2e-38], np.float32))
    outside = crop_and_resize(image, [[-1, -1, -0.5, -0.5]], [0], (1, 1), "bilinear", 1e-40)
    assert outside.ravel()[0] == f32(1e-40)  # the extrapolation value is copied
    # and this thread's floating-point mode is as it was
    assert np.float32(1e-40) * np.float32(1) == np.float32(1e-40)


@pytest.mark.skipif(not resize.FLUSHES_SUBNORMALS, reason="flushing is set on x86-64 only")
def test_every_thread_gets_its_floating_point_mode_back(monkeypatch):
    import numba

    kernels = resize._kernels()
    image = np.arange(4 * 9 * 9, dtype=np.float32).reshape(4, 9, 9, 1)
    boxes = np.array([[0, 0, 1, 1]] * 8, np.float32)
    modes = set()
    bilinear = kernels.bilinear

    def spy(*args):
        bilinear(*args)
        modes.add(kernels.read_mxcsr() & resize._FLUSH_BITS)  # inside: flushing

    def control():  # the mode bits, not the sticky exception flags (bits 0-5) any operation sets
        return kernels.read_mxcsr() & ~0x3F

    before = control()
    with monkeypatch.context() as patch:
        patch.setattr(kernels, "bilinear", spy)
        numba.set_num_threads(2)
        crop_and_resize(image, boxes, np.arange(8) % 4, (5, 5))
    assert modes == {resize._FLUSH_BITS} and control() == before
    # the pool's threads are back to their own mode too
    assert set(resize._POOL.map(lambda _: kernels.read_mxcsr() & resize._FLUSH_BITS,
                                range(4))) == {0}

    def failing(*args):
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(kernels, "bilinear", failing)
    with pytest.raises(RuntimeError, match="kernel failed"):
        crop_and_resize(image, boxes, np.arange(8) % 4, (5, 5))
    assert control() == before


@pytest.mark.tf
@pytest.mark.skipif(not resize.FLUSHES_SUBNORMALS, reason="flushing is set on x86-64 only")
def test_subnormal_cases_match_tensorflow():
    import tensorflow as tf

    for image, boxes, size, method in SUBNORMAL_CASES:
        expected = tf.image.crop_and_resize(image, np.array(boxes, np.float32), [0], size,
                                            method=method).numpy()
        assert_bitwise_equal(crop(image, boxes, size, method), expected)


def test_vector_float32_operation_order():
    image = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
    out = crop(image, [[0.25, 0.25, 0.5, 0.5]], (4, 4))
    assert_bitwise_equal(out[0, 0, :, 0], np.array([6, 6.3333335, 6.666667, 7], np.float32))
    assert out[0, 2, 2, 0] == f32(10.000001)
    assert out[0, 2, 2, 0] != 10


def test_vector_999_column_index_image():
    image = np.broadcast_to(np.arange(999, dtype=np.float32), (999, 999))[None, :, :, None]
    out = crop(image, [[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]], (500, 500))
    np.testing.assert_array_equal(out[0, :, :, 0], np.broadcast_to(np.arange(500), (500, 500)))
    np.testing.assert_array_equal(
        out[1, :, :, 0], np.broadcast_to(np.arange(499, 999), (500, 500))
    )


def test_vector_height_one_is_never_extrapolated_in_y():
    out = crop(as_image([[5, 6, 7]]), [[0.3, 0, 0.9, 1]], (2, 3))
    assert_bitwise_equal(out[0, :, :, 0], np.array([[5, 6, 7], [5, 6, 7]], np.float32))


def test_vector_nearest_4x4_flipped():
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    out = crop(image, [[1, 1, 0, 0]], (3, 3), "nearest")
    expected = np.array([[15, 14, 12], [11, 10, 8], [3, 2, 0]], np.float32)
    assert_bitwise_equal(out[0, :, :, 0], expected)


def test_vector_last_sample_one_ulp_outside_is_extrapolated():
    # TF quirk kept on purpose: 3 * 21 / 21 lands one ulp above H - 1 = 3 for the last sample.
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    out = crop(image, [[0, 0, 1, 1]], (22, 22), extrapolation_value=-7)
    assert (out[0, -1, :, 0] == -7).all()
    assert (out[0, :, -1, 0] == -7).all()
    assert (out[0, :-1, :-1, 0] != -7).all()
    assert_bitwise_equal(out, reference_crop_and_resize(image, [[0, 0, 1, 1]], [0], (22, 22),
                                                        extrapolation_value=-7))


def test_overflowing_box_arithmetic_is_extrapolated():
    # (y2 - y1) * (H - 1) overflows to inf, so every y coordinate is NaN: outside, not a crash.
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    for method in ("bilinear", "nearest"):
        out = crop(image, [[-3e38, 0, 3e38, 1]], (3, 3), method, extrapolation_value=5)
        assert (out == 5).all()


# --- conventions ---------------------------------------------------------------------------------


def test_convention_corner_aligned_sampling():
    # Normalized 0 and 1 are the centres of the first and last pixels: the corners of the crop
    # are exactly the corner pixels of the image (no half-pixel offset).
    image = np.arange(7 * 9, dtype=np.float32).reshape(1, 7, 9, 1)
    out = crop(image, [[0, 0, 1, 1]], (4, 5))
    assert out[0, 0, 0, 0] == image[0, 0, 0, 0]
    assert out[0, 0, -1, 0] == image[0, 0, -1, 0]
    assert out[0, -1, 0, 0] == image[0, -1, 0, 0]
    assert out[0, -1, -1, 0] == image[0, -1, -1, 0]
    # A box whose corners are pixel centres, resized to its own size in pixels, copies them.
    image = np.arange(5 * 9, dtype=np.float32).reshape(1, 5, 9, 1)
    out = crop(image, [[0.25, 0.25, 0.75, 0.75]], (3, 5))  # rows 1..3, columns 2..6
    np.testing.assert_array_equal(out[0, :, :, 0], image[0, 1:4, 2:7, 0])


def test_convention_crop_size_one_samples_the_box_centre():
    image = np.arange(5 * 5, dtype=np.float32).reshape(1, 5, 5, 1)
    out = crop(image, [[0, 0, 0.5, 1]], (1, 1))  # centre (1, 2) in pixels
    assert out[0, 0, 0, 0] == image[0, 1, 2, 0]


def test_convention_flipped_box_flips_the_crop():
    image = np.arange(6 * 8, dtype=np.float32).reshape(1, 6, 8, 1)
    box = [0.2, 0.1, 0.9, 0.7]
    straight = crop(image, [box], (5, 6))
    both = crop(image, [[box[2], box[3], box[0], box[1]]], (5, 6))
    rows = crop(image, [[box[2], box[1], box[0], box[3]]], (5, 6))
    # Not bit-exact: the flipped coordinates are computed from the other end of the box.
    np.testing.assert_allclose(both, straight[:, ::-1, ::-1], rtol=1e-5)
    np.testing.assert_allclose(rows, straight[:, ::-1, :], rtol=1e-5)


def test_convention_nearest_rounds_half_away_from_zero():
    # 0.5 px -> 1 (half to even would give 0); 1.5 -> 2; 2.5 -> 3 (half to even: 2).
    image = as_image([np.arange(5)])  # W - 1 = 4, so these coordinates are exact
    out = crop(image, [[0, 0.5 / 4, 0, 2.5 / 4]], (1, 3), "nearest")
    np.testing.assert_array_equal(out[0, 0, :, 0], [1, 2, 3])
    # 0.49999997 (the float32 just below 0.5) rounds down: floor(v + 0.5) in float32 would
    # round 0.99999997 up to 1.0 and pick the wrong pixel.
    v = np.nextafter(f32(0.5), f32(0))
    assert v == f32(0.49999997)
    assert math.floor(v + f32(0.5)) == 1  # the float32 trap the kernel must avoid
    out = crop(as_image([[10, 20]]), [[0, v, 0, v]], (1, 1), "nearest")  # in_x = v * 1
    assert out[0, 0, 0, 0] == 10


def test_convention_output_is_float32():
    for dtype in (np.uint8, np.int16, np.int64, np.float16, np.float64):
        image = np.arange(12, dtype=dtype).reshape(1, 2, 3, 2)
        for method in ("bilinear", "nearest"):
            out = crop(image, [[0, 0, 1, 1]], (2, 3), method)
            assert out.dtype == np.float32
            np.testing.assert_array_equal(out, image.astype(np.float32))


def test_convention_outside_samples_are_not_blended():
    # The sample at x = -0.25 px is outside: it is the extrapolation value, not a blend of it.
    out = crop(as_image([[10, 20, 30, 40, 50]]), [[0, -1 / 16, 0, 1]], (1, 5),
               extrapolation_value=-100)
    assert out[0, 0, 0, 0] == -100
    assert (out[0, 0, 1:, 0] > 0).all()


def test_convention_box_indices_pick_the_image():
    image = np.stack([np.full((3, 3, 2), v, np.uint8) for v in (7, 8, 9)])
    out = crop(image, [[0, 0, 1, 1]] * 4, (2, 2), box_indices=[2, 0, 1, 2])
    np.testing.assert_array_equal(out[:, 0, 0, 0], [9, 7, 8, 9])


def test_zero_depth_and_empty_batch():
    out = crop(np.zeros((2, 3, 3, 0), np.uint8), [[0, 0, 1, 1]], (4, 5), box_indices=[1])
    assert out.shape == (1, 4, 5, 0)
    assert out.dtype == np.float32
    out = crop_and_resize(np.zeros((0, 3, 3, 2)), np.zeros((0, 4)), np.zeros(0, np.int32), (2, 2))
    assert out.shape == (0, 2, 2, 2)


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
def test_input_layouts_give_the_same_result(method):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60000, size=(2, 9, 11, 3), dtype=np.uint16)
    boxes = rng.uniform(-0.2, 1.2, size=(6, 4)).astype(np.float32)
    indices = np.array([0, 1, 1, 0, 1, 0])
    expected = crop_and_resize(image, boxes, indices, (5, 7), method)
    readonly = image.copy()
    readonly.flags.writeable = False
    strided = np.ascontiguousarray(image[:, ::-1])[:, ::-1]
    swapped = image.astype(image.dtype.newbyteorder(">"))
    for variant in (readonly, strided, swapped, image.tolist()):
        actual = crop_and_resize(variant, boxes.tolist(), indices.tolist(), [5, 7], method)
        assert_bitwise_equal(actual, expected)


def test_big_endian_float16_is_widened_like_native_float16():
    image = np.arange(2 * 5 * 6 * 3).reshape(2, 5, 6, 3).astype(np.float16)
    boxes, indices = [[0.1, 0.2, 0.9, 0.7], [1, 1, 0, 0]], [1, 0]
    expected = crop_and_resize(image, boxes, indices, (3, 4))
    assert_bitwise_equal(crop_and_resize(image.astype(">f2"), boxes, indices, (3, 4)), expected)


@pytest.mark.parametrize("num_boxes", [1, 3, 40])
def test_thread_count_does_not_change_the_result(num_boxes):
    # Work is split by boxes, or by bands of rows when there are few boxes; the split depends on
    # numba's thread count, the result must not.
    numba = pytest.importorskip("numba")
    rng = np.random.default_rng(num_boxes)
    image = rng.integers(0, 256, size=(2, 37, 53, 3), dtype=np.uint8)
    boxes = rng.uniform(-0.1, 1.1, size=(num_boxes, 4)).astype(np.float32)
    indices = rng.integers(0, 2, size=num_boxes)
    before = numba.get_num_threads()
    try:
        for method in ("bilinear", "nearest"):
            results = []
            for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
                numba.set_num_threads(threads)
                results.append(crop_and_resize(image, boxes, indices, (31, 17), method))
            for result in results[1:]:
                assert_bitwise_equal(result, results[0])
            assert_bitwise_equal(results[0], reference_crop_and_resize(image, boxes, indices,
                                                                       (31, 17), method))
    finally:
        numba.set_num_threads(before)


def test_many_channels_and_one_large_crop():
    # Depth above the kernels' 4-lane groups, and a single box (split across threads by rows).
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 13, 17, 7)).astype(np.float32)
    boxes = [[0.1, 0.05, 0.95, 1.0]]
    for method in ("bilinear", "nearest"):
        assert_bitwise_equal(crop(image, boxes, (29, 23), method),
                             reference_crop_and_resize(image, boxes, [0], (29, 23), method))


GUARDED_ACCESS_SCRIPT = """
import ctypes, mmap, sys
import numpy as np
from cropcore import crop_and_resize

libc = ctypes.CDLL(None)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

def guarded(image):
    # A copy of image that ends exactly where an inaccessible page begins.
    page = mmap.PAGESIZE
    size = (image.nbytes // page + 2) * page
    buffer = mmap.mmap(-1, size)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    assert libc.mprotect(address + size - page, page, 0) == 0  # PROT_NONE
    start = size - page - image.nbytes
    out = np.frombuffer(buffer, image.dtype, image.size, start).reshape(image.shape)
    out[...] = image
    return out

boxes = np.array([[0, 0, 1, 1], [1, 1, 0, 0], [0.5, 0, 1, 1], [-1, -1, 2, 2], [1, 1, 1, 1]],
                 np.float32)
for shape, dtype in [((1, 1, 1, 1), np.uint8), ((1, 2, 1, 1), np.uint8), ((2, 3, 1, 2), np.int8),
                     ((1, 4, 5, 3), np.uint8), ((2, 3, 3, 5), np.float32),
                     ((1, 2, 2, 1), np.float64), ((1, 3, 2, 2), np.int16)]:
    image = np.arange(np.prod(shape)).astype(dtype).reshape(shape)
    indices = np.full(len(boxes), shape[0] - 1)
    for method in ("bilinear", "nearest"):
        for crop_size in [(3, 4), (1, 1), (2, 1)]:
            expected = crop_and_resize(image, boxes, indices, crop_size, method)
            actual = crop_and_resize(guarded(image), boxes, indices, crop_size, method)
            np.testing.assert_array_equal(actual, expected)
            # and writes: the output ends at the page too, after each box in turn
            for last in range(len(boxes)):
                order = np.r_[np.delete(np.arange(len(boxes)), last), last]
                out = guarded(np.zeros(expected.shape, np.float32))
                crop_and_resize(image, boxes[order], indices, crop_size, method, out=out)
                np.testing.assert_array_equal(out, expected[order])
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses mprotect")
def test_reads_and_writes_stay_inside_the_image_and_output():
    # The kernels read and write four channels at a time. Put the image, then the output, right
    # before an inaccessible page: an access past its end kills the (separate) process instead
    # of passing unnoticed.
    result = subprocess.run([sys.executable, "-c", GUARDED_ACCESS_SCRIPT], capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


# --- validation ----------------------------------------------------------------------------------

GOOD_IMAGE = np.zeros((2, 4, 5, 3), np.uint8)
GOOD_BOXES = np.array([[0, 0, 1, 1]], np.float32)
GOOD_INDICES = np.array([0], np.int32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image": np.zeros((4, 5, 3))}, r"image must be 4-D.*got shape \(4, 5, 3\)"),
        ({"image": np.zeros((1, 0, 5, 3))}, r"height and width must be positive.*\(1, 0, 5, 3\)"),
        ({"image": np.zeros((1, 4, 0, 3))}, r"height and width must be positive"),
        ({"image": np.zeros((1, 4, 5, 3), bool)},
         r"^image must have an integer or a float16, float32 or float64 dtype, got bool$"),
        ({"image": np.zeros((1, 4, 5, 3), complex)}, r"float64 dtype, got complex128$"),
        # Numba has no long double: it used to fail inside the compiler
        ({"image": np.zeros((1, 4, 5, 3), np.longdouble)},
         rf"float64 dtype, got {np.dtype(np.longdouble).name}$"),
        ({"boxes": np.zeros((1, 3))}, r"boxes must have shape \[N, 4\], got \(1, 3\)"),
        ({"boxes": np.zeros(4)}, r"boxes must have shape \[N, 4\], got \(4,\)"),
        ({"boxes": [["a", "b", "c", "d"]]}, r"boxes must be numeric"),
        ({"boxes": [[0, 0, np.nan, 1]]}, r"boxes must be finite.*rows \[0\]"),
        ({"boxes": [[0, 0, 1, np.inf]]}, r"boxes must be finite"),
        ({"boxes": [[0, 0, 1, 1e39]]}, r"boxes must be finite \(as float32\)"),
        ({"box_indices": [0, 0]}, r"box_indices must have shape \[N\] = \[1\].*got \(2,\)"),
        ({"box_indices": [[0]]}, r"box_indices must have shape \[N\]"),
        ({"box_indices": [0.0]}, r"box_indices must be integers, got dtype float64"),
        ({"box_indices": [2]}, r"box_indices must be in \[0, 2\).*got \[2\]"),
        ({"box_indices": [-1]}, r"box_indices must be in \[0, 2\).*got \[-1\]"),
        ({"crop_size": (0, 3)}, r"crop_size must be two positive integers.*got \(0, 3\)"),
        ({"crop_size": (3, -1)}, r"crop_size must be two positive integers"),
        ({"crop_size": (3,)}, r"crop_size must be two positive integers"),
        ({"crop_size": (3, 3, 3)}, r"crop_size must be two positive integers"),
        ({"crop_size": (3.0, 3)}, r"crop_size must be two positive integers"),
        ({"crop_size": (True, 3)}, r"crop_size must be two positive integers"),
        ({"crop_size": 3}, r"crop_size must be two positive integers.*got 3"),
        ({"crop_size": "33"}, r"crop_size must be two positive integers"),
        ({"method": "bicubic"}, r"method must be one of \('bilinear', 'nearest'\), got 'bicubic'"),
        ({"method": "BILINEAR"}, r"method must be one of"),
        ({"extrapolation_value": "x"}, r"extrapolation_value must be a real number, got 'x'"),
        ({"extrapolation_value": 10**400}, r"extrapolation_value must be within float range"),
        ({"out": np.zeros((1, 3, 3, 2), np.float32)}, r"out must be .* shape \(1, 3, 3, 3\)"),
        ({"out": np.zeros((1, 3, 3, 3), np.float64)}, r"out must be .*got ndarray float64"),
        ({"out": np.zeros((1, 3, 3, 6), np.float32)[..., ::2]}, r"out must be .*C-contiguous"),
        ({"out": [[0.0]]}, r"out must be .* got list"),
    ],
)
def test_validation_errors(kwargs, match):
    args = {"image": GOOD_IMAGE, "boxes": GOOD_BOXES, "box_indices": GOOD_INDICES,
            "crop_size": (3, 3)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        crop_and_resize(**args)


def test_out_receives_the_result_and_is_reused():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 255, (2, 9, 11, 3), np.uint8)
    boxes = rng.uniform(-0.2, 1.2, (6, 4)).astype(np.float32)
    indices = rng.integers(0, 2, 6)
    expected = crop_and_resize(image, boxes, indices, (5, 4))
    out = np.full((6, 5, 4, 3), np.nan, np.float32)
    for _ in range(2):  # a second call overwrites every element again
        assert crop_and_resize(image, boxes, indices, (5, 4), out=out) is out
        np.testing.assert_array_equal(out, expected)


def _large_case(seed: int = 6):
    # 16 crops of 128 x 128 x 4 float32: 4 MiB, the smallest recycled output
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (1, 40, 50, 4), np.uint8)
    boxes = rng.uniform(-0.2, 1.2, (16, 4)).astype(np.float32)
    return image, boxes, np.zeros(16, np.int32), (128, 128)


def test_a_dropped_large_output_is_reused_by_the_next_call_of_its_size():
    release_output_memory()
    image, boxes, indices, size = _large_case()
    first = crop_and_resize(image, boxes, indices, size)
    assert first.nbytes == 4 << 20
    expected = first.copy()
    address = first.ctypes.data
    first[...] = np.nan  # what the caller left in it must not show through
    del first
    second = crop_and_resize(image, boxes, indices, size)
    assert second.ctypes.data == address
    np.testing.assert_array_equal(second, expected)
    assert second.dtype == np.float32 and second.flags.c_contiguous and second.flags.writeable
    # a replaced result is reused as well: the loop ``out = crop_and_resize(...)``
    for _ in range(3):
        second = crop_and_resize(image, boxes, indices, size)
        np.testing.assert_array_equal(second, expected)


def test_live_outputs_and_their_views_are_never_reused():
    release_output_memory()
    image, boxes, indices, size = _large_case()
    first = crop_and_resize(image, boxes, indices, size)
    view = first[3:5]
    view_copy = view.copy()
    del first  # the view keeps its memory alive
    second = crop_and_resize(image, boxes, indices, size)
    third = crop_and_resize(image, boxes, indices, size)
    for a, b in [(view, second), (view, third), (second, third)]:
        assert not np.shares_memory(a, b)
    second[...] = -1.0
    third[...] = -2.0
    np.testing.assert_array_equal(view, view_copy)


def test_small_outputs_and_other_sizes_are_never_recycled():
    release_output_memory()
    image, boxes, indices, size = _large_case()
    small = crop_and_resize(image, boxes, indices, (8, 8))
    assert small.base is None  # a plain NumPy array
    first = crop_and_resize(image, boxes, indices, size)
    address = first.ctypes.data
    del first
    other = crop_and_resize(image, boxes[:15], indices[:15], size)  # 15 crops: another size
    assert other.ctypes.data != address
    del other
    release_output_memory()
    fresh = crop_and_resize(image, boxes[:15], indices[:15], size)
    np.testing.assert_array_equal(fresh, crop_and_resize(image, boxes, indices, size)[:15])


def test_threads_never_receive_the_same_live_output():
    from concurrent.futures import ThreadPoolExecutor

    release_output_memory()
    image, boxes, indices, size = _large_case()
    expected = crop_and_resize(image, boxes, indices, size)

    def loop(_):
        results = []
        for _ in range(6):
            out = crop_and_resize(image, boxes, indices, size)
            results.append(out)
            if len(results) > 2:
                results.pop(0)  # drop one: its memory goes back for any thread to take
            out[...] = np.nan
            del out
        return results

    with ThreadPoolExecutor(4) as pool:
        kept = [out for results in pool.map(loop, range(8)) for out in results]
    for i, a in enumerate(kept):
        for b in kept[i + 1:]:
            assert not np.shares_memory(a, b)
    np.testing.assert_array_equal(crop_and_resize(image, boxes, indices, size), expected)


def test_out_must_not_overlap_the_image():
    image = np.zeros((1, 6, 6, 1), np.float32)
    with pytest.raises(ValueError, match="out must not share memory with image"):
        crop_and_resize(image, [[1, 1, 0, 0]], [0], (6, 6), out=image)


def test_validation_accepts_numpy_integers_and_lists():
    out = crop_and_resize(GOOD_IMAGE.tolist(), [[0, 0, 1, 1]], [1], np.array([2, 3]))
    assert out.shape == (1, 2, 3, 3)
    out = crop_and_resize(GOOD_IMAGE, GOOD_BOXES, GOOD_INDICES, (np.int64(2), np.uint8(3)))
    assert out.shape == (1, 2, 3, 3)


# --- property test against the reference ---------------------------------------------------------

DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32,
          np.float64]
# Box coordinates: exact pixel centres, the edges, outside, and anything in between.
COORDS = st.one_of(
    st.sampled_from([0.0, 1.0, 0.5, 0.25, -0.0, -0.25, 1.25, -1.0, 2.0]),
    st.floats(-0.5, 1.5, width=32),
)


@st.composite
def crop_cases(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 6)),
             draw(st.integers(1, 5)))
    if dtype.kind == "f":
        elements = hnp.from_dtype(dtype, allow_subnormal=True)
    else:
        elements = hnp.from_dtype(dtype)
    image = draw(hnp.arrays(dtype, shape, elements=elements))
    num_boxes = draw(st.integers(1, 3))
    boxes = []
    for _ in range(num_boxes):
        y1, x1, y2, x2 = (draw(COORDS) for _ in range(4))
        if draw(st.booleans()) and draw(st.booleans()):
            y2 = y1  # degenerate boxes sample one row / column
        if draw(st.booleans()) and draw(st.booleans()):
            x2 = x1
        boxes.append([y1, x1, y2, x2])
    indices = draw(st.lists(st.integers(0, shape[0] - 1), min_size=num_boxes,
                            max_size=num_boxes))
    crop_size = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    method = draw(st.sampled_from(["bilinear", "nearest"]))
    extrapolation = draw(st.one_of(st.just(0.0), st.floats(width=32, allow_nan=False)))
    return image, np.array(boxes, np.float32), np.array(indices), crop_size, method, extrapolation


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(crop_cases())
def test_matches_reference_bit_for_bit(case):
    image, boxes, indices, crop_size, method, extrapolation = case
    with np.errstate(invalid="ignore", over="ignore"):
        expected = reference_crop_and_resize(image, boxes, indices, crop_size, method,
                                             extrapolation)
    actual = crop_and_resize(image, boxes, indices, crop_size, method, extrapolation)
    assert_bitwise_equal(actual, expected)


@settings(max_examples=40, deadline=None)
@given(st.floats(-1e6, 1e6, width=32), st.floats(-1e6, 1e6, width=32),
       st.integers(1, 4), st.sampled_from(["bilinear", "nearest"]))
def test_large_and_far_outside_boxes_match_reference(lo, hi, crop, method):
    assume(lo != hi)
    image = np.arange(3 * 4 * 2, dtype=np.float32).reshape(1, 3, 4, 2)
    boxes = np.array([[lo, lo, hi, hi], [0, lo, 1, hi], [lo, 0, hi, 1]], np.float32)
    indices = np.zeros(3, np.int32)
    expected = reference_crop_and_resize(image, boxes, indices, (crop, crop), method, -1)
    assert_bitwise_equal(crop_and_resize(image, boxes, indices, (crop, crop), method, -1),
                         expected)


# --- parity with TensorFlow ----------------------------------------------------------------------

TF_DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32,
             np.float64]


def random_tf_case(rng):
    dtype = np.dtype(TF_DTYPES[rng.integers(len(TF_DTYPES))])
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 12)), int(rng.integers(1, 12)),
             int(rng.integers(1, 6)))
    if dtype.kind == "f":
        image = rng.normal(0, 100, size=shape).astype(dtype)
        if rng.random() < 0.2:  # specials: the operation order decides where NaNs appear
            flat = image.reshape(-1)
            picks = rng.integers(0, flat.size, size=3)
            flat[picks] = rng.choice(np.array([np.inf, -np.inf, np.nan, -0.0, 1e-40, -2e-39],
                                              dtype), size=3)
    else:
        info = np.iinfo(dtype)
        image = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    num_boxes = int(rng.integers(1, 6))
    boxes = rng.uniform(-0.3, 1.3, size=(num_boxes, 4))
    special = rng.random(size=boxes.shape) < 0.25
    boxes[special] = rng.choice([0.0, 1.0, 0.5, -0.0, 1e-45, -1e-40], size=int(special.sum()))
    boxes = boxes.astype(np.float32)
    degenerate = rng.random(num_boxes) < 0.15
    boxes[degenerate, 2] = boxes[degenerate, 0]
    indices = rng.integers(0, shape[0], size=num_boxes).astype(np.int32)
    crop_size = (int(rng.choice([1, 2, 3, 7, 13])), int(rng.choice([1, 2, 3, 7, 13])))
    method = ["bilinear", "nearest"][int(rng.integers(2))]
    extrapolation = float(rng.choice([0.0, -1.0, 0.5, 1e30, 1e-40]))
    return image, boxes, indices, crop_size, method, extrapolation


@pytest.mark.tf
def test_matches_tensorflow_bit_for_bit():
    # No importorskip: the README's test command installs the `tf` extra, so a missing
    # TensorFlow is a broken environment and this promised comparison must fail, not skip.
    import tensorflow as tf
    rng = np.random.default_rng(20240501)
    cases = [random_tf_case(rng) for _ in range(200)]
    # Known cases as well: the 1-ulp quirk and the spec's float32 operation-order element.
    cases.append((np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1),
                  np.array([[0, 0, 1, 1]], np.float32), np.zeros(1, np.int32), (22, 22),
                  "bilinear", -7.0))
    cases.append((np.arange(25, dtype=np.uint8).reshape(1, 5, 5, 1),
                  np.array([[0.25, 0.25, 0.5, 0.5]], np.float32), np.zeros(1, np.int32), (4, 4),
                  "bilinear", 0.0))
    for image, boxes, indices, crop_size, method, extrapolation in cases:
        expected = tf.image.crop_and_resize(image, boxes, indices, crop_size, method=method,
                                            extrapolation_value=extrapolation).numpy()
        actual = crop_and_resize(image, boxes, indices, crop_size, method, extrapolation)
        assert_bitwise_equal(actual, expected)
