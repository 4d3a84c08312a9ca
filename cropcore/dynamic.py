"""Dynamic crop: one crop per detection, optional background removal, predictions translated.

Convention: each box is rounded to integer pixels half to even, per coordinate, then clamped to
the image; the crop is ``image[y_min:y_max, x_min:x_max]`` (half-open). Boxes that end up empty
give ``None``. The crop's own detection is translated into the crop frame: boxes, oriented-box
corners (``data["xyxyxyxy"]``), keypoints and polygons move by ``-(x_min, y_min)`` and keep their
float values (not clipped), masks are cut to the window.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from cropcore.color import parse_color
from cropcore.crops import Crop, CropBatch
from cropcore.detections import MASK_RLE, Detections
from cropcore.masks import (
    POLYGON_STYLES,
    cut_rle,
    fill_truncated_polygon,
    polygon_to_mask,
    truncate_vertices,
)
from cropcore.resize import crop_and_resize
from cropcore.windows import NOT_FINITE, box_faults, empty_windows, windows_from_xyxy

__all__ = [
    "MASK_RLE",
    "POLYGON_STYLE",
    "background_fill",
    "crop_and_resize_batch",
    "detection_windows",
    "dynamic_crop",
    "dynamic_crop_batch",
    "invalid_boxes",
    "remove_background",
]

#: ``Detections.data`` key of each detection's polygon style (``"coco"`` or ``"roboflow"``,
#: ``None`` for the call's default), used when a polygon stands in for a missing mask.
POLYGON_STYLE = "polygon_style"


def background_fill(color_bgr: tuple[int, int, int], channels: int) -> tuple[float, ...]:
    """The per-channel fill value of a BGR colour for an image with 1, 3 or 4 channels.

    One channel gets the colour's luma (OpenCV's BGR2GRAY weights); four channels get the colour
    with the alpha channel left to the crop (see ``remove_background``).
    """
    b, g, r = color_bgr
    if channels == 1:
        return (float(np.round(0.114 * b + 0.587 * g + 0.299 * r)),)
    if channels in (3, 4):
        return (float(b), float(g), float(r))
    raise ValueError(f"background removal needs 1, 3 or 4 channels, got {channels}")


_BACKGROUNDS: dict[tuple, np.ndarray] = {}
#: The image dtypes ``remove_background`` blends: those OpenCV's addWeighted and copyTo keep.
BLEND_DTYPES = tuple(np.dtype(d) for d in (np.uint8, np.int8, np.uint16, np.int16, np.uint32,
                                           np.int32, np.float16, np.float32, np.float64))


def _background(shape: tuple[int, ...], dtype: np.dtype, fill: tuple[float, ...]) -> np.ndarray:
    """A ``shape`` view of a constant image, reused across calls: filling a fresh array for
    every crop costs more than the blend itself."""
    key = (np.dtype(dtype).str, fill)
    canvas = _BACKGROUNDS.get(key)
    if canvas is None or canvas.shape[0] < shape[0] or canvas.shape[1] < shape[1]:
        height = max(shape[0], 0 if canvas is None else canvas.shape[0])
        width = max(shape[1], 0 if canvas is None else canvas.shape[1])
        canvas = np.empty((height, width, len(fill)), dtype=dtype)
        canvas[...] = np.asarray(fill, dtype=np.float64).astype(dtype)
        canvas.flags.writeable = False
        if len(_BACKGROUNDS) > 16:
            _BACKGROUNDS.clear()
        _BACKGROUNDS[key] = canvas
    return canvas[: shape[0], : shape[1]]


def remove_background(
    crop: np.ndarray, mask: np.ndarray, opacity: float, color_bgr: tuple[int, int, int]
) -> np.ndarray:
    """Blend the pixels outside ``mask`` towards a background colour.

    ``out = where(mask, crop, saturate(round(opacity * colour + (1 - opacity) * crop)))``, computed
    exactly as Roboflow computes it:
    ``cv2.addWeighted(where(mask, crop, colour), opacity, crop, 1 - opacity, 0)``. With opacity 1
    the background is exactly the colour; with opacity 0 the crop is returned unchanged (the same
    array, not a copy). A fourth (alpha) channel is kept as it is. OpenCV rounds the weights to
    float32 and fuses the multiply-adds, so exact ties can round differently from a float64
    evaluation of the formula; we keep OpenCV's result because it is the reference's.

    Args:
        crop (ndarray[h, w] or ndarray[h, w, C]): C in 1, 3, 4; a dtype OpenCV blends exactly
            (``BLEND_DTYPES``), in either byte order (the result is in native order). The
            colour saturates to the dtype's range (255 is 127 in an int8 image).
        mask (ndarray[h, w]): the object where true (any dtype: above 0 is the object, as in
            Roboflow's overlay, so -1 and NaN are background).

    Raises:
        ValueError: on an opacity outside [0, 1], a mask of another shape, or another dtype
            (64-bit integers would be narrowed to 32 bits by OpenCV).
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"mask_opacity must be within [0, 1], got {opacity}")
    if opacity == 0.0 or crop.size == 0:
        return crop
    if mask.shape != crop.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match crop shape {crop.shape[:2]}")
    dtype = crop.dtype.newbyteorder("=")
    if dtype not in BLEND_DTYPES:
        raise ValueError(f"background removal supports images of "
                         f"{', '.join(np.dtype(d).name for d in BLEND_DTYPES)}; got {crop.dtype}")
    if crop.dtype != dtype:  # OpenCV reads native byte order only
        crop = crop.astype(dtype)
    if mask.dtype != bool:
        mask = mask > 0
    squeeze = crop.ndim == 2
    pixels = crop[:, :, None] if squeeze else crop
    channels = pixels.shape[2]
    fill = background_fill(color_bgr, channels)
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        fill = tuple(min(max(v, limits.min), limits.max) for v in fill)
    # OpenCV takes row-strided views as they are; only a channel subset needs a copy.
    colour_part = pixels if channels == len(fill) else np.ascontiguousarray(pixels[:, :, :3])
    # Blend the whole window with OpenCV's SIMD path, then copy the object's pixels back
    # (cv2.copyTo is ~30x faster than a broadcast np.copyto with where=).
    mask = np.ascontiguousarray(mask).view(np.uint8)
    if opacity == 1.0 and not any(fill):
        # Black: OpenCV zero-fills a destination it allocates for a masked copy.
        blended = cv2.copyTo(colour_part, mask).reshape(colour_part.shape)
    else:
        background = _background(colour_part.shape, crop.dtype, fill)
        if opacity == 1.0:  # addWeighted(bg, 1, crop, 0, 0) is exactly bg: skip the arithmetic
            blended = background.copy()
        else:
            blended = cv2.addWeighted(background, opacity, colour_part, 1.0 - opacity, 0.0)
            blended = blended.reshape(colour_part.shape)
        cv2.copyTo(colour_part, mask, blended)
    if channels == 4:
        blended = np.concatenate([blended, pixels[:, :, 3:]], axis=2)
    return blended[:, :, 0] if squeeze else blended


def _opacity(value) -> float:
    """``mask_opacity`` as a float; ``ValueError`` unless it is a number within [0, 1]."""
    try:
        opacity = float(value)
    except (TypeError, ValueError):
        opacity = math.nan
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"mask_opacity must be within [0, 1], got {value}")
    return opacity


def dynamic_crop(
    image: np.ndarray,
    detections: Detections,
    mask_opacity: float = 0.0,
    background_color=(0, 0, 0),
) -> list[Crop | None]:
    """One crop per detection, in input order; ``None`` where the clamped window is empty.

    Args:
        image (ndarray[H, W] or ndarray[H, W, C]): C in 1, 3, 4 when masks are applied.
        detections: boxes in image pixels; ``detection_id`` is required.
        mask_opacity: in [0, 1]; above 0, pixels outside a detection's mask blend towards
            ``background_color``; a detection without mask uses its polygon (Roboflow style),
            and one with neither is left unchanged (see ``dynamic_crop_batch``).
        background_color: an RGB colour in any form ``parse_color`` accepts.

    Returns:
        a list of ``len(detections)`` entries; each ``Crop`` carries the crop's own detection
        translated into the crop frame in ``crop.detections`` (oriented boxes included, as
        Roboflow's block does since inference PR #2430).

    Raises:
        ValueError: for what ``dynamic_crop_batch`` raises for, a non-finite box, and a mask it
            cannot use (an RLE mask that does not fit the image, or, with ``mask_opacity``
            above 0, an unusable polygon): the message names the detection and says why.
            ``dynamic_crop_batch`` reports such detections as ``invalid_mask`` instead.
    """
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise ValueError(f"image must be an H x W or H x W x C array, got "
                         f"{type(image).__name__} with shape {getattr(image, 'shape', None)}")
    if not isinstance(detections, Detections):
        raise ValueError(f"detections must be a Detections, got {type(detections).__name__}")
    if len(detections) and detections.detection_id is None:
        raise ValueError("dynamic_crop needs detection ids: detections.detection_id is None")
    _opacity(mask_opacity)
    height, width = image.shape[:2]
    if detections.mask is not None and detections.mask.shape[1:] != (height, width):
        raise ValueError(
            f"masks must match the image size {(height, width)}, got {detections.mask.shape[1:]}"
        )
    windows_from_xyxy(detections.xyxy, (width, height))  # non-finite boxes raise here
    batch = dynamic_crop_batch(image, detections, mask_opacity, background_color)
    crops: list[Crop | None] = []
    for i, window in enumerate(batch.windows.tolist()):
        if batch.reasons[i] == "invalid_mask":  # only "empty_window" is a None
            raise ValueError(f"detection {i} ({detections.detection_id[i]!r}): "
                             f"{batch.messages[i]}")
        if batch.reasons[i] is not None:
            crops.append(None)
            continue
        own = detections[i].in_window(window)
        crops.append(Crop(batch.crops[i], window, (width, height), detections=own))
    return crops


def invalid_boxes(boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reason (``"invalid_box"``) and its message for each box that no image can crop.

    Known before any pixel is read, so a caller may skip fetching and decoding.

    Args:
        boxes_xyxy (ndarray[N, 4] float): pixel boxes; NaN stands for a null coordinate.

    Returns:
        ``(reasons, messages)``: ndarray[N] object each, ``None`` for a valid box.

    Convention:
        ``box_faults``: a coordinate not finite, or ``x_max < x_min`` or ``y_max < y_min``.

    Example:
        >>> invalid_boxes(np.array([[0.0, 0, 1, 1], [2.0, 0, 1, 1]]))[1].tolist()
        [None, 'box [2.0, 0.0, 1.0, 1.0] has x_max < x_min or y_max < y_min']
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    faults = box_faults(boxes)
    reasons = np.full(len(boxes), None, dtype=object)
    messages = np.full(len(boxes), None, dtype=object)
    for i in np.flatnonzero(faults != ""):
        reasons[i] = "invalid_box"
        messages[i] = (f"box {boxes[i].tolist()} has a null, NaN or infinite coordinate"
                       if faults[i] == NOT_FINITE
                       else f"box {boxes[i].tolist()} has x_max < x_min or y_max < y_min")
    return reasons, messages


def detection_windows(
    boxes_xyxy: np.ndarray, size_wh: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every box's window and, for boxes that give no crop, the reason, in one call.

    Args:
        boxes_xyxy (ndarray[N, 4] float): pixel boxes; NaN stands for a null coordinate, and
            coordinates may be huge (see ``windows_from_xyxy``).
        size_wh: the image's ``(width, height)``.

    Returns:
        ``(windows, reasons, messages)``: ndarray[N, 4] int64 clamped windows (zeros for an
        invalid box), ndarray[N] object reasons (``None``, ``"invalid_box"`` or
        ``"empty_window"``) and ndarray[N] object messages saying why, with the box.

    Convention:
        ``invalid_box``: a coordinate is not finite, or ``x_max < x_min`` or ``y_max < y_min``
        (``box_faults``); ``empty_window``: a valid box whose rounded, clamped window holds no
        pixel (zero area, or outside the image).

    Example:
        >>> windows, reasons, _ = detection_windows(
        ...     np.array([[1.4, 2.5, 6.5, 9.0], [20.0, 0, 30, 5], [5.0, 0, 1, 5]]), (10, 10))
        >>> windows.tolist(), reasons.tolist()
        ([[1, 2, 6, 9], [10, 0, 10, 5], [0, 0, 0, 0]], [None, 'empty_window', 'invalid_box'])
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    width, height = size_wh
    reasons, messages = invalid_boxes(boxes)
    valid = np.equal(reasons, None)
    windows = windows_from_xyxy(np.where(valid[:, None], boxes, 0.0), size_wh)
    windows[~valid] = 0
    empty = valid & empty_windows(windows)
    for i in np.flatnonzero(empty):
        reasons[i] = "empty_window"
        messages[i] = (f"box {boxes[i].tolist()} covers no pixel of the {width}x{height} "
                       f"image")
    return windows, reasons, messages


def _rle_in_window(rle, size_wh: tuple[int, int], window) -> tuple[np.ndarray, dict]:
    """The RLE mask under ``window`` and its RLE in the crop frame; ``ValueError`` says why
    the mask cannot be used."""
    if not hasattr(rle, "get"):
        raise ValueError(f"mask must be a COCO RLE dict, got {type(rle).__name__}")
    size, counts = rle.get("size"), rle.get("counts")
    if size is None or counts is None or len(size) != 2 or any(v is None for v in size):
        raise ValueError(f"mask needs size [height, width] and counts, got size={size!r} "
                         f"and {'no counts' if counts is None else 'counts'}")
    height, width = size
    if (width, height) != tuple(size_wh):
        raise ValueError(f"mask size {[height, width]} does not match the image "
                         f"({size_wh[1]}x{size_wh[0]})")
    return cut_rle(rle, window)


def _polygon_in_window(vertices: np.ndarray, style: str, size_wh: tuple[int, int],
                       window) -> np.ndarray:
    """``polygon_to_mask(vertices, (H, W), style=style)[window]``, rasterized only where it
    matters: Roboflow style on the canvas of the truncated vertices' extent (OpenCV clips only
    at the image's own edges there, so the pixels are the full image's), COCO style (one
    test per pixel centre) on the image's top-left part that ends at the window."""
    width, height = size_wh
    x0, y0, x1, y1 = (int(v) for v in window)
    if style == "coco":
        return polygon_to_mask(vertices, (y1, x1), style="coco")[y0:y1, x0:x1]
    if not np.isfinite(vertices).all():
        raise ValueError("polygon vertices must be finite, got NaN or infinity")
    truncated = truncate_vertices(vertices)  # polygon_to_mask's error, even off the window
    (left, top), (right, bottom) = truncated.min(axis=0).tolist(), truncated.max(axis=0).tolist()
    cx0, cx1 = min(max(int(left), 0), width), min(max(int(right) + 1, 0), width)
    cy0, cy1 = min(max(int(top), 0), height), min(max(int(bottom) + 1, 0), height)
    out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    lx0, ly0, lx1, ly1 = max(x0, cx0), max(y0, cy0), min(x1, cx1), min(y1, cy1)
    if lx1 <= lx0 or ly1 <= ly0:
        return out
    canvas = fill_truncated_polygon(truncated - (cx0, cy0), cy1 - cy0, cx1 - cx0)
    out[ly0 - y0 : ly1 - y0, lx0 - x0 : lx1 - x0] = canvas[ly0 - cy0 : ly1 - cy0,
                                                           lx0 - cx0 : lx1 - cx0]
    return out


def dynamic_crop_batch(
    image: np.ndarray,
    detections: Detections,
    mask_opacity: float = 0.0,
    background_color=(0, 0, 0),
    *,
    polygon_style: str = "roboflow",
) -> CropBatch:
    """All crops of one image's detections in one call: windows, reasons and pixels.

    The batched form of ``dynamic_crop`` the crop job calls. It takes boxes the job has not
    checked (null, inverted or huge coordinates) and says why a detection gives no crop
    instead of raising.

    Args:
        image (ndarray[H, W] or ndarray[H, W, C]): C in 1, 3, 4 when backgrounds are removed.
        detections: boxes in image pixels (NaN for null coordinates). A mask is taken from,
            in order: ``data[MASK_RLE]`` (COCO RLE per detection, decoded only inside the
            window), ``mask`` (dense), and, only for background removal, ``polygons``
            rasterized inside the window in ``data[POLYGON_STYLE]`` style (else
            ``polygon_style``).
        mask_opacity: in [0, 1]; above 0 the pixels outside the detection's mask blend towards
            ``background_color`` (``remove_background``).
        background_color: an RGB colour in any form ``parse_color`` accepts.
        polygon_style: the default ``polygon_to_mask`` style of polygons standing in for masks.

    Returns:
        a ``CropBatch`` of ``len(detections)`` rows: ``reasons`` are ``invalid_box``,
        ``empty_window`` (``detection_windows``) or ``invalid_mask`` (an RLE mask that does not
        fit the image, or an unusable polygon); ``masks`` hold each RLE mask cut to its window;
        ``unmasked`` marks crops that kept their background for lack of mask and polygon.

    Convention:
        As Roboflow's pipeline does, a polygon stands in for a missing mask (Roboflow
        rasterizes prediction polygons before Dynamic Crop); a polygon with fewer than 3
        vertices is no polygon. The polygon's mask inside the window equals
        ``polygon_to_mask(polygon, (H, W), style=...)`` cut to the window. An invalid RLE
        mask gives ``invalid_mask`` whatever the opacity; an invalid polygon only when it is
        needed (opacity above 0).

    Raises:
        ValueError: for a malformed image, an opacity outside [0, 1], a bad colour, dense masks
            of another size than the image, or an unknown polygon style.
    """
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise ValueError(f"image must be an H x W or H x W x C array, got "
                         f"{type(image).__name__} with shape {getattr(image, 'shape', None)}")
    if not isinstance(detections, Detections):
        raise ValueError(f"detections must be a Detections, got {type(detections).__name__}")
    opacity = _opacity(mask_opacity)
    if polygon_style not in POLYGON_STYLES:
        raise ValueError(f"polygon_style must be one of {POLYGON_STYLES}, got {polygon_style!r}")
    height, width = image.shape[:2]
    size_wh = (width, height)
    if detections.mask is not None and detections.mask.shape[1:] != (height, width):
        raise ValueError(
            f"masks must match the image size {(height, width)}, got {detections.mask.shape[1:]}"
        )
    color_bgr = parse_color(background_color)
    windows, reasons, messages = detection_windows(detections.xyxy, size_wh)
    n = len(detections)
    crops: list = [None] * n
    masks: list = [None] * n
    unmasked = np.zeros(n, dtype=bool)
    rles = detections.data.get(MASK_RLE)
    styles = detections.data.get(POLYGON_STYLE)
    for i in np.flatnonzero(np.equal(reasons, None)).tolist():
        window = windows[i].tolist()
        x0, y0, x1, y1 = window
        crop = image[y0:y1, x0:x1]
        window_mask = None
        rle = rles[i] if rles is not None else None
        try:
            if rle is not None:
                window_mask, masks[i] = _rle_in_window(rle, size_wh, window)
            elif detections.mask is not None:
                window_mask = detections.mask[i, y0:y1, x0:x1]
            if opacity > 0 and window_mask is None:
                polygon = detections.polygons[i] if detections.polygons is not None else None
                if polygon is not None and len(polygon) >= 3:
                    style = styles[i] if styles is not None and styles[i] is not None \
                        else polygon_style
                    if style not in POLYGON_STYLES:
                        raise ValueError(f"polygon style must be one of {POLYGON_STYLES}, "
                                         f"got {style!r}")
                    try:
                        window_mask = _polygon_in_window(polygon, style, size_wh, window)
                    except ValueError as error:
                        raise ValueError(f"polygon: {error}") from None
        except ValueError as error:
            reasons[i], messages[i], masks[i] = "invalid_mask", str(error), None
            continue
        if opacity > 0:
            if window_mask is None:
                unmasked[i] = True
            else:
                crop = remove_background(crop, window_mask, opacity, color_bgr)
        crops[i] = crop
    return CropBatch(windows, reasons, messages, crops, masks, unmasked)


def crop_and_resize_batch(
    image: np.ndarray,
    boxes_xyxy: np.ndarray,
    size_wh: tuple[int, int],
    crop_size: tuple[int, int],
    method: str = "bilinear",
    extrapolation_value: float = 0.0,
    reduce: int = 1,
) -> CropBatch:
    """Every box of one image cut and resized to ``crop_size``, windows and reasons included.

    Args:
        image (ndarray[h, w] or ndarray[h, w, C]): the decoded pixels: the full image, or with
            ``reduce`` > 1 a JPEG decoded at ``1 / reduce`` of its size (DCT scaling).
        boxes_xyxy (ndarray[N, 4] float): pixel boxes in the full image, as
            ``detection_windows`` takes them.
        size_wh: the full image's ``(width, height)``: windows and reasons refer to it.
        crop_size, method, extrapolation_value: as ``crop_and_resize``.
        reduce: the decode's scale factor (1, 2, 4 or 8).

    Returns:
        a ``CropBatch`` whose crops are float32 ``(crop_h, crop_w, C)`` arrays and whose windows
        are the boxes' windows in the full image (what lineage records).

    Convention:
        Boxes are sampled as TensorFlow does, a pixel box mapping to ``p / (H - 1)``, in
        float32: a box with a coordinate beyond float32's range (``1e300``) is ``invalid_box``. On a
        reduced decode a reduced pixel ``i`` averages full pixels ``[i * r, (i + 1) * r)``:
        box coordinates move to ``(p + 0.5) / r - 0.5``, and coordinates inside the full image
        stay inside the reduced one.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    windows, reasons, messages = detection_windows(boxes, size_wh)
    with np.errstate(over="ignore"):
        beyond = np.equal(reasons, None) & ~np.isfinite(boxes.astype(np.float32)).all(axis=1)
    for i in np.flatnonzero(beyond):  # crop_and_resize samples in float32
        reasons[i] = "invalid_box"
        windows[i] = 0  # as for every invalid box (CropBatch.windows)
        messages[i] = (f"box {boxes[i].tolist()} has a coordinate beyond the float32 range "
                       f"crop_and_resize samples in")
    selected = np.flatnonzero(np.equal(reasons, None))
    crops: list = [None] * len(boxes)
    if len(selected):
        height, width = image.shape[:2]
        pixel_boxes = boxes[selected]
        if reduce > 1:
            full = np.array([size_wh[0] - 1, size_wh[1] - 1] * 2, dtype=np.float64)
            small = np.array([width - 1, height - 1] * 2, dtype=np.float64)
            inside = (pixel_boxes >= 0) & (pixel_boxes <= full)
            mapped = (pixel_boxes + 0.5) / reduce - 0.5
            pixel_boxes = np.where(inside, np.clip(mapped, 0, small), mapped)
        scale = np.array([max(height - 1, 1), max(width - 1, 1)] * 2, dtype=np.float64)
        normalized = (pixel_boxes[:, [1, 0, 3, 2]] / scale).astype(np.float32)
        pixels = image if image.ndim == 3 else image[:, :, None]
        resized = crop_and_resize(pixels[None], normalized, np.zeros(len(selected), np.int32),
                                  crop_size, method, extrapolation_value)
        for k, i in enumerate(selected.tolist()):
            crops[i] = resized[k]
    return CropBatch(windows, reasons, messages, crops, [None] * len(boxes),
                     np.zeros(len(boxes), dtype=bool))
