"""Memory for large outputs, handed back to the next call once the caller drops an output.

A fresh array of hundreds of megabytes costs more than filling it: the kernel faults in and
zeroes every page on first touch (for 154 MB on the bench machine, 11 ms with huge pages and
about 55 ms without, against 21 ms to write it once). TensorFlow's allocator keeps the memory
of freed outputs and gives it to the next one, so from its third call on a loop such as
``crops = crop_and_resize(...)`` pays no page faults; plain NumPy pays them on every call.

``empty`` does what TensorFlow's allocator does, for one output at a time: an array of at least
``MIN_BYTES`` is a view of a buffer that goes back to a one-slot free list when the array and
every view of it are gone (a finalizer on the array's base). The next request of the same size
takes it; a request of another size (from MIN_BYTES to MAX_KEPT_BYTES) lets it be freed. So at
most one dropped output's memory is kept, and ``release`` frees it. Nothing here locks: a
finalizer can run in any thread, at any allocation, so the free list is a deque whose single
appends and pops are atomic.
"""

from __future__ import annotations

import collections
import contextlib
import math
import weakref

import numpy as np

# Below this, malloc's own free lists already reuse memory without page faults.
MIN_BYTES = 4 << 20
# A dropped output larger than this is freed, never kept.
MAX_KEPT_BYTES = 1 << 30

_free: collections.deque = collections.deque()


class _Owner:
    """The base of a recycled array: it lives as long as the array or any view of it."""

    __slots__ = ("__array_interface__", "__weakref__")


def empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array, as ``np.empty``; see the module docstring."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if not MIN_BYTES <= nbytes <= MAX_KEPT_BYTES:
        return np.empty(shape, dtype)
    raw = _take(nbytes)
    if raw is None:
        raw = np.empty(nbytes, dtype=np.uint8)
    owner = _Owner()
    owner.__array_interface__ = {
        "shape": tuple(shape),
        "typestr": dtype.str,
        "data": (raw.ctypes.data, False),
        "version": 3,
    }
    array = np.asarray(owner)
    weakref.finalize(owner, _give_back, raw)
    return array


def release() -> None:
    """Free the memory kept from dropped outputs."""
    _free.clear()


def kept_bytes() -> int:
    """Bytes kept from dropped outputs for the next call (0 or one output's size)."""
    return sum(raw.nbytes for raw in list(_free))


def _take(nbytes: int) -> np.ndarray | None:
    try:
        raw = _free.pop()
    except IndexError:
        return None
    return raw if raw.nbytes == nbytes else None  # another size: let it be freed


def _give_back(raw: np.ndarray) -> None:
    _free.append(raw)
    while len(_free) > 1:  # keep only the most recently dropped
        with contextlib.suppress(IndexError):  # another thread emptied it meanwhile
            _free.popleft()
