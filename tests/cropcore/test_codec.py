"""codec: header-only sizes, the pixel guard, decode policy (channels, depth) and encode."""

import io
import re
import struct
import threading
import time
import zlib

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image as PIL_Image  # a dependency of scikit-image; makes CMYK JPEG, GIF, ...

import cropcore.codec
from cropcore.codec import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    decode_image,
    encode_image,
    read_image_size,
)
from tests.jobs.corpus import image_cases

RNG = np.random.default_rng(0)
ASTRONAUT_BGR = np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])


# --- helpers -----------------------------------------------------------------------------------


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_by_hand(width: int, height: int, rows: bytes | None = None, color_type: int = 2) -> bytes:
    """A PNG written from the spec (8-bit, filter 0), independent of OpenCV and Pillow."""
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
    idat = png_chunk(b"IDAT", zlib.compress(rows)) if rows is not None else b""
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + png_chunk(b"IEND", b"")


def pil_bytes(image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def cv2_bytes(image: np.ndarray, ext: str, params=()) -> bytes:
    ok, encoded = cv2.imencode(ext, image, list(params))
    assert ok
    return encoded.tobytes()


def random_image(h: int, w: int, c: int | None = 3, dtype=np.uint8) -> np.ndarray:
    shape = (h, w) if c is None else (h, w, c)
    return RNG.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def reason_of(data: bytes, **kwargs) -> str:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, **kwargs)
    return info.value.reason


# --- API surface -------------------------------------------------------------------------------


def test_public_names():
    assert cropcore.codec.__all__ == [
        "DEFAULT_MAX_PIXELS",
        "ImageDecodeError",
        "decode_image",
        "encode_image",
        "read_image_size",
    ]


def test_default_max_pixels_is_pillows_bomb_limit():
    assert DEFAULT_MAX_PIXELS == 2 * (1024**3 // 4 // 3)
    assert DEFAULT_MAX_PIXELS == 2 * PIL_Image.MAX_IMAGE_PIXELS


def test_image_decode_error_carries_a_reason():
    error = ImageDecodeError("unsupported", "GIF image")
    assert isinstance(error, ValueError)
    assert error.reason == "unsupported"
    assert str(error) == "unsupported: GIF image"
    with pytest.raises(ValueError, match=r"reason must be one of .* got 'bad'"):
        ImageDecodeError("bad", "x")


# --- read_image_size ---------------------------------------------------------------------------

_SIZES = [(1, 1), (53, 37), (17, 513), (640, 480)]


def _encodings(width: int, height: int) -> dict[str, bytes]:
    bgr = random_image(height, width)
    bgra = random_image(height, width, 4)
    gray = random_image(height, width, None)
    return {
        "jpeg baseline": cv2_bytes(bgr, ".jpg"),
        "jpeg progressive": cv2_bytes(bgr, ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        "jpeg gray": cv2_bytes(gray, ".jpg"),
        "png rgb": cv2_bytes(bgr, ".png"),
        "png rgba": cv2_bytes(bgra, ".png"),
        "png 16-bit": cv2_bytes(random_image(height, width, None, np.uint16), ".png"),
        "webp VP8 (lossy)": cv2_bytes(bgr, ".webp", [cv2.IMWRITE_WEBP_QUALITY, 90]),
        "webp VP8L (lossless)": cv2_bytes(bgr, ".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
        "webp VP8X (alpha)": cv2_bytes(bgra, ".webp", [cv2.IMWRITE_WEBP_QUALITY, 90]),
    }


@pytest.mark.parametrize("size_wh", _SIZES)
def test_read_image_size_matches_decoded_shape(size_wh):
    for name, data in _encodings(*size_wh).items():
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert read_image_size(data) == (decoded.shape[1], decoded.shape[0]), name
        assert read_image_size(data) == size_wh, name


def test_every_webp_header_layout_is_exercised():
    # libwebp may pick another layout for tiny images, so check on a mid-sized one.
    chunks = {data[12:16] for name, data in _encodings(53, 37).items() if "webp" in name}
    assert chunks == {b"VP8 ", b"VP8L", b"VP8X"}


def test_read_image_size_needs_only_the_header():
    for name, data in _encodings(53, 37).items():
        prefix = data[:30] if "jpeg" not in name else data[: data.find(b"\xff\xda")]
        assert read_image_size(prefix) == (53, 37), name
    assert read_image_size(bytearray(data)) == (53, 37)
    assert read_image_size(memoryview(data)) == (53, 37)


def test_read_image_size_skips_app_segments_and_fill_bytes():
    jpeg = cv2_bytes(random_image(20, 30), ".jpg")
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 10_000) + bytes(10_000)
    padded = jpeg[:2] + app1 + b"\xff\xff" + jpeg[2:]  # FF fill bytes before a marker
    assert read_image_size(padded) == (30, 20)
    assert decode_image(padded).shape == (20, 30, 3)


@pytest.mark.parametrize(
    ("data", "reason", "match"),
    [
        (b"", "undecodable", r"zero-length data"),
        (bytes(RNG.integers(0, 256, 64, dtype=np.uint8)), "undecodable", r"unknown format"),
        (b"\xff\xd8", "undecodable", r"JPEG marker expected at byte 2"),
        (b"\xff\xd8\xff", "undecodable", r"JPEG header truncated"),
        (b"\xff\xd8\xff\xe0\x00", "undecodable", r"JPEG header truncated"),
        (b"\xff\xd8\xff\xe0\x00\x01", "undecodable", r"JPEG segment length 1 at byte 4"),
        (b"\xff\xd8\xff\xda\x00\x08", "undecodable", r"JPEG without a frame header \(SOF\)"),
        (b"\xff\xd8\xff\xc0\x00\x11\x08\x00", "undecodable", r"JPEG frame header truncated"),
        (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x00\x10\x03", "undecodable",
         r"JPEG frame declares size 16 x 0"),
        (png_by_hand(4, 4)[:20], "undecodable", r"PNG without a complete IHDR chunk"),
        (png_by_hand(0, 4), "undecodable", r"PNG IHDR declares an invalid size 0 x 4"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "undecodable", r"WebP header truncated"),
        (b"RIFF\x00\x00\x00\x00WEBPABCD" + bytes(20), "undecodable",
         r"WebP with unknown first chunk"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(20), "undecodable",
         r"WebP VP8 frame without its start code"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8L" + bytes(20), "undecodable",
         r"WebP VP8L stream without its signature"),
        (
            b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(7) + b"\x9d\x01\x2a" + bytes(4),
            "undecodable",
            r"WebP declares an invalid size 0 x 0",
        ),
        (b"GIF89a" + bytes(30), "unsupported", r"GIF image; expected JPEG, PNG or WebP"),
        (b"BM" + bytes(30), "unsupported", r"BMP image"),
        (b"II*\x00" + bytes(30), "unsupported", r"TIFF image"),
        (b"\x00\x00\x00\x1cftypavif" + bytes(30), "unsupported", r"ISO media \(AVIF/HEIF\)"),
    ],
)
def test_read_image_size_errors(data, reason, match):
    # anchored: the message starts with the reason, then the expected text
    with pytest.raises(ImageDecodeError, match=rf"^{reason}: {match}") as info:
        read_image_size(data)
    assert info.value.reason == reason
    # decode_image reads the same header and refuses the same way.
    with pytest.raises(ImageDecodeError, match=match):
        decode_image(data)


@pytest.mark.parametrize("data", ["text", None, 12, np.zeros(4, np.uint8)])
def test_data_must_be_bytes_like(data):
    message = rf"data must be bytes, bytearray or memoryview, got {type(data).__name__}$"
    with pytest.raises(TypeError, match=message):
        read_image_size(data)
    with pytest.raises(TypeError, match=message):
        decode_image(data)


# --- pixel guard -------------------------------------------------------------------------------


def test_pixel_guard_rejects_a_bomb_header_without_decoding(monkeypatch):
    bomb = png_by_hand(100_000, 100_000)[:33] + bytes(RNG.integers(0, 256, 1000, dtype=np.uint8))
    assert bomb[29:33] == struct.pack(">I", zlib.crc32(bomb[12:29]))  # a valid IHDR CRC

    def must_not_decode(*args):
        raise AssertionError("cv2.imdecode called for an image over max_pixels")

    monkeypatch.setattr(cropcore.codec.cv2, "imdecode", must_not_decode)
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError, match=r"100000 x 100000 = 10000000000 pixels, more than"):
        decode_image(bomb)
    assert time.perf_counter() - start < 0.05
    assert read_image_size(bomb) == (100_000, 100_000)


@pytest.mark.parametrize("name", ["jpeg baseline", "png rgb", "webp VP8 (lossy)"])
def test_pixel_guard_boundary(name):
    data = _encodings(20, 10)[name]
    assert decode_image(data, max_pixels=200).shape == (10, 20, 3)
    assert reason_of(data, max_pixels=199) == "too_many_pixels"
    # The guard counts the full-size header, whatever the reduce factor.
    assert reason_of(data, max_pixels=199, reduce=2) == "too_many_pixels"


# --- decode policy -----------------------------------------------------------------------------


def test_convention_bgr_channel_order():
    # A pure red RGB PNG written by hand decodes with red in channel 2 (BGR).
    red_rows = b"".join(b"\x00" + b"\xff\x00\x00" * 3 for _ in range(2))
    image = decode_image(png_by_hand(3, 2, red_rows))
    assert image.shape == (2, 3, 3)
    np.testing.assert_array_equal(image[..., 2], 255)
    np.testing.assert_array_equal(image[..., :2], 0)
    # encode_image reads channel 2 as red too: Pillow sees (255, 0, 0).
    pil = PIL_Image.open(io.BytesIO(encode_image(image, "png")))
    assert pil.mode == "RGB" and pil.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize(
    "channels",
    [
        1,  # gray: (H, W, 1) unchanged, replicated to BGR in color mode
        3,  # BGR: the same in both modes
        4,  # BGRA: kept unchanged, alpha dropped (not composited) in color mode
    ],
)
def test_png_channel_policy(channels):
    pixels = random_image(9, 11, channels)
    data = cv2_bytes(pixels, ".png")
    color = decode_image(data)
    unchanged = decode_image(data, mode="unchanged")
    assert color.dtype == unchanged.dtype == np.uint8
    assert color.flags.c_contiguous and color.flags.writeable
    np.testing.assert_array_equal(unchanged, pixels)
    np.testing.assert_array_equal(color, np.broadcast_to(pixels[..., :3], (9, 11, 3)))


@pytest.mark.parametrize("channels", [None, 3, 4])
def test_16_bit_png_keeps_the_high_byte(channels):
    pixels = random_image(8, 12, channels, np.uint16)
    data = cv2_bytes(pixels, ".png")
    high = (pixels >> 8).astype(np.uint8).reshape(8, 12, -1)
    assert decode_image(data).dtype == decode_image(data, mode="unchanged").dtype == np.uint8
    np.testing.assert_array_equal(decode_image(data, mode="unchanged"), high)
    np.testing.assert_array_equal(decode_image(data), np.broadcast_to(high[..., :3], (8, 12, 3)))


def test_gray_alpha_and_palette_png():
    gray_alpha = pil_bytes(PIL_Image.fromarray(random_image(6, 7, 2), "LA"), "PNG")
    assert decode_image(gray_alpha, mode="unchanged").shape == (6, 7, 4)  # OpenCV gives BGRA
    assert decode_image(gray_alpha).shape == (6, 7, 3)
    rgb = random_image(6, 7)
    palette = pil_bytes(PIL_Image.fromarray(rgb).convert("P"), "PNG")
    expected = np.asarray(PIL_Image.open(io.BytesIO(palette)).convert("RGB"))[..., ::-1]
    np.testing.assert_array_equal(decode_image(palette), expected)


def test_cmyk_jpeg_is_converted_to_bgr():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:8] = (200, 30, 40)  # reddish
    rgb[8:] = (20, 60, 220)  # bluish
    data = pil_bytes(PIL_Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    assert PIL_Image.open(io.BytesIO(data)).mode == "CMYK"
    image = decode_image(data)
    assert image.shape == (16, 16, 3)
    expected_bgr = np.asarray(PIL_Image.open(io.BytesIO(data)).convert("RGB"))[..., ::-1]
    assert np.abs(image.astype(int) - expected_bgr).max() <= 8
    assert image[4, 4, 2] > image[4, 4, 0] and image[12, 12, 0] > image[12, 12, 2]


@pytest.mark.parametrize(
    ("fmt", "channels", "tolerance"),
    [
        # format, channels written, max mean absolute error after the round trip
        ("png", None, 0),
        ("png", 1, 0),
        ("png", 3, 0),
        ("png", 4, 0),
        ("jpeg", None, 4),
        ("jpeg", 3, 4),
        ("webp", 3, 6),
        ("webp", 4, 6),
    ],
)
def test_round_trip(fmt, channels, tolerance):
    base = ASTRONAUT_BGR[100:160, 200:280]
    pixels = {
        None: base[..., 1],
        1: base[..., 1:2],
        3: base,
        4: np.dstack([base, random_image(60, 80, 1)]),
    }[channels]
    data = encode_image(pixels, fmt)
    decoded = decode_image(data, mode="unchanged")
    expected = pixels.reshape(60, 80, -1)
    assert decoded.shape == expected.shape
    error = np.abs(decoded.astype(int) - expected).mean()
    assert error <= tolerance
    if tolerance == 0:
        np.testing.assert_array_equal(decoded, expected)
    # Color mode is the same decode, with gray replicated and alpha dropped.
    color_shape = (60, 80, 3)
    np.testing.assert_array_equal(
        decode_image(data), np.broadcast_to(decoded[..., :3], color_shape)
    )


def test_webp_stores_grayscale_as_colour():
    gray = ASTRONAUT_BGR[:40, :40, 1]
    decoded = decode_image(encode_image(gray, "webp", quality=100), mode="unchanged")
    assert decoded.shape == (40, 40, 3)


def exif_image(fmt: str, orientation: int | None, pixels=None, **options) -> bytes:
    """``pixels`` (default: a 37 x 53 random RGB image) saved by Pillow with an EXIF
    Orientation tag (none when ``orientation`` is None)."""
    pil = PIL_Image.fromarray(random_image(37, 53) if pixels is None else pixels)
    exif = PIL_Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    lossless = {"lossless": True} if fmt == "WEBP" else {}
    return pil_bytes(pil, fmt, exif=exif.tobytes(), **lossless, **options)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", [None, 1, 2, 3, 4, 5, 6, 7, 8, 0, 9])
def test_convention_exif_orientation_is_applied_as_opencv_applies_it(fmt, orientation):
    # cv2.imdecode and cv2.imread turn images as their EXIF says (so do Roboflow's inference and
    # Ultralytics, which read with them); 0 and 9 are not orientations and change nothing.
    data = exif_image(fmt, orientation)
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    for reuse_buffer in (False, True):
        np.testing.assert_array_equal(decode_image(data, reuse_buffer=reuse_buffer), expected)
    assert read_image_size(data) == (expected.shape[1], expected.shape[0])
    turned = orientation in (5, 6, 7, 8)
    assert expected.shape[:2] == ((53, 37) if turned else (37, 53))  # the test is not vacuous
    unchanged = decode_image(data, mode="unchanged")  # OpenCV would not turn this one
    np.testing.assert_array_equal(unchanged, expected)


@pytest.mark.parametrize("orientation", [2, 5, 6, 7, 8])
def test_exif_orientation_with_reduce_turns_the_reduced_image(orientation):
    data = exif_image("JPEG", orientation)
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)
    np.testing.assert_array_equal(decode_image(data, reduce=2), expected)
    png = exif_image("PNG", orientation)
    shown_w, shown_h = read_image_size(png)
    assert decode_image(png, reduce=4).shape == (-(-shown_h // 4), -(-shown_w // 4), 3)


@pytest.mark.parametrize("orientation", [3, 6])
def test_exif_orientation_turns_grey_and_alpha_images_in_unchanged_mode(orientation):
    grey = random_image(37, 53)[:, :, 0]
    data = exif_image("JPEG", orientation, grey)
    stored = cv2.imdecode(np.frombuffer(data, np.uint8),
                          cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
    turned = cv2.rotate(stored, cv2.ROTATE_180 if orientation == 3 else cv2.ROTATE_90_CLOCKWISE)
    np.testing.assert_array_equal(decode_image(data, mode="unchanged")[:, :, 0], turned)
    rgba = np.dstack([random_image(37, 53), np.arange(37 * 53).reshape(37, 53) % 256])
    data = exif_image("PNG", orientation, rgba.astype(np.uint8))
    bgra = cv2.cvtColor(rgba.astype(np.uint8), cv2.COLOR_RGBA2BGRA)
    turned = cv2.rotate(bgra, cv2.ROTATE_180 if orientation == 3 else cv2.ROTATE_90_CLOCKWISE)
    np.testing.assert_array_equal(decode_image(data, mode="unchanged"), turned)


def _png_with_exif_chunk(payload: bytes, after_image_data: bool) -> bytes:
    import struct
    import zlib

    data = exif_image("PNG", None)
    chunks, offset = [], 8
    while offset < len(data):
        length = struct.unpack(">I", data[offset : offset + 4])[0]
        chunks.append(data[offset : offset + 12 + length])
        offset += 12 + length
    chunks = [c for c in chunks if c[4:8] != b"eXIf"]
    exif = (struct.pack(">I", len(payload)) + b"eXIf" + payload
            + struct.pack(">I", zlib.crc32(b"eXIf" + payload)))
    at = len(chunks) - 1 if after_image_data else 1
    return data[:8] + b"".join(chunks[:at] + [exif] + chunks[at:])


def _tiff_with_orientation(value: int, order: str = "big", kind: int = 3) -> bytes:
    o = ">" if order == "big" else "<"
    import struct

    head = (b"MM\x00*" if order == "big" else b"II*\x00") + struct.pack(o + "I", 8)
    entry = struct.pack(o + "HHI", 0x0112, kind, 1) + struct.pack(o + "H", value) + b"\x00\x00"
    return head + struct.pack(o + "H", 1) + entry + struct.pack(o + "I", 0)


@pytest.mark.parametrize(
    ("payload", "after_image_data"),
    [
        (_tiff_with_orientation(6), False),
        (_tiff_with_orientation(6), True),  # libpng reads eXIf after the image data too
        (_tiff_with_orientation(8, "little"), False),
        (_tiff_with_orientation(6, kind=4), False),  # typed LONG: OpenCV reads 16 bits anyway
        (b"Exif\x00\x00" + _tiff_with_orientation(6), False),  # libpng refuses this prefix
        (_tiff_with_orientation(6)[:14], False),  # cut inside the entry
        (b"MM\x00*\x00\x00\xff\xff", False),  # the first IFD far past the end
    ],
)
def test_png_exif_chunks_are_read_as_opencv_reads_them(payload, after_image_data):
    data = _png_with_exif_chunk(payload, after_image_data)
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decode_image(data), expected)
    assert read_image_size(data) == (expected.shape[1], expected.shape[0])


def test_jpeg_takes_the_first_exif_segment_and_skips_other_app1_segments():
    import struct

    six, eight = exif_image("JPEG", 6), exif_image("JPEG", 8)
    start = eight.index(b"\xff\xe1")
    segment = eight[start : start + 2 + struct.unpack(">H", eight[start + 2 : start + 4])[0]]
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x/>"
    xmp_segment = b"\xff\xe1" + struct.pack(">H", len(xmp) + 2) + xmp
    for data in (six[:2] + xmp_segment + six[2:], six[:2] + segment + six[2:]):
        expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(decode_image(data), expected)
    first = cv2.imdecode(np.frombuffer(eight, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decode_image(six[:2] + segment + six[2:]).shape, first.shape)


def test_webp_exif_needs_the_vp8x_flag_as_opencv_does():
    data = bytearray(exif_image("WEBP", 6))
    assert bytes(data[12:16]) == b"VP8X" and data[20] & 0x08
    data[20] &= ~0x08
    expected = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR)
    assert expected.shape[:2] == (37, 53)
    np.testing.assert_array_equal(decode_image(bytes(data)), expected)

# --- EXIF blocks by hand: what OpenCV reads of them, and what it does not ----------------------


def _ifd_entry(tag: int, kind: int, count: int, value: bytes, order: str = "big") -> bytes:
    """One 12-byte IFD entry: tag, type, count, then 4 value bytes as given."""
    return struct.pack((">" if order == "big" else "<") + "HHI", tag, kind, count) + value


def _short(value: int, order: str = "big") -> bytes:
    """A SHORT value in an entry's 4 value bytes (two pad bytes after it)."""
    return struct.pack((">" if order == "big" else "<") + "H", value) + b"\x00\x00"


def _tiff_block(entries, order="big", count=None, tail=b"\x00\x00\x00\x00", mark=None) -> bytes:
    """An EXIF (TIFF) block: header (``mark`` replaces its first 4 bytes), IFD0 at byte 8 with
    ``count`` (default: how many ``entries``) then the entries, then ``tail`` (the next-IFD
    offset and whatever follows)."""
    o = ">" if order == "big" else "<"
    head = mark or (b"MM\x00*" if order == "big" else b"II*\x00")
    n = len(entries) if count is None else count
    return head + struct.pack(o + "IH", 8, n) + b"".join(entries) + tail


def _jpeg_with_app1(payload: bytes) -> bytes:
    """A JPEG without EXIF of its own, with one APP1 Exif segment holding ``payload``."""
    data = pil_bytes(PIL_Image.fromarray(random_image(37, 53)), "JPEG")
    body = b"Exif\x00\x00" + payload
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + data[2:]


def _riff_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) & 1)


def _webp_by_chunks(after=(), flags: int | None = 0x08) -> bytes:
    """A lossless WebP: a VP8X chunk with ``flags`` (none when None: the simple format), the
    VP8L image chunk Pillow writes, then the chunks ``after``."""
    pixels = random_image(37, 53)
    simple = pil_bytes(PIL_Image.fromarray(pixels), "WEBP", lossless=True)
    assert simple[12:16] == b"VP8L"
    body = simple[12:] + b"".join(after)
    if flags is not None:
        height, width = pixels.shape[:2]
        canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        body = _riff_chunk(b"VP8X", bytes([flags, 0, 0, 0]) + canvas) + body
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def assert_turned_as_opencv(data: bytes, orientation: int) -> None:
    """cv2.imdecode turns ``data`` as EXIF ``orientation`` (1, 6 or 8) says (checked, so the case
    is not vacuous), and decode_image and read_image_size agree with it."""
    turn = {1: lambda a: a, 6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
            8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE)}[orientation]
    buffer = np.frombuffer(data, np.uint8)
    expected = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    stored = cv2.imdecode(buffer, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    np.testing.assert_array_equal(expected, turn(stored))
    np.testing.assert_array_equal(decode_image(data), expected)
    assert read_image_size(data) == (expected.shape[1], expected.shape[0])


@pytest.mark.parametrize("order", ["big", "little"])
def test_exif_orientation_is_found_after_other_ifd_entries(order):
    entries = [_ifd_entry(0x010F, 2, 4, b"abc\x00", order),  # Make, then Model, inline
               _ifd_entry(0x0110, 2, 4, b"xyz\x00", order),
               _ifd_entry(0x0112, 3, 1, _short(8, order), order)]
    assert_turned_as_opencv(_jpeg_with_app1(_tiff_block(entries, order)), 8)


@pytest.mark.parametrize("order", ["big", "little"])
@pytest.mark.parametrize("tail", [b"", b"\x00\x00\x00\x00"])
def test_exif_entries_past_the_ifd_count_are_not_read(order, tail):
    # IFD0 says one entry (Make); an Orientation entry follows it, outside the directory
    entries = [_ifd_entry(0x010F, 2, 4, b"abc\x00", order),
               _ifd_entry(0x0112, 3, 1, _short(6, order), order)]
    assert_turned_as_opencv(_jpeg_with_app1(_tiff_block(entries, order, 1, tail)), 1)


def test_exif_tag_bytes_off_the_12_byte_entry_grid_are_not_an_entry():
    # ImageWidth's value holds 12 01 (0x0112 little-endian) and the next entry's count is 6:
    # read byte by byte, that would be an Orientation entry with value 6
    entries = [_ifd_entry(0x0100, 3, 1, b"\x12\x01\x00\x00", "little"),
               _ifd_entry(0x010F, 2, 6, struct.pack("<I", 38), "little")]
    tiff = _tiff_block(entries, "little", tail=b"\x00\x00\x00\x00abcde\x00")
    assert tiff[18:20] == b"\x12\x01" and tiff[26:28] == b"\x06\x00"
    assert_turned_as_opencv(_jpeg_with_app1(tiff), 1)


@pytest.mark.parametrize(
    ("tiff", "orientation"),
    [
        # the block ends right after the Orientation entry, without a next-IFD offset
        (_tiff_block([_ifd_entry(0x0112, 3, 1, _short(6))], tail=b""), 6),
        # the block ends after the value's first byte (06 of 06 00): not an orientation
        (_tiff_block([_ifd_entry(0x0112, 3, 1, _short(6, "little"), "little")], "little")[:19],
         1),
        # a TIFF mark other than 42
        (_tiff_block([_ifd_entry(0x0112, 3, 1, _short(6))], mark=b"MM\x00+"), 1),
    ],
)
def test_exif_block_edges_are_read_as_opencv_reads_them(tiff, orientation):
    assert_turned_as_opencv(_jpeg_with_app1(tiff), orientation)
    assert_turned_as_opencv(_png_with_exif_chunk(tiff, False), orientation)
    assert_turned_as_opencv(_webp_by_chunks([_riff_chunk(b"EXIF", tiff)]), orientation)


def test_png_exif_chunk_after_iend_is_not_read():
    data = pil_bytes(PIL_Image.fromarray(random_image(37, 53)), "PNG")
    assert data.endswith(png_chunk(b"IEND", b"")) and b"eXIf" not in data
    tiff = _tiff_block([_ifd_entry(0x0112, 3, 1, _short(6))])
    assert_turned_as_opencv(data + png_chunk(b"eXIf", tiff), 1)
    assert_turned_as_opencv(_png_with_exif_chunk(tiff, True), 6)  # the same chunk before IEND


@pytest.mark.parametrize(
    ("flags", "chunks", "orientation"),
    [
        (0x08, ["EXIF"], 6),
        (0x08, ["XMP ", "EXIF"], 6),  # after a chunk of odd size and its pad byte
        (0x08, ["XMP "], 1),  # the EXIF flag without an EXIF chunk
        (0x01, ["EXIF"], 1),  # a reserved flag bit is not the EXIF flag
        (None, ["EXIF"], 1),  # the simple format (no VP8X) has no EXIF
    ],
)
def test_webp_exif_chunk_is_read_as_opencv_reads_it(flags, chunks, orientation):
    payloads = {b"EXIF": _tiff_block([_ifd_entry(0x0112, 3, 1, _short(6))]), b"XMP ": b"<x/>!"}
    after = [_riff_chunk(kind.encode(), payloads[kind.encode()]) for kind in chunks]
    data = _webp_by_chunks(after, flags)
    if flags is None:
        assert data[20] & 0x08  # VP8L's signature byte 2F: the flag bit's place, set
    assert_turned_as_opencv(data, orientation)


@pytest.mark.parametrize("reduce", [2, 4, 8])
def test_reduce_jpeg_is_dct_scaled_to_ceil(reduce):
    pixels = ASTRONAUT_BGR[:37, :53]
    data = encode_image(pixels, "jpeg")
    expected_hw = (-(-37 // reduce), -(-53 // reduce))
    reduced = decode_image(data, reduce=reduce)
    assert reduced.shape == (*expected_hw, 3)
    direct = cv2.imdecode(
        np.frombuffer(data, np.uint8), getattr(cv2, f"IMREAD_REDUCED_COLOR_{reduce}")
    )
    np.testing.assert_array_equal(reduced, direct)
    gray = decode_image(encode_image(pixels[..., 0], "jpeg"), reduce=reduce, mode="unchanged")
    assert gray.shape == (*expected_hw, 1)


def test_reduce_changes_pixel_values_versus_a_full_decode():
    data = encode_image(ASTRONAUT_BGR, "jpeg")
    full = decode_image(data)
    resized = cv2.resize(full, (256, 256), interpolation=cv2.INTER_AREA)
    reduced = decode_image(data, reduce=2)
    assert reduced.shape == resized.shape
    assert not np.array_equal(reduced, resized)
    assert np.abs(reduced.astype(int) - resized).mean() < 3


@pytest.mark.parametrize("fmt", ["png", "webp"])
@pytest.mark.parametrize("mode", ["color", "unchanged"])
def test_reduce_other_formats_is_decode_then_area_resize(fmt, mode):
    pixels = np.dstack([ASTRONAUT_BGR[:37, :53], random_image(37, 53, 1)])
    data = encode_image(pixels, fmt)
    full = decode_image(data, mode=mode)
    reduced = decode_image(data, reduce=4, mode=mode)
    expected = cv2.resize(full, (14, 10), interpolation=cv2.INTER_AREA).reshape(10, 14, -1)
    np.testing.assert_array_equal(reduced, expected)


# --- decode errors -----------------------------------------------------------------------------


def _jpeg() -> bytes:
    return encode_image(ASTRONAUT_BGR[:64, :64], "jpeg")


@pytest.mark.parametrize(
    "keep",
    [
        lambda jpeg: len(jpeg) - 2,  # only the end-of-image marker is missing
        lambda jpeg: len(jpeg) - 100,  # cut mid-scan
        lambda jpeg: jpeg.find(b"\xff\xda") + 20,  # headers and the first few scan bytes
    ],
)
def test_truncated_jpeg(keep):
    data = _jpeg()
    with pytest.raises(ImageDecodeError,
                       match=r"^undecodable: truncated JPEG \(no end-of-image marker\)$") as info:
        decode_image(data[: keep(data)])
    assert info.value.reason == "undecodable"


def test_truncated_jpeg_with_an_eoi_inside_an_app_segment():
    # An EXIF thumbnail ends with its own FF D9 before the main frame header: not an EOI.
    data = _jpeg()
    thumbnail = b"Exif\x00\x00\xff\xd8\x00\x00\xff\xd9"
    with_app1 = (
        data[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(thumbnail)) + thumbnail + data[2:]
    )
    assert decode_image(with_app1).shape == (64, 64, 3)
    with pytest.raises(ImageDecodeError, match=r"truncated JPEG"):
        decode_image(with_app1[:-300])


def test_jpeg_with_bytes_after_eoi_decodes():
    assert decode_image(_jpeg() + bytes(64)).shape == (64, 64, 3)


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_truncated_png_and_webp(fmt):
    data = encode_image(ASTRONAUT_BGR[:64, :64], fmt)
    with pytest.raises(ImageDecodeError, match=rf"undecodable: corrupt or truncated {fmt.upper()}"):
        decode_image(data[: len(data) // 2])


def test_corrupt_png_payload_after_a_valid_header():
    garbage = bytes(RNG.integers(0, 256, 500, dtype=np.uint8))
    assert reason_of(png_by_hand(8, 8)[:33] + garbage) == "undecodable"


def _with_scan(jpeg: bytes, scan: bytes) -> bytes:
    start = jpeg.find(b"\xff\xda") + 14  # past a three-component scan header
    return jpeg[:start] + scan + b"\xff\xd9"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        # noise without FF bytes (no markers) where the scan was: libjpeg warns, OpenCV returns
        # grey or guessed pixels of the right size
        (
            lambda jpeg: _with_scan(jpeg, bytes(RNG.integers(0, 255, 500, dtype=np.uint8))),
            r"libjpeg-turbo: Corrupt JPEG data",
        ),
        # the scan cut short, but an end-of-image marker appended
        (lambda jpeg: jpeg[: len(jpeg) // 2] + b"\xff\xd9", r"premature end of data segment"),
        # the first 300 scan bytes replaced by noise, the rest intact
        (
            lambda jpeg: _with_scan(
                jpeg, bytes(RNG.integers(0, 255, 300, dtype=np.uint8)) + jpeg[-600:]
            ),
            r"libjpeg-turbo: Corrupt JPEG data",
        ),
    ],
)
def test_corrupt_jpeg_scan_data_is_undecodable(make, match):
    data = make(_jpeg())
    assert data.endswith(b"\xff\xd9")
    # What OpenCV does with it: a full-size image of concealed pixels.
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (64, 64, 3)
    for kwargs in ({}, {"reduce": 8}, {"mode": "unchanged"}, {"reuse_buffer": True}):
        with pytest.raises(ImageDecodeError, match=match) as info:
            decode_image(data, **kwargs)
        assert info.value.reason == "undecodable"


def _claiming(data: bytes, width: int, height: int) -> bytes:
    sof = data.find(b"\xff\xc0")
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


def test_small_jpeg_claiming_a_huge_size_is_undecodable(monkeypatch):
    small = encode_image(ASTRONAUT_BGR[:24, :32], "jpeg")
    huge = _claiming(small, 13_000, 13_000)
    assert len(huge) < 2048 and 13_000**2 < DEFAULT_MAX_PIXELS
    assert read_image_size(huge) == (13_000, 13_000)

    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded a file too short for its declared size")

    # Refused from the byte count, before any pixel memory is allocated.
    monkeypatch.setattr(cropcore.codec.simplejpeg, "decode_jpeg", must_not_decode)
    with pytest.raises(
        ImageDecodeError,
        match=r"undecodable: JPEG too short for its declared size: 13000 x 13000 needs at least "
        r"82622 bytes after the frame header \(one bit per 8x8 block\), got \d+",
    ):
        decode_image(huge)
    monkeypatch.undo()
    # A claim the byte count allows (4:2:0 chroma: 40 x 30 blocks, 150 bytes) is caught by the
    # decoder running out of data.
    with pytest.raises(ImageDecodeError, match=r"libjpeg-turbo: .*premature end of data"):
        decode_image(_claiming(small, 640, 480))


def test_convention_jpeg_min_blocks_follow_the_sampling_factors():
    # One bit per block of the least-sampled component: 4:2:0 chroma of a 13000 x 13000 frame
    # is ceil(6500 / 8) ** 2 blocks; 4:4:4 and grey count every 8 x 8 block of the image.
    pixels = ASTRONAUT_BGR[:16, :16]
    for sampling, blocks in [
        (cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, 813 * 813),
        (cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422, 813 * 1625),
        (cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, 1625 * 1625),
        # 4:4:0: luma is sampled twice vertically; chroma has every column, half the rows
        (cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440, 1625 * 813),
    ]:
        data = _claiming(cv2_bytes(pixels, ".jpg", [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling]),
                         13_000, 13_000)
        with pytest.raises(ImageDecodeError, match=rf"at least {-(-blocks // 8)} bytes"):
            decode_image(data)
    gray = _claiming(cv2_bytes(pixels[..., 0], ".jpg"), 13_000, 13_000)
    with pytest.raises(ImageDecodeError, match=rf"at least {-(-1625 * 1625 // 8)} bytes"):
        decode_image(gray)


def test_jpeg_metadata_warnings_are_not_refused():
    # An unknown JFIF major version is a libjpeg warning about metadata only: decoded as
    # OpenCV decodes it.
    data = _jpeg()
    jfif = data.find(b"JFIF\x00")
    assert jfif > 0
    odd = data[: jfif + 5] + b"\x07" + data[jfif + 6 :]
    expected = cv2.imdecode(np.frombuffer(odd, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decode_image(odd), expected)


def test_corrupt_corpus_jpeg_decodes_as_opencv_or_fails_with_the_corpus_reason():
    cases = [c for c in image_cases() if c.data and c.data[:2] == b"\xff\xd8"]
    assert {c.image_id for c in cases} >= {
        "truncated-jpeg", "cmyk-jpeg", "corrupt-jpeg-scan", "jpeg-claims-13000"
    }
    for case in cases:
        if case.reason is None:
            expected = cv2.imdecode(np.frombuffer(case.data, np.uint8), cv2.IMREAD_COLOR)
            np.testing.assert_array_equal(decode_image(case.data), expected, case.image_id)
        else:
            assert reason_of(case.data) == case.reason, case.image_id


def test_corrupt_cmyk_jpeg_is_undecodable():
    cmyk = pil_bytes(PIL_Image.fromarray(ASTRONAUT_BGR[:64, :64, ::-1]).convert("CMYK"), "JPEG")
    assert decode_image(cmyk).shape == (64, 64, 3)
    start = cmyk.find(b"\xff\xda") + 2 + int.from_bytes(cmyk[cmyk.find(b"\xff\xda") + 2 :][:2])
    bad = cmyk[:start] + bytes(RNG.integers(0, 255, 400, dtype=np.uint8)) + b"\xff\xd9"
    with pytest.raises(ImageDecodeError, match=r"undecodable: libjpeg-turbo: Corrupt JPEG data"):
        decode_image(bad)


def _patch_sof(data: bytes, offset: int, value: int) -> bytes:
    sof = data.find(b"\xff\xc0")
    return data[: sof + offset] + bytes([value]) + data[sof + offset + 1 :]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: _patch_sof(_jpeg(), 1, 0xC3), r"JPEG process SOF3 \(lossless or hierarchical\)"),
        (lambda: _patch_sof(_jpeg(), 4, 12), r"12-bit JPEG"),
        (lambda: _patch_sof(_jpeg(), 9, 2), r"JPEG with 2 components"),
        (lambda: cv2_bytes(random_image(4, 4), ".bmp"), r"BMP image; expected JPEG, PNG or WebP"),
        (lambda: cv2_bytes(random_image(4, 4), ".tiff"), r"TIFF image; expected JPEG, PNG or WebP"),
        (lambda: pil_bytes(PIL_Image.fromarray(random_image(4, 4)), "GIF"),
         r"GIF image; expected JPEG, PNG or WebP"),
        (
            lambda: pil_bytes(
                PIL_Image.fromarray(random_image(4, 4)),
                "WEBP",
                save_all=True,
                append_images=[PIL_Image.fromarray(random_image(4, 4))],
            ),
            r"animated WebP",
        ),
    ],
)
def test_unsupported_images(make, match):
    with pytest.raises(ImageDecodeError, match=rf"^unsupported: {match}$") as info:
        decode_image(make())
    assert info.value.reason == "unsupported"


def test_decoder_output_is_checked_against_the_header(monkeypatch):
    data = cv2_bytes(random_image(10, 20), ".png")
    real_imdecode = cv2.imdecode

    monkeypatch.setattr(
        cropcore.codec.cv2, "imdecode", lambda buf, flags: np.zeros((5, 5, 3), np.uint8)
    )
    with pytest.raises(
        ImageDecodeError, match=r"decoded size 5 x 5 differs from the header's 20 x 10"
    ):
        decode_image(data)
    monkeypatch.setattr(
        cropcore.codec.cv2, "imdecode", lambda buf, flags: np.zeros((5, 7, 3), np.uint8)
    )
    with pytest.raises(
        ImageDecodeError, match=r"decoded size 7 x 5 differs from the header's 20 x 10"
    ):
        decode_image(data)
    monkeypatch.setattr(
        cropcore.codec.cv2, "imdecode", lambda buf, flags: np.zeros((10, 20), np.float32)
    )
    with pytest.raises(ImageDecodeError, match=r"unsupported: decoded sample type float32"):
        decode_image(data)
    monkeypatch.setattr(
        cropcore.codec.cv2, "imdecode", lambda buf, flags: np.zeros((10, 20, 2), np.uint8)
    )
    with pytest.raises(ImageDecodeError, match=r"unsupported: decoded 2 channels in color mode"):
        decode_image(data)
    with pytest.raises(ImageDecodeError, match=r"unsupported: decoded 2 channels"):
        decode_image(data, mode="unchanged")

    def raise_cv2_error(buf, flags):
        raise cv2.error("boom")

    monkeypatch.setattr(cropcore.codec.cv2, "imdecode", raise_cv2_error)
    with pytest.raises(ImageDecodeError, match=r"undecodable: OpenCV failed: boom"):
        decode_image(data)
    monkeypatch.setattr(cropcore.codec.cv2, "imdecode", real_imdecode)
    assert decode_image(data).shape == (10, 20, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_pixels": 0}, r"max_pixels must be a positive int, got 0"),
        ({"max_pixels": 1.5}, r"max_pixels must be a positive int, got 1.5"),
        ({"max_pixels": True}, r"max_pixels must be a positive int, got True"),
        ({"reduce": 3}, r"reduce must be one of \(1, 2, 4, 8\), got 3"),
        ({"reduce": 2.0}, r"reduce must be one of \(1, 2, 4, 8\), got 2.0"),
        ({"reduce": 0}, r"reduce must be one of \(1, 2, 4, 8\), got 0"),
        ({"mode": "grayscale"}, r"mode must be one of \('color', 'unchanged'\), got 'grayscale'"),
    ],
)
def test_decode_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        decode_image(_jpeg(), **kwargs)


# --- encode ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encode_is_deterministic_and_uses_documented_defaults(fmt):
    pixels = ASTRONAUT_BGR[:96, :128]
    first = encode_image(pixels, fmt)
    assert encode_image(pixels.copy(), fmt) == first
    read_only = pixels.copy()
    read_only.flags.writeable = False
    assert encode_image(read_only, fmt) == first
    assert encode_image(np.ascontiguousarray(ASTRONAUT_BGR[:192:2, :256:2]), fmt) == encode_image(
        ASTRONAUT_BGR[:192:2, :256:2], fmt
    )  # strided views are accepted
    if fmt == "jpeg":
        assert first == encode_image(pixels, fmt, quality=95)
        assert len(encode_image(pixels, fmt, quality=50)) < len(first)
    elif fmt == "webp":
        assert first == encode_image(pixels, fmt, quality=90)
        assert first[12:16] == b"VP8 "  # lossy
    else:
        assert first[:8] == b"\x89PNG\r\n\x1a\n"
        np.testing.assert_array_equal(decode_image(first), pixels)


@pytest.mark.parametrize(
    ("image", "fmt", "quality", "match"),
    [
        (
            np.zeros((4, 4, 3), np.uint8),
            "jpg",
            None,
            r"format must be one of \('png', 'jpeg', 'webp'\), got 'jpg'",
        ),
        (np.zeros((4, 4, 3), np.uint8), "PNG", None, r"format must be one of .* got 'PNG'"),
        (
            np.zeros((4, 4, 3), np.uint8),
            "png",
            90,
            r"quality applies to jpeg and webp only, got quality=90",
        ),
        (
            np.zeros((4, 4, 3), np.uint8),
            "jpeg",
            0,
            r"quality must be an int in 1..100 for jpeg, got 0",
        ),
        (
            np.zeros((4, 4, 3), np.uint8),
            "jpeg",
            101,
            r"quality must be an int in 1..100 for jpeg, got 101",
        ),
        (
            np.zeros((4, 4, 3), np.uint8),
            "webp",
            90.0,
            r"quality must be an int in 1..100 for webp, got 90.0",
        ),
        (
            np.zeros((4, 4, 3), np.uint8),
            "webp",
            True,
            r"quality must be an int in 1..100 for webp, got True",
        ),
        (np.zeros((4, 4, 3), np.uint16), "png", None, r"image must be uint8, got dtype uint16"),
        (np.zeros((4, 4, 3), np.float32), "png", None, r"image must be uint8, got dtype float32"),
        (np.zeros((4, 4, 2), np.uint8), "png", None, r"C in 1, 3, 4, got \(4, 4, 2\)"),
        (np.zeros((4, 4, 3, 1), np.uint8), "png", None, r"C in 1, 3, 4, got \(4, 4, 3, 1\)"),
        (np.zeros(16, np.uint8), "png", None, r"C in 1, 3, 4, got \(16,\)"),
        (
            np.zeros((0, 4, 3), np.uint8),
            "png",
            None,
            r"cannot encode an empty image, got shape \(0, 4, 3\)",
        ),
        (
            np.zeros((4, 0), np.uint8),
            "jpeg",
            None,
            r"cannot encode an empty image, got shape \(4, 0\)",
        ),
        (np.zeros((4, 4, 4), np.uint8), "jpeg", None, r"JPEG has no alpha channel: drop it first"),
    ],
)
def test_encode_errors(image, fmt, quality, match):
    with pytest.raises(ValueError, match=match):
        encode_image(image, fmt, quality)


def test_encode_failure_inside_opencv_is_a_value_error(monkeypatch):
    monkeypatch.setattr(cropcore.codec.cv2, "imencode", lambda ext, image, params: (False, None))
    with pytest.raises(ValueError, match=r"OpenCV could not encode a \(4, 4, 3\) image as webp"):
        encode_image(np.zeros((4, 4, 3), np.uint8), "webp")


# --- libjpeg-turbo decode: OpenCV's pixels ------------------------------------------------------


def _bench_photographs() -> list[np.ndarray]:
    """scikit-image's bundled photographs (BGR), cropped to odd sizes so edge blocks occur."""
    photos = [getattr(skimage.data, name)() for name in
              ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
               "hubble_deep_field", "retina", "colorwheel")]
    return [np.ascontiguousarray(p[: p.shape[0] - 3, : p.shape[1] - 5, ::-1]) for p in photos]


_JPEG_SETTINGS = [
    # (name, OpenCV encoder parameters)
    ("q50 4:2:0", [cv2.IMWRITE_JPEG_QUALITY, 50]),
    ("q90 4:2:0", [cv2.IMWRITE_JPEG_QUALITY, 90]),
    ("q95 4:2:2", [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                   cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]),
    ("q100 4:4:4", [cv2.IMWRITE_JPEG_QUALITY, 100, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                    cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]),
    ("q75 4:4:0", [cv2.IMWRITE_JPEG_QUALITY, 75, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                   cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440]),
    ("q90 progressive", [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    ("q85 optimized restarts", [cv2.IMWRITE_JPEG_QUALITY, 85, cv2.IMWRITE_JPEG_OPTIMIZE, 1,
                                cv2.IMWRITE_JPEG_RST_INTERVAL, 3]),
]


def _opencv_decode(data: bytes, reduce: int, mode: str) -> np.ndarray:
    sof = data.find(b"\xff\xc0")
    grey = sof > 0 and data[sof + 9] == 1
    if reduce == 1:
        flags = (cv2.IMREAD_UNCHANGED if mode == "unchanged"
                 else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    else:
        kind = "GRAYSCALE" if mode == "unchanged" and grey else "COLOR"
        flags = getattr(cv2, f"IMREAD_REDUCED_{kind}_{reduce}") | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    return image.reshape(*image.shape[:2], -1)


def test_convention_jpeg_pixels_are_opencvs_libjpeg_turbo_drift_fails():
    """The drift guard: simplejpeg and OpenCV bundle their own libjpeg-turbo builds. Any pixel
    difference on these JPEGs (every photograph at every setting, grey, Pillow's encoder, each
    reduce factor) fails, whichever library changed."""
    build = re.findall(r"JPEG:.*", cv2.getBuildInformation())
    jpegs = {}
    for k, photo in enumerate(_bench_photographs()):
        for name, params in _JPEG_SETTINGS:
            jpegs[f"photo {k} {name}"] = cv2_bytes(photo, ".jpg", params)
        jpegs[f"photo {k} grey"] = cv2_bytes(photo[..., 1], ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90])
        jpegs[f"photo {k} Pillow"] = pil_bytes(PIL_Image.fromarray(photo[..., ::-1]), "JPEG",
                                               quality=88)
    for name, data in jpegs.items():
        for reduce in (1, 2, 4, 8):
            for mode in ("color", "unchanged"):
                if reduce > 1 and mode == "unchanged" and "grey" not in name:
                    continue  # the same decode as colour
                ours = decode_image(data, reduce=reduce, mode=mode)
                theirs = _opencv_decode(data, reduce, mode)
                assert ours.shape == theirs.shape, (name, reduce, mode)
                difference = int(np.abs(ours.astype(int) - theirs).max())
                assert difference == 0, (f"{name} reduce={reduce} mode={mode}: pixels differ from "
                                         f"cv2.imdecode by up to {difference}; OpenCV {build}, "
                                         f"simplejpeg {cropcore.codec.simplejpeg.__version__}")


@pytest.mark.parametrize("reuse_buffer", [False, True])
def test_jpeg_decode_returns_a_c_contiguous_writable_array(reuse_buffer):
    image = decode_image(_jpeg(), reuse_buffer=reuse_buffer)
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    assert image.flags.c_contiguous and image.flags.writeable


def test_decode_without_reuse_buffer_never_shares_memory():
    data = _jpeg()
    first, second = decode_image(data), decode_image(data)
    reused = decode_image(data, reuse_buffer=True)
    third = decode_image(data)
    for a, b in [(first, second), (first, reused), (third, reused), (first, third)]:
        assert not np.shares_memory(a, b)


def test_reuse_buffer_is_overwritten_by_the_next_reusing_decode_in_the_thread():
    one = encode_image(ASTRONAUT_BGR[:64, :64], "jpeg")
    two = encode_image(ASTRONAUT_BGR[100:164, 100:164], "jpeg")
    first = decode_image(one, reuse_buffer=True)
    crop = first[10:20, 10:20]
    expected_crop = crop.copy()
    np.testing.assert_array_equal(first, decode_image(one))
    second = decode_image(two, reuse_buffer=True)
    np.testing.assert_array_equal(second, decode_image(two))
    # The documented contract: the earlier result and its crops now hold the new pixels.
    assert np.shares_memory(first, second)
    np.testing.assert_array_equal(crop, second[10:20, 10:20])
    assert not np.array_equal(crop, expected_crop)


def test_reuse_buffer_is_per_thread():
    data = [encode_image(ASTRONAUT_BGR[k * 50 : k * 50 + 64, :64], "jpeg") for k in range(2)]
    results = {}

    def decode(k):
        results[k] = decode_image(data[k], reuse_buffer=True)

    threads = [threading.Thread(target=decode, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    mine = decode_image(data[0], reuse_buffer=True)
    assert not np.shares_memory(results[0], results[1])
    assert not np.shares_memory(mine, results[0]) and not np.shares_memory(mine, results[1])
    for k in range(2):
        np.testing.assert_array_equal(results[k], decode_image(data[k]))


def test_reuse_buffer_only_for_libjpeg_turbo_decodes_and_small_images(monkeypatch):
    png = encode_image(ASTRONAUT_BGR[:64, :64], "png")
    assert not np.shares_memory(decode_image(png, reuse_buffer=True),
                                decode_image(png, reuse_buffer=True))
    # An image over the kept size gets a buffer of its own, which is not kept.
    monkeypatch.setattr(cropcore.codec, "_thread_state", threading.local())
    monkeypatch.setattr(cropcore.codec, "_KEPT_BUFFER_BYTES", 64 * 64 * 3 - 1)
    data = _jpeg()
    assert not np.shares_memory(decode_image(data, reuse_buffer=True),
                                decode_image(data, reuse_buffer=True))


@pytest.mark.parametrize("value", [1, None, "yes"])
def test_reuse_buffer_must_be_a_bool(value):
    with pytest.raises(ValueError, match=rf"reuse_buffer must be True or False, got {value!r}"):
        decode_image(_jpeg(), reuse_buffer=value)


# --- fast PNG and WebP encode -------------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 4])
def test_png_is_lossless_and_ordinary(channels):
    base = ASTRONAUT_BGR[37:300, 11:290]
    pixels = base if channels == 3 else np.dstack([base, random_image(263, 279, 1)])
    for image in (pixels, pixels[::2, ::3], pixels[5:6, :1]):  # strided views, a single pixel
        data = encode_image(image, "png")
        np.testing.assert_array_equal(decode_image(data, mode="unchanged"), image)
        # Pillow reads it too, as 8-bit RGB(A); every chunk is a standard one or ancillary.
        pil = PIL_Image.open(io.BytesIO(data))
        assert pil.mode == ("RGB" if channels == 3 else "RGBA")
        np.testing.assert_array_equal(np.asarray(pil)[..., [2, 1, 0, 3][:channels]], image)
        offset, kinds = 8, []
        while offset < len(data):
            length = int.from_bytes(data[offset : offset + 4], "big")
            kind = data[offset + 4 : offset + 8]
            payload = data[offset + 8 : offset + 8 + length]
            crc = int.from_bytes(data[offset + 8 + length : offset + 12 + length], "big")
            assert zlib.crc32(kind + payload) == crc
            kinds.append(kind)
            offset += 12 + length
        assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
        assert all(k in (b"IHDR", b"IDAT", b"IEND") or k[:1].islower() for k in kinds)


def test_png_of_photograph_crops_is_at_most_15_percent_larger_than_zlib_level_1():
    rng = np.random.default_rng(5)
    ours = theirs = 0
    for photo in _bench_photographs():
        for _ in range(3):
            y, x = rng.integers(0, photo.shape[0] - 200), rng.integers(0, photo.shape[1] - 200)
            crop = photo[y : y + 200, x : x + 200]
            ours += len(encode_image(crop, "png"))
            theirs += len(cv2_bytes(crop, ".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]))
    assert ours <= 1.15 * theirs


def test_grey_png_is_opencv_zlib_level_1():
    gray = ASTRONAUT_BGR[:50, :70, 1]
    expected = cv2_bytes(gray, ".png", [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert encode_image(gray, "png") == expected == encode_image(gray[..., None], "png")


def test_png_falls_back_to_opencv_when_fpng_declines(monkeypatch):
    pixels = ASTRONAUT_BGR[:30, :40]
    monkeypatch.setattr(cropcore.codec.fpng_ext, "encode_image_to_memory", lambda *args: b"")
    assert encode_image(pixels, "png") == cv2_bytes(pixels, ".png",
                                                    [cv2.IMWRITE_PNG_COMPRESSION, 1])


@pytest.mark.parametrize("channels", [None, 3, 4])
def test_fast_webp_method(channels):
    base = ASTRONAUT_BGR[100:196, 200:328]
    pixels = {None: base[..., 1], 3: base, 4: np.dstack([base, random_image(96, 128, 1)])}[
        channels]
    fast = encode_image(pixels, "webp", webp_method=0)
    assert fast == encode_image(pixels, "webp", 90, webp_method=0)  # deterministic
    assert fast != encode_image(pixels, "webp")
    assert fast[:4] == b"RIFF" and fast[8:12] == b"WEBP"
    decoded = decode_image(fast, mode="unchanged")
    expected = pixels.reshape(96, 128, -1)
    if channels is None:
        expected = np.repeat(expected, 3, axis=2)  # WebP stores grayscale as colour
    assert decoded.shape == expected.shape
    assert np.abs(decoded.astype(int) - expected).mean() <= 6


@pytest.mark.parametrize(
    ("fmt", "method", "match"),
    [
        ("png", 0, r"webp_method applies to webp only, got webp_method=0 for png"),
        ("jpeg", 3, r"webp_method applies to webp only, got webp_method=3 for jpeg"),
        ("webp", 7, r"webp_method must be an int in 0..6, got 7"),
        ("webp", -1, r"webp_method must be an int in 0..6, got -1"),
        ("webp", 1.0, r"webp_method must be an int in 0..6, got 1.0"),
        ("webp", True, r"webp_method must be an int in 0..6, got True"),
    ],
)
def test_webp_method_errors(fmt, method, match):
    with pytest.raises(ValueError, match=match):
        encode_image(np.zeros((4, 4, 3), np.uint8), fmt, webp_method=method)


def test_an_unknown_format_error_never_echoes_content_bytes():
    secret = b"root:x:0:0:root:/root:/bin/bash\n"
    expected = r"unknown format \(32 bytes, not JPEG, PNG or WebP\)"
    with pytest.raises(ImageDecodeError, match=expected) as error:
        decode_image(secret)
    assert "root" not in str(error.value) and secret[:8].hex() not in str(error.value)


# --- header and decode edges (boundaries and layouts the tests above do not reach) -------------


def _riff(chunk: bytes, payload: bytes) -> bytes:
    return b"RIFF\x00\x00\x00\x00WEBP" + chunk + payload


@pytest.mark.parametrize(
    ("data", "size_wh"),
    [
        # the 24 bytes up to IHDR's height are enough; sizes past 2**24 use all four bytes
        (png_by_hand(2**31 - 1, 2**24 + 1)[:24], (2**31 - 1, 2**24 + 1)),
        (png_by_hand(2**24 + 3, 2**31 - 1)[:24], (2**24 + 3, 2**31 - 1)),
        # a standalone marker (TEM) and an empty APP segment (length 2) before the frame header
        (lambda: _jpeg()[:2] + b"\xff\x01" + b"\xff\xe5\x00\x02" + _jpeg()[2:], (64, 64)),
    ],
)
def test_read_image_size_edges(data, size_wh):
    data = data() if callable(data) else data
    assert read_image_size(data) == size_wh
    if len(data) > 24:
        assert decode_image(data).shape == (size_wh[1], size_wh[0], 3)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (png_by_hand(2**31, 1), r"PNG IHDR declares an invalid size 2147483648 x 1$"),
        (png_by_hand(1, 2**31), r"PNG IHDR declares an invalid size 1 x 2147483648$"),
        (png_by_hand(4, 0), r"PNG IHDR declares an invalid size 4 x 0$"),
        # VP8 width 0, height 5
        (_riff(b"VP8 ", bytes(4) + bytes(3) + b"\x9d\x01\x2a" + b"\x00\x00\x05\x00"),
         r"WebP declares an invalid size 0 x 5$"),
        # a RIFF file that is not WebP (a WAVE header)
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(30), r"unknown format \(46 bytes"),
        # an end-of-image marker before any frame header
        (b"\xff\xd8\xff\xd9" + bytes(30), r"JPEG without a frame header \(SOF\) before its scan$"),
        (b"\xff\xd8\xff\xe0\x00\x02\xff\xd9", r"JPEG without a frame header"),
    ],
)
def test_read_image_size_refuses_edge_headers(data, match):
    with pytest.raises(ImageDecodeError, match=rf"^undecodable: {match}"):
        read_image_size(data)


def test_lossless_and_extended_webp_decode():
    pixels = random_image(37, 53)
    lossless = cv2_bytes(pixels, ".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])
    assert lossless[12:16] == b"VP8L"
    np.testing.assert_array_equal(decode_image(lossless), pixels)
    # VP8X's reserved flag bits are ignored, as the format says readers must; only bit 1
    # (animation) is read
    rgba = np.dstack([pixels, random_image(37, 53, 1)])
    extended = cv2_bytes(rgba, ".webp", [cv2.IMWRITE_WEBP_QUALITY, 90])
    assert extended[12:16] == b"VP8X" and extended[20] & 0x03 == 0
    reserved = extended[:20] + bytes([extended[20] | 0x01]) + extended[21:]
    np.testing.assert_array_equal(decode_image(reserved, mode="unchanged"),
                                  decode_image(extended, mode="unchanged"))


def test_bytes_like_views_of_other_shapes_and_formats_decode_the_same():
    data = _jpeg()
    expected = decode_image(data)
    signed = memoryview(data).cast("b")
    two_d = memoryview(np.frombuffer(data, np.uint8).reshape(1, -1))
    for view in (signed, two_d):
        assert read_image_size(view) == (64, 64)
        np.testing.assert_array_equal(decode_image(view), expected)


def test_smallest_max_pixels_and_jpeg_quality_are_accepted():
    assert decode_image(png_by_hand(1, 1, b"\x00\x01\x02\x03"), max_pixels=1).shape == (1, 1, 3)
    pixels = ASTRONAUT_BGR[:16, :16]
    assert encode_image(pixels, "jpeg", quality=1) == cv2_bytes(
        pixels, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 1])


def test_png_is_the_default_format_and_fpng_writes_colour():
    # fpng writes 3 and 4 channels (its own private chunk, fdEC, names it); OpenCV writes grey
    for channels in (3, 4):
        pixels = np.dstack([ASTRONAUT_BGR[:20, :30], random_image(20, 30, 1)])[..., :channels]
        data = encode_image(pixels)
        assert data == encode_image(pixels, "png") and data[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"fdEC" in data
        assert data != cv2_bytes(pixels, ".png", [cv2.IMWRITE_PNG_COMPRESSION, 1])


def test_jpeg_alpha_error_names_the_fix():
    with pytest.raises(ValueError, match=r"^JPEG has no alpha channel: drop it first "
                                         r"\(image\[\.\.\., :3\]\), got 4 channels$"):
        encode_image(np.zeros((4, 4, 4), np.uint8), "jpeg")


def test_fast_webp_quality_is_used():
    pixels = ASTRONAUT_BGR[100:196, 200:328]
    low = encode_image(pixels, "webp", 20, webp_method=0)
    high = encode_image(pixels, "webp", 95, webp_method=0)
    assert len(low) < len(high)


def test_cmyk_jpeg_reduced_is_opencvs_reduced_decode():
    cmyk = pil_bytes(PIL_Image.fromarray(ASTRONAUT_BGR[:61, :45, ::-1]).convert("CMYK"), "JPEG")
    for mode in ("color", "unchanged"):
        reduced = decode_image(cmyk, reduce=2, mode=mode)
        assert reduced.shape == (31, 23, 3)
        expected = cv2.imdecode(np.frombuffer(cmyk, np.uint8),
                                cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_IGNORE_ORIENTATION)
        np.testing.assert_array_equal(reduced, expected)


def test_a_cmyk_decode_leaves_the_threads_reused_buffer_alone():
    kept = decode_image(_jpeg(), reuse_buffer=True)
    before = kept.copy()
    cmyk = pil_bytes(PIL_Image.fromarray(ASTRONAUT_BGR[200:264, 200:264, ::-1]).convert("CMYK"),
                     "JPEG")
    decode_image(cmyk)  # without reuse_buffer: the thread's buffer is not touched
    np.testing.assert_array_equal(kept, before)


def test_reuse_buffer_is_kept_for_the_next_call(monkeypatch):
    # a fresh thread state: what earlier tests left in it must not decide this one
    monkeypatch.setattr(cropcore.codec, "_thread_state", threading.local())
    monkeypatch.setattr(cropcore.codec, "_KEPT_BUFFER_BYTES", 64 * 64 * 3)  # exactly kept
    data = _jpeg()
    assert np.shares_memory(decode_image(data, reuse_buffer=True),
                            decode_image(data, reuse_buffer=True))
    assert cropcore.codec._thread_state.decode_buffer.nbytes == 64 * 64 * 3  # bytes, no more


def test_reduce_two_of_a_png_is_an_area_resize():
    pixels = ASTRONAUT_BGR[:37, :53]
    reduced = decode_image(encode_image(pixels, "png"), reduce=2)
    np.testing.assert_array_equal(
        reduced, cv2.resize(pixels, (27, 19), interpolation=cv2.INTER_AREA))


def test_scan_byte_floor_is_exact_at_its_boundary():
    # A Huffman JPEG needs at least one bit per 8x8 block of its least-sampled component after
    # the frame header. A 16-row 4:2:0 frame has one chroma block per 16 columns: at exactly one
    # bit per block the decoder is asked (and runs out of data); one block more is refused from
    # the byte count, before decoding.
    small = encode_image(np.full((16, 16, 3), 90, np.uint8), "jpeg")  # a flat MCU: few bytes
    sof = small.find(b"\xff\xc0")
    scan = len(small) - (sof + 2 + int.from_bytes(small[sof + 2 : sof + 4], "big"))
    assert 16 * (8 * scan + 1) < 2**16
    with pytest.raises(ImageDecodeError, match=r"libjpeg-turbo: .*premature end of data"):
        decode_image(_claiming(small, 16 * 8 * scan, 16))
    with pytest.raises(ImageDecodeError, match=rf"needs at least {scan + 1} bytes .*got {scan}$"):
        decode_image(_claiming(small, 16 * (8 * scan + 1), 16))


def test_a_jpeg_ending_right_after_its_frame_header_is_refused_by_libjpeg():
    # an end-of-image marker right after the frame header (then padding): not truncated, but
    # no tables and no scan
    data = _jpeg()
    sof = data.find(b"\xff\xc0")
    cut = data[: sof + 2 + int.from_bytes(data[sof + 2 : sof + 4], "big")] + b"\xff\xd9\x00\x00"
    with pytest.raises(ImageDecodeError, match=r"^undecodable: libjpeg-turbo: "):
        decode_image(cut)


@pytest.mark.parametrize("sampling", [0x01, 0x10, 0x00])
def test_bogus_sampling_factors_are_refused_by_libjpeg(sampling):
    # a zero horizontal or vertical factor: no block count, the decoder refuses the frame
    data = _patch_sof(cv2_bytes(ASTRONAUT_BGR[:16, :16, 1], ".jpg"), 11, sampling)
    with pytest.raises(ImageDecodeError, match=r"^undecodable: libjpeg-turbo: "):
        decode_image(data)


# OpenCV's EXIF reader on malformed blocks: where it stops, what it reads as the byte order,
# which VP8X flags hide the EXIF; each case turns an image exactly when cv2.imdecode turns it.
_SIX = 0x0112, 3, 1


@pytest.mark.parametrize("cut", [1, 2, 18, 19, 20, 21])  # 18-21: in the entry's value and pad
def test_exif_orientation_entry_cut_short_is_read_as_far_as_its_value(cut):
    block = _tiff_block([_ifd_entry(*_SIX, _short(6))], tail=b"")[:cut]
    for data in (_jpeg_with_app1(block), _png_with_exif_chunk(block, False),
                 _webp_by_chunks([_riff_chunk(b"EXIF", block)])):
        assert_turned_as_opencv(data, 6 if cut >= 20 else 1)


@pytest.mark.parametrize(
    ("entry", "turned"),
    [
        (_ifd_entry(0x010F, 2, 100, struct.pack(">I", 4000)), False),  # Make: its text past the end
        (_ifd_entry(0x010F, 2, 3, b"ab\x00\x00"), True),  # Make, inline: fine
        (_ifd_entry(0x8298, 2, 5, struct.pack(">I", 16)), True),  # Copyright inside the block
        (_ifd_entry(0x011A, 5, 1, struct.pack(">I", 4000)), False),  # XResolution past the end
        (_ifd_entry(0x011B, 5, 1, struct.pack(">I", 64)), False),  # YResolution: a rational cut
        (_ifd_entry(0x013E, 5, 2, struct.pack(">I", 56)), False),  # WhitePoint: 2nd rational cut
        (_ifd_entry(0x013F, 5, 6, struct.pack(">I", 30)), False),  # 6 chromaticities: too long
        (_ifd_entry(0x013F, 5, 6, struct.pack(">I", 22)), True),  # ... the last one just fits
        (_ifd_entry(0x0211, 5, 3, struct.pack(">I", 8)), True),  # 3 YCbCr coefficients fit
        (_ifd_entry(0x0214, 5, 6, struct.pack(">I", 24)), False),  # 6 black/white points do not
        (_ifd_entry(0x9999, 5, 1, struct.pack(">I", 4000)), True),  # a tag OpenCV does not read
        (_ifd_entry(0x0128, 3, 1, _short(2)), True),  # ResolutionUnit: a SHORT in the entry
        # strings of more than 4 bytes are read at their offset: these end at 80, 70 and 66
        (_ifd_entry(0x010F, 2, 10, struct.pack(">I", 4000)), False),
        (_ifd_entry(0x8298, 2, 5, struct.pack(">I", 4000)), False),
        (_ifd_entry(0x0131, 2, 20, struct.pack(">I", 60)), False),
        (_ifd_entry(0x0132, 2, 10, struct.pack(">I", 60)), True),
        (_ifd_entry(0x0110, 2, 66, struct.pack(">I", 0)), True),
        (_ifd_entry(0x010E, 2, 4, struct.pack(">I", 4000)), True),  # 4 bytes: in the entry
    ],
)
def test_an_entry_opencv_cannot_read_before_the_orientation_hides_it(entry, turned):
    block = _tiff_block([entry, _ifd_entry(*_SIX, _short(6))], tail=b"\x00" * 36)
    assert len(block) == 70  # header 8, count 2, two entries 24, then 36 bytes
    for data in (_jpeg_with_app1(block), _png_with_exif_chunk(block, False),
                 _webp_by_chunks([_riff_chunk(b"EXIF", block)])):
        assert_turned_as_opencv(data, 6 if turned else 1)


def test_an_unreadable_entry_after_the_orientation_changes_nothing():
    block = _tiff_block([_ifd_entry(*_SIX, _short(8)),
                         _ifd_entry(0x011A, 5, 1, struct.pack(">I", 4000))])
    assert_turned_as_opencv(_jpeg_with_app1(block), 8)


@pytest.mark.parametrize("mark", [b"MI\x00*", b"IM\x00*", b"\x00\x00\x00*", b"AA\x00*"])
def test_exif_byte_order_other_than_ii_is_read_big_endian_except_by_libpng(mark):
    block = _tiff_block([_ifd_entry(*_SIX, _short(6))], mark=mark)
    assert_turned_as_opencv(_jpeg_with_app1(block), 6)
    assert_turned_as_opencv(_webp_by_chunks([_riff_chunk(b"EXIF", block)]), 6)
    assert_turned_as_opencv(_png_with_exif_chunk(block, False), 1)  # libpng drops the chunk


@pytest.mark.parametrize("flags", [0x09, 0x48, 0x88, 0xC8])
def test_webp_reserved_flag_bits_hide_the_exif_as_in_libwebp(flags):
    block = _tiff_block([_ifd_entry(*_SIX, _short(6))])
    assert_turned_as_opencv(_webp_by_chunks([_riff_chunk(b"EXIF", block)], flags=flags), 1)
    # the other defined flags (XMP, alpha, ICC) leave it
    for other in (0x0C, 0x18, 0x28):
        assert_turned_as_opencv(_webp_by_chunks([_riff_chunk(b"EXIF", block)], flags=other), 6)


def test_a_png_exif_chunk_is_read_to_its_length_not_into_its_crc():
    # The block ends one byte into the orientation's value; the CRC's first byte, right after
    # it, would complete a value of 6 if it were read. A first entry libpng and OpenCV ignore
    # (an unknown tag) is varied until the CRC starts with 6.
    import zlib

    for filler in range(100_000):
        entries = [_ifd_entry(0x9999, 4, 1, struct.pack(">I", filler)),
                   _ifd_entry(*_SIX, _short(6))]
        block = _tiff_block(entries, tail=b"")[:31]  # 8 + 2 + 12 + 9: b"\x00" of the value
        if zlib.crc32(b"eXIf" + block).to_bytes(4, "big")[0] == 6:
            break
    assert_turned_as_opencv(_png_with_exif_chunk(block, False), 1)
