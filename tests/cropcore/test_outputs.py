"""_outputs: large output arrays whose memory goes to the next request once the caller drops
them (crop_and_resize's outputs; its own tests check the kernel side)."""

import gc

import numpy as np
import pytest

from cropcore import _outputs


@pytest.fixture(autouse=True)
def empty_free_list():
    _outputs.release()
    yield
    _outputs.release()


def test_below_the_threshold_arrays_are_plain_numpy():
    small = _outputs.empty((_outputs.MIN_BYTES // 4 - 1,), np.float32)
    assert small.base is None and small.dtype == np.float32
    del small
    assert _outputs.kept_bytes() == 0


def test_at_the_threshold_a_dropped_array_is_kept_and_handed_out_again():
    shape = (_outputs.MIN_BYTES // 8, 2)
    first = _outputs.empty(shape, np.float32)
    assert first.shape == shape and first.dtype == np.float32 and first.flags.c_contiguous
    assert first.flags.writeable and first.base is not None
    address = first.ctypes.data
    del first
    assert _outputs.kept_bytes() == _outputs.MIN_BYTES
    second = _outputs.empty(shape[::-1], np.float32)  # same size, another shape: reused
    assert second.ctypes.data == address and second.shape == shape[::-1]
    assert _outputs.kept_bytes() == 0


def test_only_the_last_dropped_array_is_kept():
    a = _outputs.empty((_outputs.MIN_BYTES,), np.uint8)
    b = _outputs.empty((_outputs.MIN_BYTES,), np.uint8)
    b_address = b.ctypes.data
    del a
    del b
    assert _outputs.kept_bytes() == _outputs.MIN_BYTES
    assert _outputs.empty((_outputs.MIN_BYTES,), np.uint8).ctypes.data == b_address


def test_a_request_of_another_size_lets_the_kept_memory_go():
    a = _outputs.empty((_outputs.MIN_BYTES,), np.uint8)
    del a
    b = _outputs.empty((_outputs.MIN_BYTES + 8,), np.uint8)
    assert _outputs.kept_bytes() == 0
    del b
    assert _outputs.kept_bytes() == _outputs.MIN_BYTES + 8


def test_views_keep_the_memory_until_the_last_one_goes():
    a = _outputs.empty((_outputs.MIN_BYTES,), np.uint8)
    view = a[10:20]
    del a
    gc.collect()
    assert _outputs.kept_bytes() == 0
    del view
    assert _outputs.kept_bytes() == _outputs.MIN_BYTES


def test_above_the_cap_nothing_is_kept(monkeypatch):
    monkeypatch.setattr(_outputs, "MAX_KEPT_BYTES", _outputs.MIN_BYTES)
    at_cap = _outputs.empty((_outputs.MIN_BYTES,), np.uint8)
    assert at_cap.base is not None
    over = _outputs.empty((_outputs.MIN_BYTES + 1,), np.uint8)
    assert over.base is None
    del at_cap, over
    assert _outputs.kept_bytes() == _outputs.MIN_BYTES


def test_release_frees_the_kept_memory():
    a = _outputs.empty((_outputs.MIN_BYTES,), np.uint8)
    del a
    assert _outputs.kept_bytes() == _outputs.MIN_BYTES
    _outputs.release()
    assert _outputs.kept_bytes() == 0
