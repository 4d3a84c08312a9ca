"""Image bytes to and from NumPy arrays: a header-only size, a guarded decode, a fixed encode.

Convention: pixels are OpenCV's: ``uint8``, ``(H, W, C)``, channels in BGR (or BGRA) order.
Sizes read from headers are ``(width, height)``; array shapes are ``(height, width, channels)``.
Images come out as they are shown: an EXIF orientation (JPEG APP1, PNG eXIf, WebP EXIF) is
applied, as ``cv2.imdecode`` and ``cv2.imread`` apply it by default and as browsers show it, so
boxes from a detector that read the image with OpenCV (Roboflow's inference, Ultralytics) land
where they were found; ``read_image_size`` gives the shown size, the decoded shape's.

Only JPEG, PNG and WebP are decoded: for these three the pixel count can be checked from the
header before any pixel memory is allocated, which is what makes the decompression-bomb guard
(``max_pixels``) sound. All functions are pure: bytes and arrays in, bytes and arrays out (the one
piece of state is the opt-in per-thread decode buffer of ``decode_image(reuse_buffer=True)``).

Libraries: greyscale and YCbCr JPEG are decoded by libjpeg-turbo through simplejpeg (the same
libjpeg-turbo release OpenCV bundles, so the pixels are OpenCV's; a test compares them), which
also reports libjpeg's corrupt-data warnings that OpenCV swallows. RGB PNG is written by fpng
(about 13x faster than zlib level 1, files about 12% larger). Everything else is OpenCV.
"""

from __future__ import annotations

import dataclasses
import io
import math
import threading
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg
from fpng import fpng_ext

from cropcore._checks import is_int as _is_int

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
# zlib level 1 for the PNGs OpenCV writes (greyscale, or when fpng declines an image): higher
# levels cost 1.4-3x the time for 1-3% smaller files. Set explicitly so output bytes do not follow
# OpenCV's default between versions.
_PNG_COMPRESSION = 1
_WEBP_METHODS = range(7)  # libwebp's speed/size trade-off: 0 fastest, 6 smallest; OpenCV uses 4
# A reused decode buffer is kept per thread only up to this size (a 4K BGR image is 25 MB), so
# one huge image does not pin its memory for the life of the thread.
_KEPT_BUFFER_BYTES = 64 << 20
_thread_state = threading.local()
# libjpeg warnings about metadata only (an unknown JFIF version, a malformed ICC profile or
# colour-transform tag, odd but harmless scan parameters): such a JPEG is decoded as OpenCV
# decodes it. Every other warning (a bad Huffman code, premature end of data, a missing restart
# marker, extraneous bytes before a marker: what noise in the scan data produces) means libjpeg
# concealed or skipped data, so the image is refused.
_HARMLESS_JPEG_WARNINGS = (
    "unknown JFIF revision number",
    "bad ICC marker",
    "Unknown Adobe color transform code",
    "Invalid SOS parameters for sequential JPEG",
)
# Huffman-coded frames (baseline, extended, progressive): every 8x8 block's first DC symbol is a
# Huffman code of at least one bit, so the scans hold at least one bit per block of the
# least-sampled component. Arithmetic coding (C9, CA) can go below that and is not checked.
_JPEG_HUFFMAN_SOF = frozenset({0xC0, 0xC1, 0xC2})

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF = b"Exif\x00\x00"  # the start of a JPEG APP1 segment holding EXIF
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
    width: int  # of the stored pixel grid
    height: int
    orientation: int = 1  # EXIF: how to turn the stored grid to show it (1: as it is)
    jpeg_sof: int = 0  # the SOFn marker byte
    jpeg_precision: int = 8
    jpeg_components: int = 0
    jpeg_frame_end: int = 0  # offset just past the frame header
    jpeg_min_blocks: int = 0  # 8x8 blocks of the component with the fewest (0: not known)
    webp_animated: bool = False


def read_image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of a JPEG, PNG or WebP image, from its header only.

    Args:
        data: the encoded image (``bytes``, ``bytearray`` or ``memoryview``); only the header
            is read, so a prefix of the file is enough.

    Returns:
        ``(width, height)`` in pixels as the image is shown: its EXIF orientation applied, as
        ``decode_image`` applies it (5 to 8 swap the stored grid's sides).

    Convention:
        JPEG: the first SOFn frame header; PNG: IHDR; WebP: the VP8 frame header, the VP8L
        header or the VP8X canvas size.

    Raises:
        ImageDecodeError: ``"undecodable"`` when the size cannot be determined (empty, unknown
            or truncated header), ``"unsupported"`` for a recognised format other than these three.
        TypeError: if ``data`` is not bytes-like.
    """
    header = _read_header(_as_bytes_view(data))
    if header.orientation >= 5:  # a quarter turn (or a transposition) shows it the other way up
        return header.height, header.width
    return header.width, header.height


def decode_image(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    reduce: int = 1,
    mode: str = "color",
    reuse_buffer: bool = False,
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
        reuse_buffer: opt in to decoding a greyscale or YCbCr JPEG into a buffer that belongs to
            the calling thread and is reused by its next ``decode_image(..., reuse_buffer=True)``
            (saves allocating and faulting in fresh pages per image). The returned array then
            aliases that buffer: it and every view of it (crops) are overwritten by the thread's
            next such call, so copy or encode what must outlive it. Other images (an EXIF-turned
            one too), and calls without the flag, always return a new array.

    Returns:
        ndarray[H, W, C] uint8, C-contiguous and writable, with ``H = ceil(height / reduce)``
        and ``W = ceil(width / reduce)`` for the shown ``(width, height)`` (``read_image_size``):
        ``mode="color"``: C = 3, BGR. Grayscale is replicated to 3 channels, alpha is dropped
        (not composited), CMYK JPEG is converted to BGR by OpenCV.
        ``mode="unchanged"``: C = 1 (grayscale), 3 (BGR) or 4 (BGRA; grayscale with alpha is
        expanded to BGRA by OpenCV).

    Convention:
        Always 8 bits: 16-bit PNG samples are reduced to their high byte (``>> 8``), which is what
        OpenCV and libpng do for 8-bit reads. EXIF orientation is applied, in both modes (see
        the module docstring); OpenCV applies it too, except with ``IMREAD_UNCHANGED``.
        Animated WebP, 12-bit and lossless or hierarchical JPEG are ``"unsupported"``. A JPEG
        without an end-of-image marker after its frame header is ``"undecodable"``
        ("truncated JPEG") even if the decoder could return partial pixels; so is a JPEG whose
        data libjpeg reports as corrupt (a bad Huffman code, premature end of data, extraneous
        bytes before a marker: OpenCV would return grey or guessed pixels; warnings about
        metadata only are ignored), and a Huffman-coded JPEG with fewer scan bytes than one bit
        per 8x8 block of its declared size (a small file claiming a huge image).
        JPEG pixels are libjpeg-turbo's accurate integer DCT with fancy upsampling, identical
        to ``cv2.imdecode``.

    Raises:
        ImageDecodeError: with ``reason`` ``"undecodable"``, ``"too_many_pixels"`` or
            ``"unsupported"``.
        ValueError: for a bad ``max_pixels``, ``reduce``, ``mode`` or ``reuse_buffer``.
        TypeError: if ``data`` is not bytes-like.
    """
    view = _as_bytes_view(data)
    if not _is_int(max_pixels) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    if not _is_int(reduce) or reduce not in _REDUCE_FACTORS:
        raise ValueError(f"reduce must be one of {_REDUCE_FACTORS}, got {reduce!r}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if not isinstance(reuse_buffer, bool):
        raise ValueError(f"reuse_buffer must be True or False, got {reuse_buffer!r}")

    header = _read_header(view)
    if header.width * header.height > max_pixels:
        raise ImageDecodeError(
            "too_many_pixels",
            f"header declares {header.width} x {header.height} = "
            f"{header.width * header.height} pixels, more than max_pixels={max_pixels}",
        )
    _check_decodable_layout(header, view)

    dct_scaled = header.format == "jpeg" and reduce > 1
    image = None
    if header.format == "jpeg" and header.jpeg_components in (1, 3):
        image = _decode_jpeg(header, view, reduce, mode, reuse_buffer)
    elif header.format == "jpeg":
        # CMYK/YCCK: OpenCV converts to BGR; libjpeg-turbo first checks the scans for corrupt
        # data (an eighth-size decode: the entropy decoding is whole, the rest is cheap).
        _decode_jpeg(header, view, 8, "cmyk", False)
    if image is None:
        flags = _imread_flags(mode, reduce if dct_scaled else 1)
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
    return _oriented(image, header.orientation)


def encode_image(
    image: np.ndarray,
    format: str = "png",
    quality: int | None = None,
    webp_method: int | None = None,
) -> bytes:
    """Encode a ``uint8`` BGR(A) or grayscale image as PNG, JPEG or WebP bytes.

    Args:
        image (ndarray[H, W] or ndarray[H, W, C] uint8): C in 1, 3 (BGR), 4 (BGRA); both sides
            at least 1. JPEG takes C in 1, 3 (it has no alpha); WebP stores grayscale as colour.
        format: ``"png"``, ``"jpeg"`` or ``"webp"``.
        quality: JPEG and WebP only, an int in 1..100 (lossy); default 95 for JPEG, 90 for WebP.
            Must be None for PNG (lossless).
        webp_method: WebP only: libwebp's effort, an int in 0..6 (0 fastest, about a third of
            the default's time for files about 10% larger); encoded by Pillow. None (default):
            OpenCV's encoder at its method 4.

    Returns:
        The encoded bytes. Deterministic: the same image, format and settings give the same
        bytes with the same library builds. JPEG: OpenCV, 4:2:0 baseline. PNG: an ordinary
        8-bit PNG (every reader opens it) written by fpng for 3 and 4 channels (deflate with a
        fixed filter, about 13x faster than zlib level 1 and about 12% larger), by OpenCV at zlib
        level 1 for one channel. WebP: lossy.

    Convention:
        Channels are read as BGR(A), the order ``decode_image`` returns.

    Raises:
        ValueError: for an unknown format, a bad quality or webp_method, or an image of the
            wrong dtype or shape.
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

    if webp_method is not None and format != "webp":
        raise ValueError(
            f"webp_method applies to webp only, got webp_method={webp_method!r} for {format}"
        )
    if format == "png":
        if quality is not None:
            raise ValueError(
                f"quality applies to jpeg and webp only, got quality={quality!r} for png"
            )
        if channels in (3, 4):
            encoded = _fpng_encode(image, channels)
            if encoded:
                return encoded
            # fpng declines images it cannot write (it returns nothing): OpenCV writes them.
        params = [cv2.IMWRITE_PNG_COMPRESSION, _PNG_COMPRESSION]
    else:
        if quality is None:
            quality = _DEFAULT_QUALITY[format]
        if not _is_int(quality) or not 1 <= quality <= 100:
            raise ValueError(f"quality must be an int in 1..100 for {format}, got {quality!r}")
        if webp_method is not None:
            if not _is_int(webp_method) or webp_method not in _WEBP_METHODS:
                raise ValueError(f"webp_method must be an int in 0..6, got {webp_method!r}")
            return _pillow_webp(image, channels, int(quality), int(webp_method))
        flag = cv2.IMWRITE_JPEG_QUALITY if format == "jpeg" else cv2.IMWRITE_WEBP_QUALITY
        params = [flag, int(quality)]
    ok, encoded = cv2.imencode(f".{format}", image, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {format}")
    return encoded.tobytes()


def _fpng_encode(image: np.ndarray, channels: int) -> bytes:
    # fpng reads RGB(A) bytes; cvtColor also makes a strided crop view contiguous.
    code = cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGBA
    rgb = cv2.cvtColor(image, code)
    return fpng_ext.encode_image_to_memory(rgb.tobytes(), rgb.shape[1], rgb.shape[0], channels)


def _pillow_webp(image: np.ndarray, channels: int, quality: int, method: int) -> bytes:
    from PIL import Image  # only this setting needs Pillow

    # OpenCV's BGR2RGB repeats a grey channel three times (WebP stores grey as colour anyway).
    rgb = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if channels == 4 else cv2.COLOR_BGR2RGB)
    sink = io.BytesIO()
    Image.fromarray(rgb).save(sink, "WEBP", quality=quality, method=method)
    return sink.getvalue()


def _decode_jpeg(
    header: _Header, view: memoryview, reduce: int, mode: str, reuse_buffer: bool
) -> np.ndarray | None:
    """libjpeg-turbo (simplejpeg) decode of a 1- or 3-component JPEG, stopping at libjpeg's first
    warning; ``mode="cmyk"`` decodes a 4-component one as it is (used only to check its scans).
    None when the only warning is about metadata."""
    if mode == "cmyk":
        colorspace, channels = "CMYK", 4
    elif mode == "unchanged" and header.jpeg_components == 1:
        colorspace, channels = "GRAY", 1
    else:
        colorspace, channels = "BGR", 3
    height, width = math.ceil(header.height / reduce), math.ceil(header.width / reduce)
    # simplejpeg picks the smallest libjpeg-turbo scaling factor that keeps at least this size;
    # with min_factor it is exactly 1 / reduce, the scale_denom OpenCV's IMREAD_REDUCED_* sets.
    scaling = {"min_factor": reduce, "min_height": height, "min_width": width} if reduce > 1 else {}
    buffer = _thread_buffer(height * width * channels) if reuse_buffer else None
    try:
        return simplejpeg.decode_jpeg(view, colorspace, buffer=buffer, strict=True, **scaling)
    except ValueError as error:
        if any(harmless in str(error) for harmless in _HARMLESS_JPEG_WARNINGS):
            return None  # OpenCV decodes it, going on after the warning as libjpeg does
        raise ImageDecodeError("undecodable", f"libjpeg-turbo: {error}") from None


def _thread_buffer(nbytes: int) -> np.ndarray:
    buffer = getattr(_thread_state, "decode_buffer", None)
    if buffer is None or buffer.size < nbytes:
        buffer = np.empty(nbytes, dtype=np.uint8)
        if nbytes <= _KEPT_BUFFER_BYTES:
            _thread_state.decode_buffer = buffer
    return buffer[:nbytes]


def _imread_flags(mode: str, dct_reduce: int) -> int:
    # IMREAD_UNCHANGED ignores EXIF orientation by itself; the other flags need telling.
    if dct_reduce == 1:
        if mode == "unchanged":
            return cv2.IMREAD_UNCHANGED
        return cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    # Only CMYK/YCCK JPEG is DCT-scaled by OpenCV (libjpeg-turbo decodes grey and YCbCr), and
    # there is no "reduced unchanged" flag: both modes give BGR.
    return getattr(cv2, f"IMREAD_REDUCED_COLOR_{dct_reduce}") | cv2.IMREAD_IGNORE_ORIENTATION


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
    scan_bytes = len(view) - header.jpeg_frame_end
    if header.jpeg_sof in _JPEG_HUFFMAN_SOF and scan_bytes * 8 < header.jpeg_min_blocks:
        raise ImageDecodeError(
            "undecodable",
            f"JPEG too short for its declared size: {header.width} x {header.height} needs at "
            f"least {math.ceil(header.jpeg_min_blocks / 8)} bytes after the frame header "
            f"(one bit per 8x8 block), got {scan_bytes}",
        )


def _read_header(view: memoryview) -> _Header:
    if len(view) == 0:
        raise ImageDecodeError("undecodable", "zero-length data")
    head = bytes(view[:16])
    if head.startswith(b"\xff\xd8"):
        return _read_jpeg_header(view)
    if head.startswith(_PNG_SIGNATURE):
        header = _read_png_header(head + bytes(view[16:33]))
        return dataclasses.replace(header, orientation=_png_orientation(view))
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        header = _read_webp_header(bytes(view[:30]))
        return dataclasses.replace(header, orientation=_webp_orientation(view))
    for signature, name in _OTHER_SIGNATURES:
        if head.startswith(signature):
            raise ImageDecodeError("unsupported", f"{name} image; expected JPEG, PNG or WebP")
    if head[4:8] == b"ftyp":
        raise ImageDecodeError(
            "unsupported", "ISO media (AVIF/HEIF) image; expected JPEG, PNG or WebP"
        )
    # The message names no content bytes: they may be a secret (a `uri` naming /etc/passwd).
    raise ImageDecodeError("undecodable", f"unknown format ({len(view)} bytes, not JPEG, PNG "
                                          f"or WebP)")


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


def _jpeg_segments(view: memoryview):
    """``(marker, offset, length)`` of each marker segment after SOI, up to the first frame
    header (SOFn, included) or, with no frame header first, an error; ``offset`` is that of the
    segment's length field. Standalone markers are skipped."""
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
        yield marker, offset, length
        if marker in _JPEG_SOF_MARKERS:
            return
        offset += length


def _read_jpeg_header(view: memoryview) -> _Header:
    # Walk the marker segments after SOI until the first frame header (SOFn); the first APP1
    # segment holding EXIF before it gives the orientation.
    size = len(view)
    orientation = 1
    exif_seen = False
    for marker, offset, length in _jpeg_segments(view):
        if marker == 0xE1 and not exif_seen and bytes(view[offset + 2 : offset + 8]) == _EXIF:
            exif_seen = True
            orientation = _tiff_orientation(bytes(view[offset + 8 : offset + length]))
        if marker not in _JPEG_SOF_MARKERS:
            continue
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
            orientation=orientation,
            jpeg_sof=marker,
            jpeg_precision=view[offset + 2],
            jpeg_components=view[offset + 7],
            jpeg_frame_end=offset + length,
            jpeg_min_blocks=_jpeg_min_blocks(view, offset, width, height),
        )
    raise AssertionError("_jpeg_segments ends at a frame header or raises")


class _ExifCut(Exception):
    """An EXIF block read past its end (OpenCV's reader stops there)."""


# IFD0 tags whose values OpenCV's EXIF reader reads from elsewhere in the block: a string of
# more than 4 bytes, or that many unsigned rationals, at the offset the entry holds. Reading past
# the block's end stops it (entries read so far count, later ones are never seen). Its other
# reads lie inside the entry itself: a block that ends there holds no later entry anyway.
_EXIF_STRINGS = frozenset({0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x8298})
_EXIF_RATIONALS = {0x011A: 1, 0x011B: 1, 0x013E: 2, 0x013F: 6, 0x0211: 3, 0x0214: 6}


def _tiff_orientation(tiff: bytes) -> int:
    """The Orientation tag (0x0112) of an EXIF block's first IFD, 1 to 8, read as OpenCV's EXIF
    reader reads it, so that malformed blocks turn an image exactly when OpenCV turns it: a
    byte order of ``II`` is little-endian and anything else big-endian, the 42 mark is
    required, and entries are read in order until the first orientation or until an entry
    OpenCV reads points past the block. 1 when there is none, or it holds another value."""
    size = len(tiff)
    order = "little" if tiff[:2] == b"II" else "big"

    def number(at: int, width: int) -> int:
        if at + width > size:
            raise _ExifCut
        return int.from_bytes(tiff[at : at + width], order)

    try:
        if number(2, 2) != 42:
            return 1
        ifd = number(4, 4)
        entry = ifd + 2
        for _ in range(number(ifd, 2)):
            tag = number(entry, 2)
            if tag == 0x0112:  # a SHORT; OpenCV reads 16 bits whatever type the entry says
                value = number(entry + 8, 2)
                return value if 1 <= value <= 8 else 1
            if tag in _EXIF_STRINGS:
                length = number(entry + 4, 4)
                if length > 4 and number(entry + 8, 4) + length > size:
                    raise _ExifCut
            elif tag in _EXIF_RATIONALS:
                at = number(entry + 8, 4)
                for _ in range(2 * _EXIF_RATIONALS[tag]):
                    number(at, 4)
                    at = (at + 4) & 0xFFFFFFFF  # OpenCV's offsets are 32-bit
            entry += 12
    except _ExifCut:
        pass
    return 1


def _png_orientation(view: memoryview) -> int:
    """The orientation in a PNG's eXIf chunk (before or after the image data, as libpng reads
    it); 1 without one."""
    offset = 8
    while offset + 8 <= len(view):
        length = int.from_bytes(view[offset : offset + 4], "big")
        kind = bytes(view[offset + 4 : offset + 8])
        if kind == b"eXIf":
            block = bytes(view[offset + 8 : offset + 8 + length])
            # libpng keeps the chunk only when it starts with a byte order, II or MM
            return _tiff_orientation(block) if block[:2] in (b"II", b"MM") else 1
        if kind == b"IEND":
            break
        offset += 12 + length
    return 1


def _webp_orientation(view: memoryview) -> int:
    """The orientation in an extended WebP's EXIF chunk, when VP8X flags one and no reserved
    flag bit (libwebp's demuxer refuses those, and OpenCV then reads no EXIF); 1 otherwise."""
    if bytes(view[12:16]) != b"VP8X" or view[20] & 0xC9 != 0x08:  # (30 bytes at least)
        return 1
    offset = 12
    while offset + 8 <= len(view):
        length = int.from_bytes(view[offset + 4 : offset + 8], "little")
        if bytes(view[offset : offset + 4]) == b"EXIF":
            return _tiff_orientation(bytes(view[offset + 8 : offset + 8 + length]))
        offset += 8 + length + (length & 1)
    return 1


def _oriented(image: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixel grid turned to how EXIF ``orientation`` says to show it, as OpenCV's
    decoders do: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
    7 transverse, 8 rotate 90 counter-clockwise."""
    if orientation == 1:
        return image
    if orientation in (2, 3, 4):
        turned = cv2.flip(image, {2: 1, 3: -1, 4: 0}[orientation])
    elif orientation in (6, 8):
        turned = cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE if orientation == 6
                            else cv2.ROTATE_90_COUNTERCLOCKWISE)
    else:
        turned = cv2.transpose(image)
        if orientation == 7:
            turned = cv2.flip(turned, -1)
    height, width = turned.shape[:2]
    return turned.reshape(height, width, image.shape[2])


def _jpeg_min_blocks(view: memoryview, offset: int, width: int, height: int) -> int:
    """8x8 blocks of the frame's least-sampled component (ITU T.81 A.1.1), 0 if not readable."""
    components = view[offset + 7]
    sampling = bytes(view[offset + 8 : offset + 8 + 3 * components])[1::3]
    if components == 0 or len(sampling) != components:
        return 0
    if any(s >> 4 == 0 or s & 0x0F == 0 for s in sampling):
        return 0  # invalid sampling factors: libjpeg refuses the frame itself
    h_max = max(s >> 4 for s in sampling)
    v_max = max(s & 0x0F for s in sampling)
    return min(
        math.ceil(math.ceil(width * (s >> 4) / h_max) / 8)
        * math.ceil(math.ceil(height * (s & 0x0F) / v_max) / 8)
        for s in sampling
    )


def _as_bytes_view(data) -> memoryview:
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    raise TypeError(f"data must be bytes, bytearray or memoryview, got {type(data).__name__}")
