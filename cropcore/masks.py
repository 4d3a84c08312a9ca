"""Instance masks: COCO run-length encoding (whole frame or one window) and polygons.

Convention: an RLE is a dict ``{"size": [h, w], "counts": ...}`` as COCO and pycocotools write
it. Runs are column-major (the mask is scanned column by column, top to bottom) and alternate
0, 1, 0, ... starting with a run of zeros, which may be empty. ``counts`` is either the compressed
COCO string (``str`` or ASCII ``bytes``) or the uncompressed run lengths (a list of ints).
A window is ``(x_min, y_min, x_max, y_max)`` in integer pixels, half-open, as in
``cropcore.windows``: it selects ``mask[y_min:y_max, x_min:x_max]``.

Why a windowed decoder: a crop needs only the mask pixels under its window, and decoding a whole
1920x1080 mask costs about as much as encoding several crops. Because runs are column-major,
the columns of a window are one contiguous range of the run sequence: runs before the window's
first column are skipped and runs after its last column are never expanded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import pycocotools.mask

from cropcore import _rle_kernels
from cropcore._checks import is_int as _is_int

__all__ = ["POLYGON_STYLES", "cut_rle", "decode_rle", "encode_rle", "polygon_to_mask"]

#: How ``polygon_to_mask`` rasterizes: ``"coco"`` for COCO annotations, ``"roboflow"`` for
#: polygons that arrive as Roboflow or YOLO predictions (see ``docs/crop-semantics.md``).
POLYGON_STYLES = ("coco", "roboflow")

# cv2.fillPoly shifts coordinates by 16 bits into int64; keep truncated vertices in int32.
_INT32_LIMIT = 2**31

def decode_rle(rle: Mapping, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Decode a COCO RLE mask, or only one window of it.

    Args:
        rle: ``{"size": [h, w], "counts": str | bytes | list[int]}``, column-major COCO RLE.
        window: ``(x_min, y_min, x_max, y_max)`` integer pixels, half-open, inside the mask
            (``0 <= x_min <= x_max <= w``, ``0 <= y_min <= y_max <= h``); None for the whole mask.

    Returns:
        ndarray[H, W] bool, C-contiguous: the whole ``(h, w)`` mask, or
        ``(y_max - y_min, x_max - x_min)`` for a window (possibly with a zero side).

    Convention:
        Equal to ``pycocotools.mask.decode(rle).astype(bool)[y_min:y_max, x_min:x_max]``, but only
        the runs overlapping columns ``x_min .. x_max - 1`` are expanded; the counts string is
        still parsed in full (a small cost next to expanding pixels).

    Raises:
        ValueError: for a malformed RLE (size, counts type or characters, run lengths that do not
            sum to ``h * w``) or a window outside the mask; the message names what was expected.
    """
    return cut_rle(rle, window)[0]


def cut_rle(
    rle: Mapping, window: tuple[int, int, int, int] | None = None
) -> tuple[np.ndarray, dict]:
    """One window of a COCO RLE mask, decoded and re-encoded in the window's own frame.

    Args and errors as ``decode_rle``.

    Returns:
        ``(mask, window_rle)``: ``decode_rle(rle, window)`` and, equal to
        ``encode_rle(mask)``, its compressed RLE ``{"size": [h, w], "counts": str}``. Both come
        from one walk over the runs under the window (no second pass over the pixels).
    """
    height, width = _validate_rle_size(rle)
    if window is None:
        x_min, y_min, x_max, y_max = 0, 0, width, height
    else:
        x_min, y_min, x_max, y_max = _validate_window(window, height, width)
    # The kernels fill the transposed mask, where each column's runs are contiguous (4x faster
    # than strided writes); OpenCV's blocked transpose then gives the C-ordered mask.
    mask_t = np.zeros((x_max - x_min, y_max - y_min), dtype=np.uint8)
    kernels = _rle_kernels.kernels()
    counts = _compressed_bytes(rle["counts"])
    if counts is not None:
        status = np.array([0, 0, 0, 0, height * width], dtype=np.int64)
        chars = kernels.cut_compressed(np.frombuffer(counts, np.uint8), height,
                                       x_min, y_min, x_max, y_max, mask_t, status)
        if status[0] != _rle_kernels.OK or len(chars) == 0:
            _rle_counts(rle, height, width)  # raises the error, worded
            raise AssertionError(f"RLE kernel rejected counts the validator accepts: {status}")
    else:
        runs = _rle_counts(rle, height, width)
        chars = kernels.compress_counts(kernels.cut_window(runs, height, x_min, y_min, x_max,
                                                           y_max, mask_t))
    window_rle = {"size": [y_max - y_min, x_max - x_min], "counts": chars.tobytes().decode()}
    mask = cv2.transpose(mask_t) if mask_t.size else mask_t.T.copy()
    return mask.view(bool), window_rle


def encode_rle(mask: np.ndarray) -> dict:
    """Encode a mask as a compressed COCO RLE, byte-identical to ``pycocotools.mask.encode``.

    Args:
        mask (ndarray[H, W] bool): or an integer array holding only 0 and 1. A mask with a zero
            side is valid and encodes as ``"0"`` (one empty run), as pycocotools does.

    Returns:
        ``{"size": [h, w], "counts": str}`` with Python ints and an ASCII ``str`` counts, ready
        for JSON or a Parquet string column.

    Convention:
        Column-major runs, starting with a (possibly empty) run of zeros; see the module docstring.

    Raises:
        ValueError: if the mask is not 2-D, or not boolean / integer 0-1 valued.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.dtype != bool:
        if mask.dtype.kind not in "iu":
            raise ValueError(f"mask must be bool or integer 0/1, got dtype {mask.dtype}")
        if mask.size and not np.isin(mask, (0, 1)).all():
            bad = mask[(mask != 0) & (mask != 1)][:4]
            raise ValueError(f"integer mask must hold only 0 and 1, got values such as {bad}")
    # pycocotools reads the buffer column-major; anything else would encode the transpose.
    fortran = np.asfortranarray(mask, dtype=np.uint8)
    encoded = pycocotools.mask.encode(fortran)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": encoded["counts"].decode()}


def polygon_to_mask(
    polygon: np.ndarray, size_hw: tuple[int, int], *, style: str = "coco"
) -> np.ndarray:
    """Rasterize one polygon into a boolean mask, the way COCO or Roboflow does.

    Args:
        polygon (ndarray[P, 2] float): vertices ``(x, y)`` in pixels, in order, implicitly closed.
            Fewer than 3 vertices enclose nothing and give an all-False mask (Roboflow drops
            such predictions altogether; the caller decides whether to keep the detection).
        size_hw: ``(height, width)`` of the mask, non-negative ints.
        style: ``"coco"`` (the default) for COCO annotations, ``"roboflow"`` for polygons that
            come from Roboflow or YOLO predictions. The two differ by about one ring of pixels:
            a 10x10 integer square covers 100 pixels in COCO style and 121 in Roboflow style.

    Returns:
        ndarray[H, W] bool.

    Convention:
        ``style="coco"``: continuous pixel coordinates as in COCO and ``xyxy`` boxes: pixel
        ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)`` and is set when its centre
        ``(col + 0.5, row + 0.5)`` is inside the polygon under the even-odd rule. A centre
        exactly on an edge counts as inside on right and bottom edges and outside on left and
        top edges, so a box polygon ``[x0, x1] x [y0, y1]`` with integer corners sets exactly
        ``mask[y0:y1, x0:x1]``. This is the convention pycocotools' ``frPyObjects``
        approximates (it samples at 1/5-pixel precision), and it agrees with it exactly on boxes
        with integer or half-integer corners.

        ``style="roboflow"``: what supervision's ``Detections.from_inference`` and inference's
        converters compute. Vertices are truncated towards zero to integers (not rounded), then
        ``cv2.fillPoly(..., color=1)`` with 8-connected lines: pixel ``(row, col)`` is set when
        the lattice point ``(col, row)`` is inside the integer polygon (even-odd, OpenCV's
        16.16 fixed-point edge walk) or on the 8-connected line of one of its edges, so the
        outline is painted too and an integer box ``[x0, x1] x [y0, y1]`` sets
        ``mask[y0:y1 + 1, x0:x1 + 1]``. Vertices outside the mask follow OpenCV's own
        clipping.

    Raises:
        ValueError: for a polygon that is not ``(P, 2)``, non-finite vertices, a bad size, an
            unknown ``style``, or (Roboflow style) vertices beyond the int32 range.
    """
    if style not in POLYGON_STYLES:
        raise ValueError(f"style must be one of {POLYGON_STYLES}, got {style!r}")
    height, width = _validate_size_hw(size_hw)
    vertices = np.asarray(polygon, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 2:
        if vertices.size == 0:
            vertices = vertices.reshape(0, 2)
        else:
            raise ValueError(f"polygon must have shape (P, 2) of x, y, got {vertices.shape}")
    if not np.isfinite(vertices).all():
        raise ValueError("polygon vertices must be finite, got NaN or infinity")
    if style == "roboflow":
        return _polygon_to_mask_roboflow(vertices, height, width)
    mask = np.zeros((height, width), dtype=bool)
    if len(vertices) < 3 or height == 0 or width == 0:
        return mask

    x0, y0 = vertices[:, 0], vertices[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    row_centres = np.arange(height) + 0.5
    col_centres = np.arange(width) + 0.5
    # Only rows whose centre lies in (min y, max y] can be inside.
    row_lo = int(np.searchsorted(row_centres, y0.min(), side="right"))
    row_hi = int(np.searchsorted(row_centres, y0.max(), side="right"))
    if row_lo >= row_hi:
        return mask
    ys = row_centres[row_lo:row_hi, None]

    # An edge crosses a scanline when the centre is in (lower y, upper y]; the half-open test
    # counts a shared vertex once and skips horizontal edges.
    crosses = (np.minimum(y0, y1) < ys) & (ys <= np.maximum(y0, y1))
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
    x_cross = np.where(crosses, x_cross, np.inf)
    x_cross.sort(axis=1)
    # A closed outline crosses every scanline an even number of times; rows with fewer
    # crossings than the busiest row are padded with +inf, which become empty segments.
    x_cross = x_cross[:, : int(crosses.sum(axis=1).max())]
    # Even-odd: centres in (enter, leave] of each crossing pair are inside. The crossings cut
    # each row into segments that alternate outside, inside, ..., outside.
    n_rows, n_crossings = x_cross.shape
    bounds = np.empty((n_rows, n_crossings + 2), dtype=np.int64)
    bounds[:, 0] = 0
    bounds[:, 1:-1] = np.searchsorted(col_centres, x_cross, side="right")
    bounds[:, -1] = width
    inside = np.arange(n_crossings + 1) % 2 == 1
    segments = np.repeat(np.tile(inside, n_rows), np.diff(bounds, axis=1).ravel())
    mask[row_lo:row_hi] = segments.reshape(n_rows, width)
    return mask


def _polygon_to_mask_roboflow(vertices: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.fillPoly of the truncated vertices; ``vertices`` is a finite ``(P, 2)`` array."""
    if len(vertices) < 3 or height == 0 or width == 0:
        return np.zeros((height, width), dtype=bool)
    return fill_truncated_polygon(truncate_vertices(vertices), height, width)


def fill_truncated_polygon(truncated: np.ndarray, height: int, width: int) -> np.ndarray:
    """The ``(height, width)`` mask of Roboflow-style ``cv2.fillPoly`` of ``truncated``, a
    ``(P, 2)`` array of vertices that ``truncate_vertices`` returned (integers in int32)."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(canvas, [truncated.astype(np.int32)], color=1, lineType=cv2.LINE_8)
    return canvas.view(bool)


def truncate_vertices(vertices: np.ndarray) -> np.ndarray:
    """Roboflow's integer vertices: finite ``vertices`` truncated toward zero, refused
    outside the int32 range (``ValueError``)."""
    truncated = np.trunc(vertices)
    if np.abs(truncated).max() >= _INT32_LIMIT:
        raise ValueError(
            f"polygon vertices must lie within the int32 range, got {np.abs(vertices).max()}"
        )
    return truncated


def _validate_size_hw(size_hw, name: str = "size_hw") -> tuple[int, int]:
    if isinstance(size_hw, (str, bytes)) or not isinstance(size_hw, (Sequence, np.ndarray)):
        raise ValueError(f"{name} must be [height, width], got {size_hw!r}")
    if len(size_hw) != 2 or not all(_is_int(v) and v >= 0 for v in size_hw):
        raise ValueError(f"{name} must be two non-negative ints [height, width], got {size_hw!r}")
    return int(size_hw[0]), int(size_hw[1])


def _validate_rle_size(rle) -> tuple[int, int]:
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        keys = sorted(rle) if isinstance(rle, Mapping) else type(rle).__name__
        raise ValueError(f"rle must be a dict with 'size' and 'counts', got {keys}")
    return _validate_size_hw(rle["size"], "rle['size']")


def _validate_window(window, height: int, width: int) -> tuple[int, int, int, int]:
    if (
        isinstance(window, (str, bytes))
        or not isinstance(window, (Sequence, np.ndarray))
        or len(window) != 4
        or not all(_is_int(v) for v in window)
    ):
        raise ValueError(f"window must be four ints (x_min, y_min, x_max, y_max), got {window!r}")
    x_min, y_min, x_max, y_max = (int(v) for v in window)
    if not (0 <= x_min <= x_max <= width and 0 <= y_min <= y_max <= height):
        raise ValueError(
            f"window must satisfy 0 <= x_min <= x_max <= {width} and 0 <= y_min <= y_max <= "
            f"{height} for a mask of size [{height}, {width}], got {(x_min, y_min, x_max, y_max)}"
        )
    return x_min, y_min, x_max, y_max




def _rle_counts(rle: Mapping, height: int, width: int) -> np.ndarray:
    """Validated run lengths, int64 ``(M,)``, non-negative and summing to ``height * width``."""
    counts = rle["counts"]
    compressed = _compressed_bytes(counts)
    if compressed is not None:
        runs = _parse_compressed_counts(compressed)
    elif isinstance(counts, (Sequence, np.ndarray)):
        runs = _uncompressed_counts(counts)
    else:
        raise ValueError(
            f"rle['counts'] must be a compressed str/bytes or a list of ints, "
            f"got {type(counts).__name__}"
        )
    total = height * width
    if len(runs) and runs.min() < 0:
        raise ValueError(f"RLE run lengths must be non-negative, got {runs[runs < 0][:4]}")
    # Checking each run first keeps the sum far from int64 overflow on hostile input.
    if len(runs) and runs.max() > total:
        received = f"a run of {runs.max()}"
    else:
        received = int(runs.sum())
    if received != total:
        raise ValueError(
            f"RLE run lengths must sum to h * w = {height} * {width} = {total}, got {received}"
        )
    return runs


def _uncompressed_counts(counts) -> np.ndarray:
    runs = np.asarray(counts)
    if runs.size == 0:
        return np.zeros(0, dtype=np.int64)
    if runs.ndim != 1 or runs.dtype.kind not in "iu":
        raise ValueError(
            f"uncompressed RLE counts must be a flat list of ints, got dtype {runs.dtype} "
            f"and shape {runs.shape}"
        )
    if runs.dtype.kind == "u" and runs.max() > np.iinfo(np.int64).max:
        raise ValueError(f"RLE run length too large: {runs.max()}")
    return runs.astype(np.int64, copy=False)


def _compressed_bytes(counts) -> bytes | None:
    """The ASCII bytes of compressed counts, or None for uncompressed (list) counts."""
    if isinstance(counts, str):
        try:
            return counts.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("compressed RLE counts must be ASCII characters '0'..'o'") from None
    if isinstance(counts, (bytes, bytearray, memoryview)):
        return bytes(counts)
    return None


def _parse_compressed_counts(raw: bytes) -> np.ndarray:
    """Run lengths of a compressed counts string (see ``_rle_kernels.parse_counts``)."""
    status = np.zeros(2, dtype=np.int64)
    runs = _rle_kernels.kernels().parse_counts(np.frombuffer(raw, np.uint8), status)
    if status[0] == _rle_kernels.BAD_CHARACTER:
        position = int(status[1])
        raise ValueError(
            f"compressed RLE counts must use characters '0'..'o' (ASCII 48..111), got "
            f"{chr(raw[position])!r} at position {position}"
        )
    if status[0] == _rle_kernels.TRUNCATED:
        raise ValueError("compressed RLE counts end in the middle of a number (truncated?)")
    if status[0] == _rle_kernels.TOO_LONG:
        raise ValueError(
            f"compressed RLE counts hold a number of {int(status[1])} characters, at most "
            f"{_rle_kernels.MAX_CHARS_PER_NUMBER} fit a 32-bit run length"
        )
    return runs
