"""Image bytes to and from NumPy arrays: a header-only size, a guarded decode, a fixed encode.

Convention: pixels are OpenCV's: ``uint8``, ``(H, W, C)``, channels in BGR (or BGRA) order.
Sizes read from headers are ``(width, height)``; array shapes are ``(height, width, channels)``.
The stored pixel grid is used as is: EXIF orientation is never applied, so boxes computed on the
stored image (as ``PIL.Image.open`` and most annotation tools see it) stay valid, and
``read_image_size`` agrees with the decoded shape.

Only JPEG, PNG and WebP are decoded: for these three the pixel count can be checked from the
header before any pixel memory is allocated, which is what makes the decompression-bomb guard
(``max_pixels``) sound. All functions are pure: bytes and arrays in, bytes and arrays out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageDecodeError",
    "decode_image",
    "encode_image",
    "read_image_size",
]

# Pillow's decompression-bomb limit: Image.open raises DecompressionBombError above
# 2 * Image.MAX_IMAGE_PIXELS = 2 * (1024 ** 3 // 4 // 3) pixels (it only warns above half that).
DEFAULT_MAX_PIXELS = 178_956_970

_REASONS = ("undecodable", "too_many_pixels", "unsupported")
_REDUCE_FACTORS = (1, 2, 4, 8)
_MODES = ("color", "unchanged")
_FORMATS = ("png", "jpeg", "webp")
_DEFAULT_QUALITY = {"jpeg": 95, "webp": 90}
# zlib level 1: crops are encoded once per box, and higher levels cost 1.4-3x the time for 1-3%
# smaller files. Set explicitly so output bytes do not follow OpenCV's default between versions.
_PNG_COMPRESSION = 1

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG frame headers (SOFn) carry the size; C4, C8 and CC share the range but are not frames.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Baseline, extended and progressive, Huffman or arithmetic: what libjpeg-turbo decodes to 8 bit.
_JPEG_DECODABLE_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC9, 0xCA})
_JPEG_STANDALONE_MARKERS = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})
_OTHER_SIGNATURES = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


class ImageDecodeError(ValueError):
    """Image bytes that ``decode_image`` or ``read_image_size`` refuse, with a machine reason.

    Attributes:
        reason: ``"undecodable"`` (corrupt, truncated, empty or unknown bytes),
            ``"too_many_pixels"`` (the header declares more than ``max_pixels``) or
            ``"unsupported"`` (a valid image in a format or layout we do not decode).
    """

    def __init__(self, reason: str, message: str) -> None:
        if reason not in _REASONS:
            raise ValueError(f"reason must be one of {_REASONS}, got {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class _Header:
    format: str  # "jpeg", "png" or "webp"
    width: int
    height: int
    jpeg_sof: int = 0  # the SOFn marker byte
    jpeg_precision: int = 8
    jpeg_components: int = 0
    jpeg_frame_end: int = 0  # offset just past the frame header
    webp_animated: bool = False


def read_image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of a JPEG, PNG or WebP image, from its header only.

    Args:
        data: the encoded image (``bytes``, ``bytearray`` or ``memoryview``); only the header
            is read, so a prefix of the file is enough.

    Returns:
        ``(width, height)`` in pixels of the stored grid (EXIF orientation is not applied).

    Convention:
        JPEG: the first SOFn frame header; PNG: IHDR; WebP: the VP8 frame header, the VP8L
        header or the VP8X canvas size.

    Raises:
        ImageDecodeError: ``"undecodable"`` when the size cannot be determined (empty, unknown
            or truncated header), ``"unsupported"`` for a recognised format other than these three.
        TypeError: if ``data`` is not bytes-like.
    """
    header = _read_header(_as_bytes_view(data))
    return header.width, header.height


def decode_image(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    reduce: int = 1,
    mode: str = "color",
) -> np.ndarray:
    """Decode JPEG, PNG or WebP bytes into a ``uint8`` BGR(A) array, refusing oversized images.

    Args:
        data: the encoded image, bytes-like.
        max_pixels: refuse images whose header declares more than this many pixels
            (``width * height``), before decoding. Default: Pillow's bomb limit.
        reduce: 1, 2, 4 or 8; decode at ``1 / reduce`` of the size. JPEG is decoded DCT-scaled
            (cheaper; pixel values differ from a resized full decode), other formats are decoded
            in full and then resized with ``cv2.INTER_AREA``.
        mode: ``"color"`` (default) or ``"unchanged"``, see Convention.

    Returns:
        ndarray[H, W, C] uint8, C-contiguous and writable, with ``H = ceil(height / reduce)``
        and ``W = ceil(width / reduce)``:
        ``mode="color"``: C = 3, BGR. Grayscale is replicated to 3 channels, alpha is dropped
        (not composited), CMYK JPEG is converted to BGR by OpenCV.
        ``mode="unchanged"``: C = 1 (grayscale), 3 (BGR) or 4 (BGRA; grayscale with alpha is
        expanded to BGRA by OpenCV).

    Convention:
        Always 8 bits: 16-bit PNG samples are reduced to their high byte (``>> 8``), which is what
        OpenCV and libpng do for 8-bit reads. EXIF orientation is ignored (the stored grid).
        Animated WebP, 12-bit and lossless or hierarchical JPEG are ``"unsupported"``. A JPEG
        without an end-of-image marker after its frame header is ``"undecodable"``
        ("truncated JPEG") even if the decoder could return partial pixels.

    Raises:
        ImageDecodeError: with ``reason`` ``"undecodable"``, ``"too_many_pixels"`` or
            ``"unsupported"``.
        ValueError: for a bad ``max_pixels``, ``reduce`` or ``mode``.
        TypeError: if ``data`` is not bytes-like.
    """
    view = _as_bytes_view(data)
    if not _is_int(max_pixels) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    if not _is_int(reduce) or reduce not in _REDUCE_FACTORS:
        raise ValueError(f"reduce must be one of {_REDUCE_FACTORS}, got {reduce!r}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")

    header = _read_header(view)
    if header.width * header.height > max_pixels:
        raise ImageDecodeError(
            "too_many_pixels",
            f"header declares {header.width} x {header.height} = "
            f"{header.width * header.height} pixels, more than max_pixels={max_pixels}",
        )
    _check_decodable_layout(header, view)

    dct_scaled = header.format == "jpeg" and reduce > 1
    flags = _imread_flags(mode, reduce if dct_scaled else 1, header.jpeg_components == 1)
    try:
        image = cv2.imdecode(np.frombuffer(view, dtype=np.uint8), flags)
    except cv2.error as error:
        raise ImageDecodeError("undecodable", f"OpenCV failed: {error}") from None
    if image is None:
        raise ImageDecodeError("undecodable", f"corrupt or truncated {header.format.upper()}")

    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageDecodeError("unsupported", f"decoded sample type {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, np.newaxis]

    scale = reduce if dct_scaled else 1
    expected = (math.ceil(header.height / scale), math.ceil(header.width / scale))
    if image.shape[:2] != expected:
        # The pixel guard trusted the header, so a disagreeing decoder output is not trusted.
        raise ImageDecodeError(
            "undecodable",
            f"decoded size {image.shape[1]} x {image.shape[0]} differs from the header's "
            f"{expected[1]} x {expected[0]}",
        )
    if mode == "color" and image.shape[2] != 3:
        raise ImageDecodeError("unsupported", f"decoded {image.shape[2]} channels in color mode")
    if image.shape[2] not in (1, 3, 4):
        raise ImageDecodeError("unsupported", f"decoded {image.shape[2]} channels")

    if reduce > 1 and not dct_scaled:
        size_wh = (math.ceil(header.width / reduce), math.ceil(header.height / reduce))
        resized = cv2.resize(image, size_wh, interpolation=cv2.INTER_AREA)
        image = resized.reshape(size_wh[1], size_wh[0], image.shape[2])
    return image


def encode_image(image: np.ndarray, format: str = "png", quality: int | None = None) -> bytes:
    """Encode a ``uint8`` BGR(A) or grayscale image as PNG, JPEG or WebP bytes.

    Args:
        image (ndarray[H, W] or ndarray[H, W, C] uint8): C in 1, 3 (BGR), 4 (BGRA); both sides
            at least 1. JPEG takes C in 1, 3 (it has no alpha); WebP stores grayscale as colour.
        format: ``"png"``, ``"jpeg"`` or ``"webp"``.
        quality: JPEG and WebP only, an int in 1..100 (lossy); default 95 for JPEG, 90 for WebP.
            Must be None for PNG (lossless, zlib level 1).

    Returns:
        The encoded bytes. Deterministic: the same image, format and quality give the same bytes
        with the same OpenCV build (JPEG 4:2:0 baseline, PNG zlib level 1, WebP lossy).

    Convention:
        Channels are read as BGR(A), the order ``decode_image`` returns.

    Raises:
        ValueError: for an unknown format, a bad quality, or an image of the wrong dtype or shape.
    """
    if format not in _FORMATS:
        raise ValueError(f"format must be one of {_FORMATS}, got {format!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got dtype {image.dtype}")
    channels = image.shape[2] if image.ndim == 3 else 1
    if image.ndim not in (2, 3) or channels not in (1, 3, 4):
        raise ValueError(
            f"image must have shape (H, W) or (H, W, C) with C in 1, 3, 4, got {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"cannot encode an empty image, got shape {image.shape}")
    if format == "jpeg" and channels == 4:
        raise ValueError(
            "JPEG has no alpha channel: drop it first (image[..., :3]), got 4 channels"
        )

    if format == "png":
        if quality is not None:
            raise ValueError(
                f"quality applies to jpeg and webp only, got quality={quality!r} for png"
            )
        params = [cv2.IMWRITE_PNG_COMPRESSION, _PNG_COMPRESSION]
    else:
        if quality is None:
            quality = _DEFAULT_QUALITY[format]
        if not _is_int(quality) or not 1 <= quality <= 100:
            raise ValueError(f"quality must be an int in 1..100 for {format}, got {quality!r}")
        flag = cv2.IMWRITE_JPEG_QUALITY if format == "jpeg" else cv2.IMWRITE_WEBP_QUALITY
        params = [flag, int(quality)]
    ok, encoded = cv2.imencode(f".{format}", image, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {format}")
    return encoded.tobytes()


def _imread_flags(mode: str, dct_reduce: int, jpeg_grayscale: bool) -> int:
    # IMREAD_UNCHANGED ignores EXIF orientation by itself; the other flags need telling.
    if dct_reduce == 1:
        if mode == "unchanged":
            return cv2.IMREAD_UNCHANGED
        return cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    # There is no "reduced unchanged" flag; a JPEG holds no alpha, so gray or colour covers it.
    kind = "GRAYSCALE" if mode == "unchanged" and jpeg_grayscale else "COLOR"
    return getattr(cv2, f"IMREAD_REDUCED_{kind}_{dct_reduce}") | cv2.IMREAD_IGNORE_ORIENTATION


def _check_decodable_layout(header: _Header, view: memoryview) -> None:
    if header.format == "webp" and header.webp_animated:
        raise ImageDecodeError("unsupported", "animated WebP")
    if header.format != "jpeg":
        return
    if header.jpeg_sof not in _JPEG_DECODABLE_SOF:
        raise ImageDecodeError(
            "unsupported", f"JPEG process SOF{header.jpeg_sof - 0xC0} (lossless or hierarchical)"
        )
    if header.jpeg_precision != 8:
        raise ImageDecodeError("unsupported", f"{header.jpeg_precision}-bit JPEG")
    if header.jpeg_components not in (1, 3, 4):
        raise ImageDecodeError("unsupported", f"JPEG with {header.jpeg_components} components")
    # Entropy-coded data never contains FF D9 (a data FF is always followed by 00 or a restart
    # marker), so an end-of-image marker after the frame header means the scans are complete.
    # Looking only after the frame header skips the EOI of an embedded EXIF thumbnail.
    if view[-2:] != b"\xff\xd9" and bytes(view[header.jpeg_frame_end :]).find(b"\xff\xd9") < 0:
        raise ImageDecodeError("undecodable", "truncated JPEG (no end-of-image marker)")


def _read_header(view: memoryview) -> _Header:
    if len(view) == 0:
        raise ImageDecodeError("undecodable", "zero-length data")
    head = bytes(view[:16])
    if head.startswith(b"\xff\xd8"):
        return _read_jpeg_header(view)
    if head.startswith(_PNG_SIGNATURE):
        return _read_png_header(head + bytes(view[16:33]))
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _read_webp_header(bytes(view[:30]))
    for signature, name in _OTHER_SIGNATURES:
        if head.startswith(signature):
            raise ImageDecodeError("unsupported", f"{name} image; expected JPEG, PNG or WebP")
    if head[4:8] == b"ftyp":
        raise ImageDecodeError(
            "unsupported", "ISO media (AVIF/HEIF) image; expected JPEG, PNG or WebP"
        )
    raise ImageDecodeError("undecodable", f"unknown format (first bytes {head[:8].hex()})")


def _read_png_header(head: bytes) -> _Header:
    # Signature, then the IHDR chunk: length 13, type, width, height (big-endian uint32).
    if len(head) < 24 or head[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise ImageDecodeError("undecodable", "PNG without a complete IHDR chunk")
    width = int.from_bytes(head[16:20], "big")
    height = int.from_bytes(head[20:24], "big")
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise ImageDecodeError(
            "undecodable", f"PNG IHDR declares an invalid size {width} x {height}"
        )
    return _Header("png", width, height)


def _read_webp_header(head: bytes) -> _Header:
    if len(head) < 30:
        raise ImageDecodeError("undecodable", "WebP header truncated")
    chunk = head[12:16]
    if chunk == b"VP8 ":
        # Lossy: 3-byte frame tag, start code 9D 01 2A, then 14-bit width and height.
        if head[23:26] != b"\x9d\x01\x2a":
            raise ImageDecodeError("undecodable", "WebP VP8 frame without its start code")
        width = int.from_bytes(head[26:28], "little") & 0x3FFF
        height = int.from_bytes(head[28:30], "little") & 0x3FFF
        animated = False
    elif chunk == b"VP8L":
        # Lossless: signature 0x2F, then width - 1 and height - 1 in 14 bits each.
        if head[20] != 0x2F:
            raise ImageDecodeError("undecodable", "WebP VP8L stream without its signature")
        bits = int.from_bytes(head[21:25], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        animated = False
    elif chunk == b"VP8X":
        # Extended: flags byte, 3 reserved, then canvas width - 1 and height - 1 in 24 bits each.
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        animated = bool(head[20] & 0x02)
    else:
        raise ImageDecodeError("undecodable", f"WebP with unknown first chunk {chunk!r}")
    if width == 0 or height == 0:
        raise ImageDecodeError("undecodable", f"WebP declares an invalid size {width} x {height}")
    return _Header("webp", width, height, webp_animated=animated)


def _read_jpeg_header(view: memoryview) -> _Header:
    # Walk the marker segments after SOI until the first frame header (SOFn).
    size = len(view)
    offset = 2
    while True:
        if offset >= size or view[offset] != 0xFF:
            raise ImageDecodeError("undecodable", f"JPEG marker expected at byte {offset}")
        while offset < size and view[offset] == 0xFF:  # markers may be padded with FF bytes
            offset += 1
        if offset >= size:
            raise ImageDecodeError("undecodable", "JPEG header truncated")
        marker = view[offset]
        offset += 1
        if marker in _JPEG_STANDALONE_MARKERS:
            continue
        if marker in (0xD9, 0xDA):
            raise ImageDecodeError(
                "undecodable", "JPEG without a frame header (SOF) before its scan"
            )
        if offset + 2 > size:
            raise ImageDecodeError("undecodable", "JPEG header truncated")
        length = int.from_bytes(view[offset : offset + 2], "big")
        if length < 2:
            raise ImageDecodeError("undecodable", f"JPEG segment length {length} at byte {offset}")
        if marker in _JPEG_SOF_MARKERS:
            if offset + 8 > size:
                raise ImageDecodeError("undecodable", "JPEG frame header truncated")
            height = int.from_bytes(view[offset + 3 : offset + 5], "big")
            width = int.from_bytes(view[offset + 5 : offset + 7], "big")
            if width == 0 or height == 0:
                # Height 0 defers the size to a DNL marker after the first scan; rare, refused.
                raise ImageDecodeError(
                    "undecodable", f"JPEG frame declares size {width} x {height}"
                )
            return _Header(
                "jpeg",
                width,
                height,
                jpeg_sof=marker,
                jpeg_precision=view[offset + 2],
                jpeg_components=view[offset + 7],
                jpeg_frame_end=offset + length,
            )
        offset += length


def _as_bytes_view(data) -> memoryview:
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    raise TypeError(f"data must be bytes, bytearray or memoryview, got {type(data).__name__}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
