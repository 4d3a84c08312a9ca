"""Numba kernels over COCO RLE runs, used by ``cropcore.masks``.

They are plain Python functions until ``kernels()`` compiles them on first use (``cache=True``:
later processes, such as Ray workers, load the machine code from disk). Importing this module
does not import Numba. Every kernel reports malformed input through a small ``status`` array
instead of raising, so ``cropcore.masks`` can word the error.

Status codes (``status[0]``; ``status[1]`` holds the detail):
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np

OK = 0
BAD_CHARACTER = 1  # detail: position of the first character outside '0'..'o'
TRUNCATED = 2  # the last number has its "more" bit set
TOO_LONG = 3  # detail: characters in the first number longer than MAX_CHARS_PER_NUMBER

# pycocotools stores run lengths as uint32, so a compressed number (a difference of two runs)
# needs at most 34 bits plus sign: 7 characters of 5 bits. Longer numbers are corrupt input,
# and the cap keeps every shift and sum well inside int64.
MAX_CHARS_PER_NUMBER = 7


def parse_counts(codes, status):
    """Run lengths of pycocotools' compressed counts (``codes``: the ASCII bytes as uint8).

    Each number is a little-endian sequence of 5-bit groups stored as ``48 + group``; bit 0x20
    of a group means "more groups follow" and bit 0x10 of the last group is the sign. From the
    fourth number on, a number is the difference to the run two positions earlier.
    """
    runs = np.empty(len(codes), dtype=np.int64)
    n = 0
    i = 0
    while i < len(codes):
        value = np.int64(0)
        chars = 0
        group = 0x20
        while group & 0x20:
            if i >= len(codes):
                status[0] = TRUNCATED
                return runs[:0]
            group = np.int64(codes[i]) - 48
            if group < 0 or group > 63:
                status[0] = BAD_CHARACTER
                status[1] = i
                return runs[:0]
            if chars == MAX_CHARS_PER_NUMBER:
                status[0] = TOO_LONG
                status[1] = chars + 1
                while i + 1 < len(codes) and (np.int64(codes[i]) - 48) & 0x20:
                    i += 1
                    status[1] += 1
                return runs[:0]
            value |= (group & 0x1F) << (5 * chars)
            chars += 1
            i += 1
        if group & 0x10:
            value -= np.int64(1) << (5 * chars)
        if n > 2:
            value += runs[n - 2]
        runs[n] = value
        n += 1
    return runs[:n]


def cut_window(runs, height, x_min, y_min, x_max, y_max, mask_t):
    """Write the window's ones into ``mask_t``, the window's mask transposed (zeros,
    ``(x_max - x_min, y_max - y_min)`` uint8, so each column's runs are contiguous), and return
    the window's own column-major run lengths (zeros first).

    Column-major runs visit a window's pixels in the window's own column-major order, so the
    window's runs are the source runs clipped to each of its columns, merged where neighbours
    share a value. Runs before the window's first column are skipped, and the walk stops at the
    end of its last column.
    """
    first_pixel = x_min * height
    stop_pixel = x_max * height
    out = np.empty(len(runs) + (x_max - x_min) + 1, dtype=np.int64)
    m = 0
    current = 0  # value of the run being built (runs alternate 0, 1, 0, ...)
    length = 0
    start = 0
    for k in range(len(runs)):
        end = start + runs[k]
        if end > first_pixel and runs[k] > 0:
            if start >= stop_pixel:
                break
            value = k & 1
            s = max(start, first_pixel)
            e = min(end, stop_pixel)
            column = s // height
            while s < e:
                top = column * height
                a = max(s - top, y_min)
                b = min(min(e - top, height), y_max)
                if b > a:
                    if value:
                        mask_t[column - x_min, a - y_min : b - y_min] = 1
                    if value == current:
                        length += b - a
                    else:
                        out[m] = length
                        m += 1
                        current = value
                        length = b - a
                s = top + height
                column += 1
        start = end
    out[m] = length
    return out[: m + 1]


def compress_counts(runs):
    """pycocotools' compressed string of ``runs``, as ASCII codes (uint8)."""
    out = np.empty(len(runs) * 13, dtype=np.uint8)  # 13 groups of 5 bits hold any int64
    p = 0
    for i in range(len(runs)):
        value = runs[i]
        if i > 2:
            value -= runs[i - 2]
        more = True
        while more:
            group = value & 0x1F
            value >>= 5  # arithmetic: negative numbers end at -1
            more = value != -1 if group & 0x10 else value != 0
            if more:
                group |= 0x20
            out[p] = group + 48
            p += 1
    return out[:p]


def cut_compressed(codes, height, x_min, y_min, x_max, y_max, mask_t, status):
    """``parse_counts`` then ``cut_window`` then ``compress_counts``, in one call; the parsed
    runs' minimum and sum go to ``status[2]`` and ``status[3]`` for validation (the sum stops
    growing once it passes ``status[4]``, the expected total, so it never overflows)."""
    runs = parse_counts(codes, status)
    if status[0] != OK:
        return runs.astype(np.uint8)
    total = np.int64(0)
    smallest = np.int64(0) if len(runs) == 0 else runs[0]
    for k in range(len(runs)):
        smallest = min(smallest, runs[k])
        if total <= status[4]:
            total += min(runs[k], status[4] + 1)
    status[2] = smallest
    status[3] = total
    if smallest < 0 or total != status[4]:
        return runs.astype(np.uint8)[:0]
    return compress_counts(cut_window(runs, height, x_min, y_min, x_max, y_max, mask_t))


_KERNELS: SimpleNamespace | None = None
_LOCK = threading.Lock()


def kernels() -> SimpleNamespace:
    """The compiled kernels (compiled, or loaded from Numba's disk cache, on first call)."""
    global _KERNELS, parse_counts, cut_window, compress_counts
    with _LOCK:
        if _KERNELS is None:
            import numba

            jit = numba.njit(cache=True, nogil=True)
            # Rebind the module names first: Numba resolves the callees when it compiles.
            parse_counts, cut_window, compress_counts = (
                jit(parse_counts), jit(cut_window), jit(compress_counts))
            _KERNELS = SimpleNamespace(parse_counts=parse_counts, cut_window=cut_window,
                                       compress_counts=compress_counts,
                                       cut_compressed=jit(cut_compressed))
    return _KERNELS
