"""codec: header-only sizes, the pixel guard, decode policy (channels, depth) and encode."""

import io
import struct
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
        (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x00\x10\x03", "undecodable", r"size 16 x 0"),
        (png_by_hand(4, 4)[:20], "undecodable", r"PNG without a complete IHDR chunk"),
        (png_by_hand(0, 4), "undecodable", r"PNG IHDR declares an invalid size 0 x 4"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "undecodable", r"WebP header truncated"),
        (b"RIFF\x00\x00\x00\x00WEBPABCD" + bytes(20), "undecodable", r"unknown first chunk"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(20), "undecodable", r"VP8 frame without"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8L" + bytes(20), "undecodable", r"VP8L stream without"),
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
    with pytest.raises(ImageDecodeError, match=match) as info:
        read_image_size(data)
    assert info.value.reason == reason
    # decode_image reads the same header and refuses the same way.
    with pytest.raises(ImageDecodeError, match=match):
        decode_image(data)


@pytest.mark.parametrize("data", ["text", None, 12, np.zeros(4, np.uint8)])
def test_data_must_be_bytes_like(data):
    with pytest.raises(TypeError, match=r"data must be bytes, bytearray or memoryview, got"):
        read_image_size(data)
    with pytest.raises(TypeError, match=r"data must be bytes, bytearray or memoryview, got"):
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


def test_exif_orientation_is_ignored():
    pil = PIL_Image.fromarray(random_image(20, 40))
    exif = pil.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = pil_bytes(pil, "JPEG", exif=exif.tobytes())
    assert read_image_size(data) == (40, 20)
    assert decode_image(data).shape == (20, 40, 3)
    assert decode_image(data, mode="unchanged").shape == (20, 40, 3)
    assert decode_image(data, reduce=2).shape == (10, 20, 3)


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
    with pytest.raises(ImageDecodeError, match=r"truncated JPEG") as info:
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


def test_corrupt_jpeg_scan_data_is_not_detected():
    # A known limit: libjpeg conceals corrupt entropy-coded data (it warns and keeps going), so
    # a structurally complete JPEG with garbage scans decodes to garbage pixels of the right size.
    jpeg = _jpeg()
    sos = jpeg.find(b"\xff\xda")
    garbage = bytes(RNG.integers(0, 255, 500, dtype=np.uint8))  # no FF byte: no markers
    assert decode_image(jpeg[: sos + 14] + garbage + b"\xff\xd9").shape == (64, 64, 3)


def _patch_sof(data: bytes, offset: int, value: int) -> bytes:
    sof = data.find(b"\xff\xc0")
    return data[: sof + offset] + bytes([value]) + data[sof + offset + 1 :]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: _patch_sof(_jpeg(), 1, 0xC3), r"JPEG process SOF3 \(lossless or hierarchical\)"),
        (lambda: _patch_sof(_jpeg(), 4, 12), r"12-bit JPEG"),
        (lambda: _patch_sof(_jpeg(), 9, 2), r"JPEG with 2 components"),
        (lambda: cv2_bytes(random_image(4, 4), ".bmp"), r"BMP image"),
        (lambda: cv2_bytes(random_image(4, 4), ".tiff"), r"TIFF image"),
        (lambda: pil_bytes(PIL_Image.fromarray(random_image(4, 4)), "GIF"), r"GIF image"),
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
    with pytest.raises(ImageDecodeError, match=match) as info:
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
        assert first == cv2_bytes(pixels, ".png", [cv2.IMWRITE_PNG_COMPRESSION, 1])


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
