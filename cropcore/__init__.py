"""cropcore: exact, vectorized crop kernels. NumPy arrays in, NumPy arrays out; no I/O.

The public contract is ``__all__``; ``tests/cropcore/test_api.py`` fails when a name disappears.
"""

from cropcore.codec import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    decode_image,
    encode_image,
    read_image_size,
)
from cropcore.color import parse_color
from cropcore.crops import Crop
from cropcore.detections import ORIENTED_BOX_COORDINATES, Detections
from cropcore.dynamic import dynamic_crop, remove_background
from cropcore.masks import POLYGON_STYLES, cut_rle, decode_rle, encode_rle, polygon_to_mask
from cropcore.resize import crop_and_resize
from cropcore.static import absolute_static_crop, relative_static_crop

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Crop",
    "Detections",
    "ImageDecodeError",
    "ORIENTED_BOX_COORDINATES",
    "POLYGON_STYLES",
    "absolute_static_crop",
    "crop_and_resize",
    "cut_rle",
    "decode_image",
    "decode_rle",
    "dynamic_crop",
    "encode_image",
    "encode_rle",
    "parse_color",
    "polygon_to_mask",
    "read_image_size",
    "relative_static_crop",
    "remove_background",
]
